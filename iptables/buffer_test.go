package iptables

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// serviceSync builds a kube-proxy-shaped Sync for family f: a services
// chain, one service chain per service with a masquerade mark and
// statistic rules, one endpoint chain per endpoint, client affinity on
// the first service.
func serviceSync(f Family, services, endpoints int) *Sync {
	n := ChainNamer{}
	mark, _ := n.Fixed("MARK-MASQ")
	svcs, _ := n.Fixed("SERVICES")
	post, _ := n.Fixed("POSTROUTING")
	nat := TableSync{Table: TableNAT}
	nat.Chains = append(nat.Chains,
		Chain{Name: mark, Rules: []Rule{{Target: OrMark(0x4000)}}},
		Chain{Name: post, Rules: []Rule{
			{Matches: []Match{MarkMatch{Value: 0x4000, Mask: 0x4000, Invert: true}}, Target: Return},
			{Target: XorMark(0x4000)},
			{Matches: []Match{Comment("lbkit service traffic requiring SNAT")}, Target: Masquerade{RandomFully: true}},
		}})
	var svcRules []Rule
	for s := 0; s < services; s++ {
		name := fmt.Sprintf("ns%d/svc%d:http", s%7, s)
		var vip netip.Addr
		if f == IPv6 {
			vip = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x96, 14: byte(s >> 8), 15: byte(s)})
		} else {
			vip = netip.AddrFrom4([4]byte{198, 51, byte(100 + s>>8), byte(s)})
		}
		svcChain, _ := n.Name("SVC-", name, "tcp")
		svcRules = append(svcRules, Rule{Dst: Addr{Prefix: netip.PrefixFrom(vip, vip.BitLen())}, Proto: ProtoMatch{Proto: ProtoTCP},
			Matches: []Match{Comment(name + " cluster IP"), Ports{Dst: Port(80)}}, Target: Jump{Chain: svcChain}})
		sc := Chain{Name: svcChain}
		sc.Rules = append(sc.Rules, Rule{Src: Addr{Prefix: clusterCIDR(f), Invert: true}, Dst: Addr{Prefix: netip.PrefixFrom(vip, vip.BitLen())},
			Proto: ProtoMatch{Proto: ProtoTCP}, Matches: []Match{Comment(name + " cluster IP"), Ports{Dst: Port(80)}}, Target: Jump{Chain: mark}})
		var seps []Chain
		for e := 0; e < endpoints; e++ {
			var ep netip.Addr
			if f == IPv6 {
				ep = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 12: byte(s >> 8), 13: byte(s), 15: byte(e + 1)})
			} else {
				ep = netip.AddrFrom4([4]byte{192, 0, 2, byte(e + 1)})
			}
			epStr := netip.AddrPortFrom(ep, 8080).String()
			sepChain, _ := n.Name("SEP-", name, "tcp", epStr)
			sep := Chain{Name: sepChain, Rules: []Rule{
				{Src: Addr{Prefix: netip.PrefixFrom(ep, ep.BitLen())}, Matches: []Match{Comment(name)}, Target: Jump{Chain: mark}},
				{Proto: ProtoMatch{Proto: ProtoTCP}, Matches: []Match{Comment(name)}, Target: DNAT{Addr: ep, Ports: Port(8080)}},
			}}
			if s == 0 {
				sep.Rules[1].Matches = append(sep.Rules[1].Matches, Recent{Mode: RecentSet, Name: string(sepChain)})
				sc.Rules = append(sc.Rules, Rule{Matches: []Match{Comment(name + " -> " + epStr),
					Recent{Mode: RecentCheck, Seconds: 10800, Reap: true, Name: string(sepChain)}}, Target: Jump{Chain: sepChain}})
			}
			seps = append(seps, sep)
		}
		for e, sep := range seps {
			r := Rule{Matches: []Match{Comment(name + " -> endpoint " + fmt.Sprint(e))}, Target: Jump{Chain: sep.Name}}
			if left := endpoints - e; left > 1 {
				r.Matches = append(r.Matches, Statistic{Probability: ProbabilityOf(1 / float64(left))})
			}
			sc.Rules = append(sc.Rules, r)
		}
		nat.Chains = append(nat.Chains, sc)
		nat.Chains = append(nat.Chains, seps...)
	}
	nat.Chains = append(nat.Chains, Chain{Name: svcs, Rules: append(svcRules, Rule{
		Matches: []Match{Comment("lbkit node ports"), AddrType{Dst: AddrLocal}}, Target: Return})})
	filter := TableSync{Table: TableFilter, Chains: []Chain{{Name: "LBK-FILTER", Rules: []Rule{
		{Proto: ProtoMatch{Proto: ProtoTCP}, Dst: Addr{Prefix: hostPrefix(f)},
			Matches: []Match{Comment("ns/noep:http has no endpoints"), Ports{Dst: Port(80)}}, Target: Reject{}},
		{Matches: []Match{Conntrack{States: CTInvalid}}, Target: Drop},
	}}}}
	return &Sync{Tables: []TableSync{nat, filter}}
}

