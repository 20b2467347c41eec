package nftables

import (
	"context"
	"strings"
	"testing"
)

// fibRuleset matches on the destination and on the source being a local
// address, each way round.
func fibRuleset() *Ruleset {
	return &Ruleset{Chains: []Chain{{
		Name: "ext",
		Rules: []Rule{
			R(FibLocal{}, Accept()),
			R(FibLocal{Neg: true}, Drop()),
			R(FibLocal{Source: true}, SetMark{Op: MarkOr, Value: 0x4000}),
			R(FibLocal{Source: true, Neg: true}, Return()),
		},
	}}}
}

// TestFibSource: `fib saddr type local` renders as nft writes it and
// survives the compile/decode round trip as itself, distinct from the
// daddr form.
func TestFibSource(t *testing.T) {
	rs := fibRuleset()
	want := []string{"fib daddr type local accept", "fib daddr type != local drop",
		"fib saddr type local meta mark set meta mark | 0x00004000", "fib saddr type != local return"}
	for i, r := range rs.Chains[0].Rules {
		if got := r.String(); got != want[i] {
			t.Errorf("rule %d renders %q, want %q", i, got, want[i])
		}
	}
	if err := Validate(testTable, rs); err != nil {
		t.Fatal(err)
	}
	c, err := Canonical(testTable, rs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range c.Chains[0].Rules {
		if got := r.String(); got != want[i] {
			t.Errorf("canonical rule %d is %q, want %q", i, got, want[i])
		}
	}
}

// TestKernelFibSource: the kernel holds what nft itself writes for `fib
// saddr type local`, and Read decodes it back.
func TestKernelFibSource(t *testing.T) {
	_, h := kernelHost(t)
	e := dialIn(t, h, testTable)
	ctx := context.Background()
	if _, err := e.Sync(ctx, fibRuleset()); err != nil {
		t.Fatal(err)
	}
	listing := listTable(t, h, testTable)
	for _, s := range []string{"fib saddr type local meta mark set", "fib saddr type != local return", "fib daddr type local accept"} {
		if !strings.Contains(listing, s) {
			t.Errorf("nft lists no %q:\n%s", s, listing)
		}
	}
	got, err := e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(got, fibRuleset()); !d.Empty() {
		t.Errorf("read back differs:\n%s", d.Render(testTable))
	}
}
