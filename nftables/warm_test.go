package nftables

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// warmRefusals are desired rulesets that a cold Sync refuses with a
// *ValidationError; a warm Sync (one that trusts the ruleset it applied
// last) must refuse them the same way, before anything is sent.
func warmRefusals() []struct {
	name, reason string
	desired      func() *Ruleset
} {
	return []struct {
		name, reason string
		desired      func() *Ruleset
	}{
		{"duplicate chain", `duplicate chain "ep-a2"`, func() *Ruleset {
			rs := sampleRuleset()
			rs.Chains = append(rs.Chains, Chain{Name: "ep-a2", Rules: []Rule{R(Counter{})}})
			return rs
		}},
		{"duplicate set", `duplicate set "marks"`, func() *Ruleset {
			rs := sampleRuleset()
			rs.Sets = append(rs.Sets, Set{Name: "marks", Key: []Type{TypeMark}, Elements: []Element{E(Mark(2))}})
			return rs
		}},
		{"deleted set still used", `no set or map "marks"`, func() *Ruleset {
			rs := sampleRuleset()
			rs.Sets = slices.DeleteFunc(rs.Sets, func(s Set) bool { return s.Name == "marks" })
			return rs
		}},
		{"deleted chain still jumped to", `no chain "ep-a2"`, func() *Ruleset {
			rs := sampleRuleset()
			rs.Chains = slices.DeleteFunc(rs.Chains, func(c Chain) bool { return c.Name == "ep-a2" })
			return rs
		}},
		{"deleted chain still in a verdict map", `no chain "svc-b"`, func() *Ruleset {
			rs := sampleRuleset()
			rs.Chains = slices.DeleteFunc(rs.Chains, func(c Chain) bool { return c.Name == "svc-b" })
			return rs
		}},
	}
}

// testWarmSyncRefuses syncs the sample ruleset, then each bad ruleset:
// every one must be a *ValidationError (as on a cold Sync), leave the
// table as it was, and keep the state, so that syncing the sample again
// sends nothing.
func testWarmSyncRefuses(t *testing.T, in Interface, dump func() string) {
	ctx := context.Background()
	if _, err := in.Sync(ctx, sampleRuleset()); err != nil {
		t.Fatal(err)
	}
	before := dump()
	for _, tc := range warmRefusals() {
		_, err := NewFake(in.Table()).Sync(ctx, tc.desired())
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.reason) {
			t.Fatalf("%s: cold Sync = %v, want a ValidationError %q", tc.name, err, tc.reason)
		}
		_, err = in.Sync(ctx, tc.desired())
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: warm Sync = %v, want a ValidationError %q", tc.name, err, tc.reason)
		}
		if after := dump(); after != before {
			t.Fatalf("%s: a refused Sync changed the table:\n%s", tc.name, lineDiff(before, after))
		}
		if tx, err := in.Sync(ctx, sampleRuleset()); err != nil || !tx.Empty() {
			t.Fatalf("%s: Sync back to the applied ruleset: %v, sent\n%s", tc.name, err, tx.Render(in.Table()))
		}
	}
}

func TestWarmSyncRefusesLikeCold(t *testing.T) {
	f := NewFake(testTable)
	testWarmSyncRefuses(t, f, f.Dump)
}

func TestKernelWarmSyncRefusesLikeCold(t *testing.T) {
	_, h := kernelHost(t)
	e := dialIn(t, h, testTable)
	testWarmSyncRefuses(t, e, func() string { return normalizeListing(listTable(t, h, testTable)) })
}
