package nftables

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateRejects(t *testing.T) {
	base := func() *Ruleset { return sampleRuleset() }
	cases := []struct {
		name     string
		mutate   func(rs *Ruleset)
		table    Table
		wantPath string
		wantText string
	}{
		{name: "keyword chain name", mutate: func(rs *Ruleset) { rs.Chains[0].Name = "snat" },
			wantPath: `chains["snat"].name`, wantText: "keyword"},
		{name: "injection in name", mutate: func(rs *Ruleset) { rs.Chains[0].Name = "a; flush ruleset" },
			wantPath: ".name", wantText: "must match"},
		{name: "quote in comment", mutate: func(rs *Ruleset) { rs.Chains[0].Rules[0].Comment = `x" ; drop` },
			wantPath: `chains["prerouting"].rules[0].comment`, wantText: "cannot quote"},
		{name: "newline in comment", mutate: func(rs *Ruleset) { rs.Sets[0].Comment = "a\nb" },
			wantPath: `sets["services4"].comment`},
		{name: "long comment", mutate: func(rs *Ruleset) { rs.Sets[0].Comment = strings.Repeat("x", 129) },
			wantText: "longer than 128"},
		{name: "duplicate chain", mutate: func(rs *Ruleset) { rs.Chains = append(rs.Chains, rs.Chains[0]) },
			wantText: "duplicate chain"},
		{name: "jump to missing chain", mutate: func(rs *Ruleset) {
			rs.Chains[0].Rules = append(rs.Chains[0].Rules, R(Jump("nowhere")))
		}, wantPath: `chains["prerouting"].rules[3].stmts[0].chain`, wantText: `no chain "nowhere"`},
		{name: "verdict not last", mutate: func(rs *Ruleset) {
			rs.Chains[0].Rules = append(rs.Chains[0].Rules, R(Accept(), Counter{}))
		}, wantText: "must be the last"},
		{name: "vmap element to missing chain", mutate: func(rs *Ruleset) {
			rs.Sets[0].Elements = append(rs.Sets[0].Elements, VMapElem(Goto("gone"), Addr(a("192.0.2.50")), Proto(tcp), Port(1)))
		}, wantPath: `sets["services4"].elements[3].verdict.chain`},
		{name: "element type mismatch", mutate: func(rs *Ruleset) {
			rs.Set("eps4").Elements = append(rs.Set("eps4").Elements, MapElem([]Value{Int(9)}, Addr(a("2001:db8::1")), Port(1)))
		}, wantText: "has type ipv6_addr, want ipv4_addr"},
		{name: "duplicate element", mutate: func(rs *Ruleset) {
			s := rs.Set("eps4")
			s.Elements = append(s.Elements, s.Elements[0])
		}, wantText: "duplicate key 0"},
		{name: "overlapping intervals", mutate: func(rs *Ruleset) {
			s := rs.Set("cidrs")
			s.Elements = append(s.Elements, E(Prefix(p("10.1.0.0/16"))))
		}, wantText: "overlap"},
		{name: "prefix in non-interval set", mutate: func(rs *Ruleset) {
			rs.Set("blocked").Elements[0].Key[0] = Prefix(p("192.0.2.0/24"))
		}, wantText: "without the interval flag"},
		{name: "integer inside concatenation", mutate: func(rs *Ruleset) {
			rs.Sets = append(rs.Sets, Set{Name: "bad", Key: []Type{TypeIPv4Addr, TypeInteger}})
		}, wantPath: `sets["bad"].key[1]`, wantText: "whole key"},
		{name: "dynamic set with elements", mutate: func(rs *Ruleset) {
			s := rs.Set("aff-a1")
			s.Elements = []Element{E(Addr(a("192.0.2.1")))}
		}, wantText: "kernel owns"},
		{name: "element timeout without flag", mutate: func(rs *Ruleset) {
			rs.Set("eps4").Elements[0].Timeout = time.Second
		}, wantText: "no timeout flag"},
		{name: "dnat port without protocol", mutate: func(rs *Ruleset) {
			rs.Chain("ep-a1").Rules[1] = R(DNAT{Addr: a("192.0.2.21"), Port: 8080})
		}, wantPath: `chains["ep-a1"].rules[1].stmts[0].port`, wantText: "transport protocol"},
		{name: "dnat in filter chain", mutate: func(rs *Ruleset) {
			c := rs.Chain("filter-forward")
			c.Rules = append(c.Rules, R(DNAT{Addr: a("192.0.2.1")}))
		}, wantText: "needs a nat chain"},
		{name: "masquerade in prerouting", mutate: func(rs *Ruleset) {
			c := rs.Chain("prerouting")
			c.Rules = append(c.Rules, R(Masquerade{}))
		}, wantText: "nat postrouting"},
		{name: "reject in nat chain", mutate: func(rs *Ruleset) {
			c := rs.Chain("prerouting")
			c.Rules = append(c.Rules, R(Reject{}))
		}, wantText: "reject only works"},
		{name: "jhash zero seed", mutate: func(rs *Ruleset) {
			c := rs.Chain("svc-b")
			m := c.Rules[0].Stmts[1].(DNATMap)
			m.Key = JHash{Fields: []Field{FieldIPSaddr}, Mod: 2}
			c.Rules[0].Stmts[1] = m
		}, wantText: "seed must not be 0"},
		{name: "numgen zero modulus", mutate: func(rs *Ruleset) {
			rs.Chain("svc-a").Rules[1] = R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv4, Key: Numgen{}, Map: "eps4"})
		}, wantPath: ".key.mod"},
		{name: "map key type mismatch", mutate: func(rs *Ruleset) {
			rs.Chain("svc-a").Rules[1] = R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv4, Key: Concat{FieldIPSaddr}, Map: "eps4"})
		}, wantText: "does not match map"},
		{name: "ip6 dnat map on ip4 data", mutate: func(rs *Ruleset) {
			rs.Chain("svc-a").Rules[1] = R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv6, Key: Numgen{Mod: 1}, Map: "eps4"})
		}, wantText: "is not ipv6_addr"},
		{name: "lookup of a map", mutate: func(rs *Ruleset) {
			c := rs.Chain("nodeports")
			c.Rules = append(c.Rules, R(Lookup{Fields: []Field{FieldMark}, Set: "eps4"}, Accept()))
		}, wantText: "is a map"},
		{name: "update of a static set", mutate: func(rs *Ruleset) {
			c := rs.Chain("nodeports")
			c.Rules = append(c.Rules, R(SetUpdate{Set: "marks", Key: []Field{FieldMark}}))
		}, wantText: "not dynamic"},
		{name: "several interface names", mutate: func(rs *Ruleset) {
			c := rs.Chain("nodeports")
			c.Rules = append(c.Rules, R(Match{Field: FieldIifname, Values: []Value{Ifname("a"), Ifname("b")}}, Accept()))
		}, wantText: "named set"},
		{name: "negated state set", mutate: func(rs *Ruleset) {
			c := rs.Chain("nodeports")
			c.Rules = append(c.Rules, R(CtState{States: CtNew | CtRelated, Neg: true}, Accept()))
		}, wantText: "negate one state"},
		{name: "ip6 field in ip table", table: Table{Family: FamilyIPv4, Name: "t"}, mutate: func(rs *Ruleset) {},
			wantText: "in a ip table"},
		{name: "mapped address", mutate: func(rs *Ruleset) {
			rs.Chain("ep-a2").Rules[0] = R(DNAT{Addr: a("::ffff:192.0.2.1")})
		}, wantText: "ambiguous"},
		{name: "register budget", mutate: func(rs *Ruleset) {
			rs.Sets = append(rs.Sets, Set{Name: "wide", Key: []Type{TypeIPv6Addr, TypeIPv6Addr, TypeInetProto, TypeInetService},
				Data: []Type{TypeIPv6Addr, TypeInetService}, Dynamic: true})
			c := rs.Chain("nodeports")
			c.Rules = append(c.Rules, R(SetUpdate{Set: "wide", Key: []Field{FieldIP6Saddr, FieldIP6Daddr, FieldL4Proto, FieldTHDport},
				Data: Concat{FieldIP6Daddr, FieldTHDport}}))
		}, wantText: "do not fit the registers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := base()
			tc.mutate(rs)
			tbl := testTable
			if tc.table.Name != "" {
				tbl = tc.table
			}
			err := Validate(tbl, rs)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a *ValidationError", err)
			}
			if !strings.Contains(ve.Path, tc.wantPath) || !strings.Contains(ve.Reason, tc.wantText) {
				t.Errorf("got path %q reason %q; want path containing %q and reason containing %q", ve.Path, ve.Reason, tc.wantPath, tc.wantText)
			}
		})
	}
}

