package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// runScenario applies the steps of sc to in and checks each outcome.
func runScenario(t *testing.T, ctx context.Context, in Interface, sc scenario, lineCheck bool) {
	t.Helper()
	for i, st := range sc.steps {
		err := in.RestoreText(ctx, []byte(st.text))
		switch {
		case st.failLine == 0 && err != nil:
			t.Fatalf("%s: %v", stepLabel(sc, i), err)
		case st.failLine != 0 && err == nil:
			t.Fatalf("%s: accepted, want a failure at line %d", stepLabel(sc, i), st.failLine)
		case st.failLine != 0:
			var re *RestoreError
			if !errors.As(err, &re) || !errors.Is(err, ErrRestore) {
				t.Fatalf("%s: error %v is not a *RestoreError", stepLabel(sc, i), err)
			}
			if lineCheck && re.Line != st.failLine {
				t.Errorf("%s: failed at line %d, want %d: %v", stepLabel(sc, i), re.Line, st.failLine, err)
			}
			if re.Line > 0 {
				lines := strings.Split(st.text, "\n")
				if re.Line <= len(lines) && re.Text != lines[re.Line-1] {
					t.Errorf("%s: Text %q is not line %d %q", stepLabel(sc, i), re.Text, re.Line, lines[re.Line-1])
				}
			}
		}
	}
}

func TestFakeScenarios(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			f := NewFake(sc.family)
			runScenario(t, t.Context(), f, sc, true)
			if f.Restores() != len(sc.steps) {
				t.Errorf("Restores = %d, want %d", f.Restores(), len(sc.steps))
			}
			golden(t, "scenario-"+sc.name+".golden", f.Dump())
		})
	}
}

func TestFakeFailureKeepsTable(t *testing.T) {
	ctx := t.Context()
	f := NewFake(IPv4)
	s := serviceSync(IPv4, 2, 2)
	if err := f.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	before := f.Dump()
	// Break the last rule of the last nat chain: jump to a missing chain.
	bad := serviceSync(IPv4, 2, 2)
	nat := &bad.Tables[0]
	last := &nat.Chains[len(nat.Chains)-1]
	last.Rules = append(last.Rules, Rule{Target: Jump{Chain: "LBK-MISSING"}})
	err := f.Apply(ctx, bad)
	var re *RestoreError
	if !errors.As(err, &re) || !errors.Is(err, ErrUnknownChain) {
		t.Fatalf("err = %v", err)
	}
	if re.Table != TableNAT || re.Text != "-A "+string(last.Name)+" -j LBK-MISSING" {
		t.Errorf("blamed %s line %d %q", re.Table, re.Line, re.Text)
	}
	if got := f.Dump(); string(got) != string(before) {
		t.Errorf("state changed by a failed restore")
	}
	if string(f.LastRestore()) == "" {
		t.Error("LastRestore empty")
	}
}

func TestFakeBeforeRestore(t *testing.T) {
	f := NewFake(IPv4)
	boom := errors.New("injected")
	f.BeforeRestore = func(text []byte) error {
		if strings.Contains(string(text), "LBK-BAD") {
			return boom
		}
		return nil
	}
	ctx := t.Context()
	if err := f.RestoreText(ctx, []byte("*filter\n:LBK-OK - [0:0]\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	err := f.RestoreText(ctx, []byte("*filter\n:LBK-BAD - [0:0]\nCOMMIT\n"))
	if !errors.Is(err, boom) || !errors.Is(err, ErrRestore) {
		t.Fatalf("err = %v", err)
	}
	chains, _ := f.ListChains(ctx, TableFilter, "LBK-")
	if len(chains) != 1 || chains[0] != "LBK-OK" {
		t.Errorf("chains = %v", chains)
	}
}

func TestFakeRuleOps(t *testing.T) {
	ctx := t.Context()
	f := NewFake(IPv6)
	added, err := f.EnsureJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", Prepend, `lbkit "services"`)
	if err != nil || !added {
		t.Fatalf("EnsureJump = %v, %v", added, err)
	}
	if added, err = f.EnsureJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", Prepend, `lbkit "services"`); err != nil || added {
		t.Fatalf("second EnsureJump = %v, %v", added, err)
	}
	if _, err := f.EnsureRule(ctx, TableNAT, ChainPrerouting, Append, &Rule{Target: Return}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.EnsureRule(ctx, TableNAT, ChainPrerouting, Prepend, &Rule{Target: Accept}); err != nil {
		t.Fatal(err)
	}
	td, err := f.Save(ctx, TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	pre := td.Chain(ChainPrerouting).Rules
	if len(pre) != 3 || pre[0].Target != Accept || pre[1].Target != (Jump{Chain: "LBK-SERVICES"}) || pre[2].Target != Return {
		t.Fatalf("PREROUTING = %v", pre)
	}
	if td.Chain("LBK-SERVICES") == nil {
		t.Error("EnsureJump did not create the chain")
	}
	// The Fake refuses what the kernel refuses.
	if _, err := f.EnsureRule(ctx, TableNAT, ChainPostrouting, Append, &Rule{Target: DNAT{Addr: addr("2001:db8::1")}}); !errors.Is(err, ErrHook) {
		t.Errorf("DNAT in POSTROUTING: %v", err)
	}
	if _, err := f.EnsureRule(ctx, TableNAT, ChainPostrouting, Append, &Rule{Target: Jump{Chain: "LBK-NONE"}}); !errors.Is(err, ErrUnknownChain) {
		t.Errorf("jump to a missing chain: %v", err)
	}
	if _, err := f.EnsureRule(ctx, TableNAT, ChainPostrouting, Append, &Rule{Src: Addr{Prefix: pfx("192.0.2.0/24")}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv4 prefix in an IPv6 Fake: %v", err)
	}
	if err := f.DeleteJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", `lbkit "services"`); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", `lbkit "services"`); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := f.DeleteJump(ctx, TableNAT, ChainPrerouting, "LBK-NEVER", ""); err != nil {
		t.Fatalf("deleting a jump to a chain that never existed: %v", err)
	}
	td, _ = f.Save(ctx, TableNAT)
	if n := len(td.Chain(ChainPrerouting).Rules); n != 2 {
		t.Errorf("%d rules left in PREROUTING", n)
	}
	// An untouched table prints its built-in chains.
	raw, err := f.SaveText(ctx, TableRaw)
	if err != nil || string(raw) != "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" {
		t.Errorf("raw = %q, %v", raw, err)
	}
}

func TestFakeRestoreBufferChecks(t *testing.T) {
	ctx := t.Context()
	f := NewFake(IPv4)
	b := NewBuffer(IPv6)
	if err := f.Restore(ctx, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv6 buffer on an IPv4 Fake: %v", err)
	}
	b = NewBuffer(IPv4)
	_ = b.StartTable(TableNAT)
	if err := f.Restore(ctx, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("uncommitted buffer: %v", err)
	}
	_ = b.DeclareChain("LBK-X")
	_ = b.Commit()
	if err := f.Restore(ctx, b); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.ListChains(ctx, TableNAT, ""); len(c) != 5 {
		t.Errorf("chains %v", c)
	}
	if err := f.Apply(ctx, &Sync{}); err != nil || f.Restores() != 1 {
		t.Errorf("an empty sync ran a restore: %v, %d", err, f.Restores())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.RestoreText(cctx, []byte("*nat\nCOMMIT\n")); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}
