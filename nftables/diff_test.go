package nftables

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestDiffSameIsEmpty(t *testing.T) {
	if tx := Diff(sampleRuleset(), sampleRuleset()); !tx.Empty() {
		t.Errorf("Diff of equal rulesets:\n%s", tx.Render(testTable))
	}
}

func TestDiffGolden(t *testing.T) {
	golden(t, "sample-delta.nft", Diff(sampleRuleset(), changedSample()).Render(testTable))
}

func TestDiffFromNothingCreatesEverything(t *testing.T) {
	tx := Diff(nil, sampleRuleset())
	f := NewFake(testTable)
	if err := f.Apply(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Dump(), Render(testTable, sampleRuleset()); got != want {
		t.Errorf("Diff(nil, rs) does not create rs:\n%s", lineDiff(got, want))
	}
}

// TestDiffOneEndpoint is the change issue 6 times: one endpoint of one
// service. Only its elements move; no chain is touched.
func TestDiffOneEndpoint(t *testing.T) {
	old := scaleRuleset(100, 10)
	new := scaleRuleset(100, 10)
	s := new.Set(epMap(42, scaleShards))
	for i, e := range s.Elements {
		if e.Key[0].AsUint() == 42*10+3 {
			s.Elements[i] = MapElem(e.Key, Addr(a("192.0.2.200")), e.Data[1])
		}
	}
	got := Diff(old, new).Render(scaleTable)
	want := "add table inet lbkit-scale\n" +
		"delete element inet lbkit-scale endpoints4-042 { 423 }\n" +
		"add element inet lbkit-scale endpoints4-042 { 423 : 192.0.2.200 . 10002 }\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestDiffRecreatedSetRewritesItsUsers: a set whose definition changes
// must be deleted, which the kernel refuses while rules use it, so Diff
// flushes and rewrites those chains in the same batch.
func TestDiffRecreatedSetRewritesItsUsers(t *testing.T) {
	old := sampleRuleset()
	new := sampleRuleset()
	new.Set("marks").Comment = "changed"
	out := Diff(old, new).Render(testTable)
	for _, want := range []string{"flush chain inet lbkit-test filter-forward", "delete set inet lbkit-test marks", "add set inet lbkit-test marks"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "flush chain inet lbkit-test svc-a") {
		t.Errorf("rewrote a chain that does not use the set:\n%s", out)
	}
	f := NewFake(testTable)
	ctx := context.Background()
	if _, err := f.Sync(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Sync(ctx, new); err != nil {
		t.Fatalf("the fake refuses the delta (the kernel would too): %v", err)
	}
}

func TestDiffIgnoresDynamicElements(t *testing.T) {
	old := sampleRuleset()
	old.Set("aff-a1").Elements = []Element{E(Addr(a("192.0.2.77")))} // learnt by the kernel
	if tx := Diff(old, sampleRuleset()); !tx.Empty() {
		t.Errorf("Diff touched a dynamic set:\n%s", tx.Render(testTable))
	}
}

func TestCanonicalIsAFixedPoint(t *testing.T) {
	c1, err := Canonical(testTable, sampleRuleset())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Canonical(testTable, c1)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := Render(testTable, c1), Render(testTable, c2); a != b {
		t.Errorf("Canonical is not idempotent:\n%s", lineDiff(a, b))
	}
	golden(t, "sample-canonical.nft", Render(testTable, c1))
}

func TestCanonicalForms(t *testing.T) {
	tcpM := Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}
	for _, tc := range []struct {
		in   []Stmt
		want string
	}{
		{[]Stmt{tcpM, Match{Field: FieldTHDport, Values: []Value{Port(80)}}, Accept()}, "tcp dport 80 accept"},
		{[]Stmt{NFProtoMatch{Family: FamilyIPv4}, Match{Field: FieldIPSaddr, Values: []Value{Addr(a("192.0.2.1"))}}, Drop()}, "ip saddr 192.0.2.1 drop"},
		{[]Stmt{NFProtoMatch{Family: FamilyIPv4}, Counter{}}, "meta nfproto ipv4 counter"},
		{[]Stmt{Match{Field: FieldMark, Values: []Value{Mark(7)}}, Accept()}, "meta mark 0x00000007 accept"},
		{[]Stmt{tcpM, Match{Field: FieldIPDaddr, Values: []Value{Addr(a("192.0.2.1"))}}, DNAT{Addr: a("192.0.2.2"), Port: 81}},
			"meta l4proto tcp ip daddr 192.0.2.1 dnat ip to 192.0.2.2:81"},
		{[]Stmt{Match{Field: FieldIPDaddr, Values: []Value{Addr(a("192.0.2.1"))}}, Reject{Type: RejectICMP, Code: 3}}, "ip daddr 192.0.2.1 reject"},
		{[]Stmt{Reject{Type: RejectICMP, Code: 3}}, "reject with icmp port-unreachable"},
		{[]Stmt{Match{Field: FieldIPSaddr, Values: []Value{Prefix(p("10.1.2.3/8"))}}, Accept()}, "ip saddr 10.0.0.0/8 accept"},
		{[]Stmt{tcpM, VMap{Key: Concat{FieldIPSaddr, FieldTHSport}, Map: "v"}}, "ip saddr . tcp sport vmap @v"},
	} {
		rs := &Ruleset{
			Sets:   []Set{{Name: "v", Key: []Type{TypeIPv4Addr, TypeInetService}, Data: []Type{TypeVerdict}}},
			Chains: []Chain{{Name: "c", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting}, Rules: []Rule{R(tc.in...)}}},
		}
		if tc.want == "reject with icmp port-unreachable" || strings.HasPrefix(tc.want, "ip daddr 192.0.2.1 reject") {
			rs.Chains[0].Base = &BaseChain{Type: ChainTypeFilter, Hook: HookInput}
		}
		c, err := Canonical(testTable, rs)
		if err != nil {
			t.Fatalf("%s: %v", R(tc.in...), err)
		}
		if got := c.Chains[0].Rules[0].String(); got != tc.want {
			t.Errorf("Canonical(%s) = %s, want %s", R(tc.in...), got, tc.want)
		}
	}
}

// TestFakeKernelSemantics runs one table of batches against the Fake and
// against the kernel (in a lab namespace): both must answer each with the
// same errno, or both accept it, and a refused batch changes nothing.
func TestFakeKernelSemantics(t *testing.T) {
	t.Run("fake", func(t *testing.T) {
		f := NewFake(testTable)
		testKernelSemantics(t, f, f.Dump)
	})
	t.Run("kernel", func(t *testing.T) {
		_, h := kernelHost(t)
		e := dialIn(t, h, testTable)
		testKernelSemantics(t, e, func() string { return normalizeListing(listTable(t, h, testTable)) })
	})
}

func testKernelSemantics(t *testing.T, in Interface, dump func() string) {
	ctx := context.Background()
	if err := in.Apply(ctx, Full(sampleRuleset())); err != nil {
		t.Fatal(err)
	}
	before := dump()
	errno := func(err error) syscall.Errno {
		var ke *KernelError
		if !errors.As(err, &ke) {
			t.Fatalf("got %v, want a KernelError", err)
		}
		return ke.Errno
	}
	cases := []struct {
		name string
		tx   func(tx *Transaction)
		want syscall.Errno // 0: accepted
	}{
		{"delete chain with rules", func(tx *Transaction) { tx.DeleteChain("svc-a") }, syscall.EBUSY},
		{"delete chain still referenced", func(tx *Transaction) { tx.FlushChain("ep-a2"); tx.DeleteChain("ep-a2") }, syscall.EBUSY},
		{"delete set in use", func(tx *Transaction) { tx.DeleteSet("eps4") }, syscall.EBUSY},
		{"delete missing element", func(tx *Transaction) { tx.DeleteElements("eps4", E(Int(99))) }, syscall.ENOENT},
		{"element with other data", func(tx *Transaction) {
			tx.AddElements("eps4", MapElem([]Value{Int(0)}, Addr(a("192.0.2.99")), Port(1)))
		}, syscall.EEXIST},
		{"overlapping interval", func(tx *Transaction) { tx.AddElements("cidrs", E(Prefix(p("10.9.0.0/16")))) }, syscall.EEXIST},
		{"partial then failing", func(tx *Transaction) {
			tx.AddChain(Chain{Name: "x"})
			tx.FlushChain("svc-a")
			tx.DeleteElements("eps4", E(Int(99)))
		}, syscall.ENOENT},
		{"chain with rules, no references", func(tx *Transaction) { tx.DeleteChain("sticky") }, 0},
	}
	for _, tc := range cases {
		tx := &Transaction{}
		tc.tx(tx)
		if tc.want == 0 {
			// Accepted: the kernel drops the rules with the chain.
			if err := in.Apply(ctx, tx); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			before = dump()
			if strings.Contains(before, "chain sticky") {
				t.Errorf("%s: the chain is still there:\n%s", tc.name, before)
			}
			continue
		}
		if got := errno(in.Apply(ctx, tx)); got != tc.want {
			t.Errorf("%s: errno %v, want %v", tc.name, got, tc.want)
		}
		if after := dump(); after != before {
			t.Fatalf("%s: a refused batch changed the table:\n%s", tc.name, lineDiff(before, after))
		}
	}
	// Deleting a referenced chain works once its references go in the
	// same batch.
	tx := &Transaction{}
	tx.FlushChain("svc-aff")
	tx.FlushChain("ep-a2")
	tx.DeleteChain("ep-a2")
	if err := in.Apply(ctx, tx); err != nil {
		t.Errorf("delete after dropping references: %v", err)
	}
}

func TestFakeReconcileHealsTamper(t *testing.T) {
	ctx := context.Background()
	f := NewFake(testTable)
	rs := sampleRuleset()
	if _, err := f.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	want := f.Dump()
	tamper := &Transaction{}
	tamper.FlushChain("svc-a")
	tamper.DeleteElements("eps4", E(Int(1)))
	if err := f.Tamper(tamper); err != nil {
		t.Fatal(err)
	}
	if tx, err := f.Sync(ctx, rs); err != nil || !tx.Empty() {
		t.Fatalf("Sync trusts its last state: %v %v", err, tx)
	}
	tx, err := f.Reconcile(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tx.Render(testTable), "flush chain inet lbkit-test svc-a") || strings.Contains(tx.Render(testTable), "svc-b") {
		t.Errorf("repair touched the wrong things:\n%s", tx.Render(testTable))
	}
	if got := f.Dump(); got != want {
		// The fake stores rules as given; after Reconcile svc-a holds the
		// canonical form, which renders the same here.
		t.Errorf("Reconcile did not restore:\n%s", lineDiff(want, got))
	}
	if err := f.Cleanup(ctx); err != nil || f.Dump() != "" {
		t.Errorf("Cleanup: %v, dump %q", err, f.Dump())
	}
	if _, err := f.Read(ctx); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read after Cleanup = %v", err)
	}
}