func TestValidateTable(t *testing.T) {
	for _, tc := range []struct {
		t  Table
		ok bool
	}{
		{Table{FamilyINet, "lbkit"}, true},
		{Table{FamilyIPv4, "kube-proxy"}, true},
		{Table{"bridge", "x"}, false},
		{Table{FamilyINet, ""}, false},
		{Table{FamilyINet, "table"}, false},
		{Table{FamilyINet, "a b"}, false},
	} {
		if err := ValidateTable(tc.t); (err == nil) != tc.ok {
			t.Errorf("ValidateTable(%v) = %v, want ok=%v", tc.t, err, tc.ok)
		}
	}
}

func TestValidateTransaction(t *testing.T) {
	known := sampleRuleset()
	cases := []struct {
		name string
		tx   func(tx *Transaction)
		want string // "" = valid
	}{
		{"element add to known map", func(tx *Transaction) {
			tx.AddElements("eps4", MapElem([]Value{Int(7)}, Addr(a("192.0.2.7")), Port(80)))
		}, ""},
		{"element delete by key only", func(tx *Transaction) { tx.DeleteElements("eps4", E(Int(1))) }, ""},
		{"element of unknown set", func(tx *Transaction) { tx.AddElements("nope", E(Int(1))) }, "unknown"},
		{"element into dynamic set", func(tx *Transaction) { tx.AddElements("aff-a1", E(Addr(a("192.0.2.1")))) }, "dynamic"},
		{"rule in unknown chain", func(tx *Transaction) { tx.AddRule("nope", R(Counter{})) }, `no chain "nope"`},
		{"rule in chain created earlier in the batch", func(tx *Transaction) {
			tx.AddChain(Chain{Name: "fresh"})
			tx.AddRule("fresh", R(Jump("svc-a")))
		}, ""},
		{"set recreated with other definition", func(tx *Transaction) {
			tx.AddSet(Set{Name: "eps4", Key: []Type{TypeMark}})
		}, "another definition"},
		{"delete then recreate", func(tx *Transaction) {
			tx.DeleteSet("marks")
			tx.AddSet(Set{Name: "marks", Key: []Type{TypeIPv4Addr}})
		}, ""},
		{"jump to chain deleted earlier", func(tx *Transaction) {
			tx.DeleteChain("ep-a2")
			tx.AddRule("nodeports", R(Goto("ep-a2")))
		}, `no chain "ep-a2"`},
		{"everything after delete table starts empty", func(tx *Transaction) {
			tx.DeleteTable()
			tx.AddRule("svc-a", R(Counter{}))
		}, `no chain "svc-a"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx := &Transaction{}
			tc.tx(tx)
			err := ValidateTransaction(testTable, known, tx)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !strings.Contains(ve.Error(), tc.want) {
				t.Fatalf("got %v, want a ValidationError about %q", err, tc.want)
			}
		})
	}
	// Without knowledge of the table, references are left to the kernel.
	tx := &Transaction{}
	tx.AddRule("somewhere", R(Jump("elsewhere")))
	if err := ValidateTransaction(testTable, nil, tx); err != nil {
		t.Errorf("unknown state: %v", err)
	}
}

// TestJumpTargetAndKeyChecksAgree: a jump in a rule and a jump in a
// verdict map element are checked by one helper, and so are the key of an
// element added and of an element deleted: each bad input gets the same
// reason on both sides.
func TestJumpTargetAndKeyChecksAgree(t *testing.T) {
	base := &BaseChain{Type: ChainTypeFilter, Hook: HookInput}
	reason := func(err error) string {
		t.Helper()
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("got %v, want a ValidationError", err)
		}
		return ve.Reason
	}
	for _, target := range []string{"nowhere", "in", "bad name!"} {
		chains := []Chain{{Name: "in", Base: base}}
		inRule := &Ruleset{Chains: append(chains, Chain{Name: "c", Rules: []Rule{R(Jump(target))}})}
		inElem := &Ruleset{Chains: chains, Sets: []Set{{Name: "v", Key: []Type{TypeMark}, Data: []Type{TypeVerdict},
			Elements: []Element{VMapElem(Jump(target), Mark(1))}}}}
		r, e := reason(Validate(testTable, inRule)), reason(Validate(testTable, inElem))
		if r != e || !strings.Contains(r, target) {
			t.Errorf("jump to %q: rule %q, element %q", target, r, e)
		}
	}
	s := Set{Name: "s", Key: []Type{TypeIPv4Addr, TypeInetService}}
	known := &Ruleset{Sets: []Set{s}}
	for _, el := range []Element{E(Addr(a("192.0.2.1"))), E(Addr(a("192.0.2.1")), Proto(tcp)), E(Prefix(p("192.0.2.0/24")), Port(1))} {
		add, del := &Transaction{}, &Transaction{}
		add.AddElements("s", el)
		del.DeleteElements("s", el)
		ra, rd := reason(ValidateTransaction(testTable, known, add)), reason(ValidateTransaction(testTable, known, del))
		if ra != rd {
			t.Errorf("element %s: add %q, delete %q", el.keyString(), ra, rd)
		}
	}
}
