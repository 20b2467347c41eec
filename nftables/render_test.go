package nftables

import (
	"testing"
)

func TestSampleIsValid(t *testing.T) {
	if err := Validate(testTable, sampleRuleset()); err != nil {
		t.Fatal(err)
	}
}

func TestRenderGolden(t *testing.T) {
	golden(t, "sample.nft", Render(testTable, sampleRuleset()))
}

func TestRenderFullTransactionGolden(t *testing.T) {
	golden(t, "sample-full.nft", Full(sampleRuleset()).Render(testTable))
}

func TestRenderIsDeterministic(t *testing.T) {
	rs := sampleRuleset()
	// Reverse the order of sets, chains and elements: the render must not
	// change.
	for i, j := 0, len(rs.Sets)-1; i < j; i, j = i+1, j-1 {
		rs.Sets[i], rs.Sets[j] = rs.Sets[j], rs.Sets[i]
	}
	for i, j := 0, len(rs.Chains)-1; i < j; i, j = i+1, j-1 {
		rs.Chains[i], rs.Chains[j] = rs.Chains[j], rs.Chains[i]
	}
	for k := range rs.Sets {
		es := rs.Sets[k].Elements
		for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
			es[i], es[j] = es[j], es[i]
		}
	}
	if got, want := Render(testTable, rs), Render(testTable, sampleRuleset()); got != want {
		t.Errorf("render depends on input order:\n%s\nvs\n%s", got, want)
	}
}