func clusterCIDR(f Family) netip.Prefix {
	if f == IPv6 {
		return netip.MustParsePrefix("2001:db8:244::/64")
	}
	return netip.MustParsePrefix("203.0.113.0/24")
}

func hostPrefix(f Family) netip.Prefix {
	if f == IPv6 {
		return netip.MustParsePrefix("2001:db8:96::50/128")
	}
	return netip.MustParsePrefix("198.51.100.250/32")
}

func TestSyncGolden(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		b := NewBuffer(f)
		if err := serviceSync(f, 3, 3).Render(b); err != nil {
			t.Fatal(err)
		}
		golden(t, "sync-full."+strings.ToLower(f.String())+".golden", b.Bytes())
	}
	// A partial sync: one service chain and its endpoint chains rewritten,
	// an endpoint chain deleted.
	full := serviceSync(IPv4, 3, 3)
	nat := full.Tables[0]
	partial := &Sync{Tables: []TableSync{{Table: TableNAT, Chains: nat.Chains[6:9], Delete: []ChainName{nat.Chains[9].Name}}}}
	partial.Tables[0].Chains[0].Rules = partial.Tables[0].Chains[0].Rules[:3] // drop the jump to the deleted chain
	b := NewBuffer(IPv4)
	if err := partial.Render(b); err != nil {
		t.Fatal(err)
	}
	golden(t, "sync-partial.ipv4.golden", b.Bytes())
}

func TestSyncRenderParsesBack(t *testing.T) {
	// The rendered text, read as iptables-save output (declarations with
	// the same chains, rules in order), gives back the typed rules.
	for _, f := range []Family{IPv4, IPv6} {
		s := serviceSync(f, 4, 3)
		b := NewBuffer(f)
		if err := s.Render(b); err != nil {
			t.Fatal(err)
		}
		d, err := ParseDump(f, b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range s.Tables {
			td := d.Table(ts.Table)
			for _, c := range ts.Chains {
				got := td.Chain(c.Name)
				if got == nil || !reflect.DeepEqual(got.Rules, c.Rules) {
					t.Fatalf("%s %s/%s: parsed %#v\nwant %#v", f, ts.Table, c.Name, got, c.Rules)
				}
			}
		}
	}
}

func TestSyncValidation(t *testing.T) {
	ok := Chain{Name: "LBK-A", Rules: []Rule{{Target: Accept}}}
	cases := []struct {
		name  string
		sync  Sync
		field string
		is    error
	}{
		{"bad table", Sync{Tables: []TableSync{{Table: "bogus", Chains: []Chain{ok}}}}, "tables[0].table", nil},
		{"empty bad table", Sync{Tables: []TableSync{{Table: "bogus"}}}, "tables[0].table", nil},
		{"table twice", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{ok}}, {Table: TableNAT}}}, "tables[1].table", nil},
		{"builtin chain", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{{Name: ChainPrerouting}}}}}, "tables[0].chains[0].name", ErrChainNameBuiltin},
		{"long chain", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{{Name: "LBK-SVC-ABCDEFGHIJKLMNOPQRSTU"}}}}}, "tables[0].chains[0].name", ErrChainNameTooLong},
		{"chain twice", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{ok, ok}}}}, "tables[0].chains[1].name", nil},
		{"write and delete", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{ok}, Delete: []ChainName{"LBK-A"}}}}, "tables[0].delete[0]", nil},
		{"delete builtin", Sync{Tables: []TableSync{{Table: TableNAT, Delete: []ChainName{ChainOutput}}}}, "tables[0].delete[0]", ErrChainNameBuiltin},
		{"jump to deleted", Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{{Name: "LBK-A", Rules: []Rule{{}, {Target: Goto{Chain: "LBK-B"}}}}},
			Delete: []ChainName{"LBK-B"}}}}, "tables[0].chains[0].rules[1].target", ErrChainInUse},
		{"bad rule", Sync{Tables: []TableSync{{Table: TableFilter, Chains: []Chain{{Name: "LBK-A", Rules: []Rule{{Target: Accept}, {Matches: []Match{Comment("x\ny")}}}}}}}},
			"tables[0].chains[0].rules[1].matches[0].comment", nil},
		{"dnat in filter", Sync{Tables: []TableSync{{Table: TableFilter, Chains: []Chain{{Name: "LBK-A", Rules: []Rule{{Target: DNAT{Addr: addr("192.0.2.1")}}}}}}}},
			"tables[0].chains[0].rules[0].target", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := NewBuffer(IPv4)
			_ = b.StartTable(TableRaw)
			_ = b.Commit()
			before := b.String()
			err := c.sync.Render(b)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v", err)
			}
			if ve.Field != c.field {
				t.Errorf("Field = %q, want %q (%v)", ve.Field, c.field, err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v is not %v", err, c.is)
			}
			if b.String() != before {
				t.Errorf("buffer changed on error: %q", b.String())
			}
			if c.sync.Validate(IPv4) == nil {
				t.Errorf("Validate accepted it")
			}
		})
	}
}

