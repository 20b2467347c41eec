package nftables

import "testing"

// TestColdPlanValidatesOnce: a cold Sync validates the desired ruleset
// once, not once in plan and again in Canonical. Validation allocates
// (paths, schemas), so plan's allocations must stay well below those of
// Validate + Canonical + Diff, which is what validating twice costs.
func TestColdPlanValidatesOnce(t *testing.T) {
	rs := scaleRuleset(20, 10)
	want, err := Canonical(scaleTable, rs)
	if err != nil {
		t.Fatal(err)
	}
	missing := func() (*Ruleset, error) { return nil, ErrNotFound }
	planAllocs := testing.AllocsPerRun(5, func() {
		if _, _, err := plan(scaleTable, nil, nil, rs, missing); err != nil {
			t.Fatal(err)
		}
	})
	validate := testing.AllocsPerRun(5, func() { _ = Validate(scaleTable, rs) })
	canonical := testing.AllocsPerRun(5, func() { _, _ = Canonical(scaleTable, rs) })
	diff := testing.AllocsPerRun(5, func() { _ = Diff(nil, want) })
	t.Logf("plan %.0f canonical %.0f diff %.0f validate %.0f", planAllocs, canonical, diff, validate)
	if limit := canonical + diff + validate/2; planAllocs > limit {
		t.Errorf("cold plan: %.0f allocations, more than Canonical (%.0f) + Diff (%.0f) + half a Validate (%.0f): it validates twice",
			planAllocs, canonical, diff, validate)
	}
}