func TestBufferShape(t *testing.T) {
	b := NewBuffer(IPv4)
	if err := b.DeclareChain("LBK-A"); err == nil {
		t.Error("declaration outside a table accepted")
	}
	if err := b.AppendRule("LBK-A", &Rule{}); err == nil {
		t.Error("rule outside a table accepted")
	}
	if err := b.Commit(); err == nil {
		t.Error("COMMIT outside a table accepted")
	}
	if err := b.StartTable(TableNAT); err != nil {
		t.Fatal(err)
	}
	if err := b.StartTable(TableFilter); err == nil {
		t.Error("nested table accepted")
	}
	if err := b.DeclareChain("INPUT"); !errors.Is(err, ErrChainNameBuiltin) {
		t.Errorf("declaring a built-in chain: %v", err)
	}
	_ = b.DeclareChain("LBK-A")
	_ = b.AppendRule(ChainPrerouting, &Rule{Target: Jump{Chain: "LBK-A"}})
	_ = b.DeleteChain("LBK-B")
	_ = b.Commit()
	want := "*nat\n:LBK-A - [0:0]\n-A PREROUTING -j LBK-A\n-X LBK-B\nCOMMIT\n"
	if b.String() != want {
		t.Errorf("got %q", b.String())
	}
	var sb strings.Builder
	if _, err := b.WriteTo(&sb); err != nil || sb.String() != want {
		t.Errorf("WriteTo = %q, %v", sb.String(), err)
	}
	b.Reset()
	if b.Len() != 0 {
		t.Error("Reset left bytes")
	}
	if (&Sync{Tables: []TableSync{{Table: TableNAT}}}).Render(b); b.Len() != 0 {
		t.Errorf("empty table rendered %q", b.String())
	}
}

func TestStale(t *testing.T) {
	got := Stale([]ChainName{"LBK-A", "LBK-B", "LBK-C"}, []ChainName{"LBK-B", "LBK-D"})
	if !reflect.DeepEqual(got, []ChainName{"LBK-A", "LBK-C"}) {
		t.Errorf("Stale = %v", got)
	}
}

func TestBufferNoAllocs(t *testing.T) {
	s := serviceSync(IPv4, 20, 5)
	b := NewBuffer(IPv4)
	_ = s.Render(b)
	// Chain rendering into a grown buffer does not allocate per rule: only
	// the per-table maps of Sync's duplicate checks remain.
	c := s.Tables[0].Chains[5]
	allocs := testing.AllocsPerRun(100, func() {
		b.Reset()
		_ = b.StartTable(TableNAT)
		for i := range c.Rules {
			if err := b.AppendRule(c.Name, &c.Rules[i]); err != nil {
				t.Fatal(err)
			}
		}
		_ = b.Commit()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per chain render, want 0", allocs)
	}
}
