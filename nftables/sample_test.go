package nftables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var testTable = Table{Family: FamilyINet, Name: "lbkit-test"}

func a(s string) netip.Addr   { return netip.MustParseAddr(s) }
func p(s string) netip.Prefix { return netip.MustParsePrefix(s) }

const (
	tcp  = 6
	udp  = 17
	sctp = 132
)

// sampleRuleset uses every statement, set type and flag the engine
// supports, in the shapes lbkit's nat layer needs.
func sampleRuleset() *Ruleset {
	pre := &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityDstNAT}
	out := &BaseChain{Type: ChainTypeNAT, Hook: HookOutput, Priority: PriorityDstNAT}
	post := &BaseChain{Type: ChainTypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT}
	fwd := &BaseChain{Type: ChainTypeFilter, Hook: HookForward, Priority: PriorityFilter, Policy: PolicyAccept}
	svcKey4 := Concat{FieldIPDaddr, FieldL4Proto, FieldTHDport}
	svcKey6 := Concat{FieldIP6Daddr, FieldL4Proto, FieldTHDport}
	return &Ruleset{
		Sets: []Set{
			{Name: "services4", Key: []Type{TypeIPv4Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
				Comment: "dispatch by VIP . proto . port",
				Elements: []Element{
					VMapElem(Goto("svc-a"), Addr(a("192.0.2.10")), Proto(tcp), Port(80)),
					VMapElem(Goto("svc-b"), Addr(a("192.0.2.11")), Proto(udp), Port(53)),
					VMapElem(Goto("svc-aff"), Addr(a("192.0.2.12")), Proto(tcp), Port(8080)),
				}},
			{Name: "services6", Key: []Type{TypeIPv6Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
				Elements: []Element{VMapElem(Goto("svc-c6"), Addr(a("2001:db8::10")), Proto(tcp), Port(80))}},
			{Name: "eps4", Key: []Type{TypeInteger}, Data: []Type{TypeIPv4Addr, TypeInetService},
				Elements: []Element{
					MapElem([]Value{Int(0)}, Addr(a("192.0.2.21")), Port(8080)),
					MapElem([]Value{Int(1)}, Addr(a("192.0.2.22")), Port(8080)),
					MapElem([]Value{Int(2)}, Addr(a("192.0.2.23")), Port(8081)),
				}},
			{Name: "eps6", Key: []Type{TypeInteger}, Data: []Type{TypeIPv6Addr, TypeInetService},
				Elements: []Element{
					MapElem([]Value{Int(0)}, Addr(a("2001:db8::21")), Port(80)),
					{Key: []Value{Int(1)}, Data: []Value{Addr(a("2001:db8::22")), Port(80)}, Comment: "second"},
				}},
			{Name: "cidrs", Key: []Type{TypeIPv4Addr}, Interval: true,
				Elements: []Element{E(Prefix(p("10.0.0.0/8"))), E(Addr(a("192.0.2.7"))), E(Prefix(p("198.51.100.0/25")))}},
			{Name: "cidrs6", Key: []Type{TypeIPv6Addr}, Interval: true,
				Elements: []Element{E(Prefix(p("2001:db8:1::/48")))}},
			{Name: "aff-a1", Key: []Type{TypeIPv4Addr}, Dynamic: true, Timeout: true, DefaultTimeout: 3 * time.Hour},
			{Name: "aff4", Key: []Type{TypeIPv4Addr, TypeIPv4Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeIPv4Addr, TypeInetService},
				Dynamic: true, Timeout: true, DefaultTimeout: 10800 * time.Second, Size: 100000},
			{Name: "affidx", Key: []Type{TypeIPv4Addr, TypeIPv4Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeInteger},
				Dynamic: true, Timeout: true},
			{Name: "marks", Key: []Type{TypeMark}, Elements: []Element{E(Mark(1)), E(Mark(0x4000))}},
			{Name: "ifaces", Key: []Type{TypeIfname}, Elements: []Element{E(Ifname("eth0")), E(Ifname("lo"))}},
			{Name: "blocked", Key: []Type{TypeIPv4Addr, TypeInetProto, TypeInetService}, Timeout: true,
				Elements: []Element{{Key: []Value{Addr(a("192.0.2.99")), Proto(tcp), Port(80)}, Timeout: time.Hour, Comment: "no endpoints"}}},
		},
		Chains: []Chain{
			{Name: "prerouting", Base: pre, Rules: []Rule{
				R(VMap{Key: svcKey4, Map: "services4"}),
				R(VMap{Key: svcKey6, Map: "services6"}),
				R(FibLocal{}, Jump("nodeports")),
			}},
			{Name: "output", Base: out, Rules: []Rule{
				R(VMap{Key: svcKey4, Map: "services4"}),
				R(FibLocal{}, Jump("nodeports")),
			}},
			{Name: "nodeports", Rules: []Rule{
				{Stmts: []Stmt{Match{Field: FieldTCPDport, Values: []Value{Port(30080)}}, Goto("svc-a")}, Comment: "nodeport of svc-a"},
			}},
			{Name: "postrouting", Base: post, Rules: []Rule{
				R(Jump("snat-rules")),
				R(MarkMatch{Mask: 0x4000, Value: 0}, Return()),
				R(SetMark{Op: MarkXor, Value: 0x4000}),
				R(Masquerade{FullyRandom: true}),
			}},
			{Name: "snat-rules", Rules: []Rule{
				R(Match{Field: FieldIPSaddr, Values: []Value{Prefix(p("10.0.0.0/8"))}}, SNAT{Addr: a("192.0.2.9")}),
				R(Match{Field: FieldIP6Saddr, Values: []Value{Prefix(p("2001:db8:5::/48"))}}, SNAT{Addr: a("2001:db8::9")}),
				R(Match{Field: FieldOifname, Values: []Value{Ifname("wan0")}}, Masquerade{}),
				R(CtStatus{Bits: CtStatusDNAT}, Match{Field: FieldIPSaddr, Neg: true, Values: []Value{Prefix(p("10.0.0.0/8"))}}, Masquerade{FullyRandom: true}),
			}},
			{Name: "svc-a", Rules: []Rule{
				R(Match{Field: FieldIPSaddr, Neg: true, Values: []Value{Prefix(p("10.0.0.0/8"))}}, SetMark{Op: MarkOr, Value: 0x4000}),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 3}, Map: "eps4"}),
			}},
			{Name: "svc-b", Rules: []Rule{
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(udp)}}, DNATMap{Family: FamilyIPv4,
					Key: JHash{Fields: []Field{FieldIPSaddr, FieldTHSport}, Mod: 2, Seed: 0x1234},
					Entries: []Element{
						MapElem([]Value{Int(0)}, Addr(a("192.0.2.31")), Port(53)),
						MapElem([]Value{Int(1)}, Addr(a("192.0.2.32")), Port(53)),
					}}),
			}},
			{Name: "svc-c6", Rules: []Rule{
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv6, Key: Numgen{Mod: 2}, Map: "eps6"}),
			}},
			{Name: "svc-aff", Rules: []Rule{
				R(Lookup{Fields: []Field{FieldIPSaddr}, Set: "aff-a1"}, Goto("ep-a1")),
				R(VMap{Key: Numgen{Mod: 2}, Entries: []Element{VMapElem(Goto("ep-a1"), Int(0)), VMapElem(Goto("ep-a2"), Int(1))}}),
			}},
			{Name: "ep-a1", Rules: []Rule{
				R(SetUpdate{Op: OpUpdate, Set: "aff-a1", Key: []Field{FieldIPSaddr}, Timeout: 3 * time.Hour}),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNAT{Addr: a("192.0.2.21"), Port: 8080}),
			}},
			{Name: "ep-a2", Rules: []Rule{
				R(DNAT{Addr: a("192.0.2.22")}),
			}},
			{Name: "sticky", Rules: []Rule{
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}},
					DNATMap{Family: FamilyIPv4, Key: Concat{FieldIPSaddr, FieldIPDaddr, FieldL4Proto, FieldTHDport}, Map: "aff4"}),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}},
					SetUpdate{Op: OpUpdate, Set: "affidx", Key: []Field{FieldIPSaddr, FieldIPDaddr, FieldL4Proto, FieldTHDport},
						Data: Numgen{Mod: 3, Offset: 7}, Timeout: time.Hour}),
				R(SetUpdate{Op: OpAdd, Set: "aff4", Key: []Field{FieldIPSaddr, FieldIPDaddr, FieldL4Proto, FieldTHDport},
					Data: Concat{FieldIPDaddr, FieldTHDport}}),
			}},
			{Name: "filter-forward", Base: fwd, Rules: []Rule{
				R(CtState{States: CtEstablished | CtRelated}, Accept()),
				R(CtState{States: CtNew, Neg: true}, Return()),
				R(Lookup{Fields: []Field{FieldIPDaddr, FieldL4Proto, FieldTHDport}, Set: "blocked"}, Reject{Type: RejectICMPX, Code: ICMPXAdminProhibited}),
				R(Match{Field: FieldIPDaddr, Values: []Value{Addr(a("192.0.2.98"))}}, Reject{}),
				R(Match{Field: FieldIPDaddr, Values: []Value{Addr(a("192.0.2.97"))}}, Reject{Type: RejectICMP, Code: 1}),
				R(Match{Field: FieldIP6Daddr, Values: []Value{Addr(a("2001:db8::97"))}}, Reject{Type: RejectICMPv6, Code: 1}),
				R(Match{Field: FieldIPDaddr, Values: []Value{Addr(a("192.0.2.96"))}}, Reject{Type: RejectTCPReset}),
				R(Match{Field: FieldIPSaddr, Values: []Value{Prefix(p("192.0.2.0/28"))}}, Lookup{Fields: []Field{FieldIPDaddr}, Set: "cidrs", Neg: true}, Drop()),
				R(Match{Field: FieldIP6Saddr, Values: []Value{Prefix(p("2001:db8::/33"))}}, Lookup{Fields: []Field{FieldIP6Saddr}, Set: "cidrs6"}, Accept()),
				R(Match{Field: FieldIPDaddr, Neg: true, Values: []Value{Addr(a("192.0.2.1")), Addr(a("192.0.2.2"))}}, Match{Field: FieldIPSaddr, Values: []Value{Prefix(p("10.0.0.0/8")), Prefix(p("172.16.0.0/12"))}}, Counter{}),
				R(Match{Field: FieldIifname, Values: []Value{Ifname("veth*")}}, Counter{}, Accept()),
				R(Match{Field: FieldOifname, Neg: true, Values: []Value{Ifname("lo")}}, Match{Field: FieldIifname, Values: []Value{Ifname("eth0")}}, Counter{}),
				R(Lookup{Fields: []Field{FieldIifname}, Set: "ifaces"}, Accept()),
				R(MarkMatch{Value: 0x10}, Drop()),
				R(MarkMatch{Mask: 0xff00, Value: 0x1100, Neg: true}, Counter{}),
				R(Lookup{Fields: []Field{FieldMark}, Set: "marks"}, Accept()),
				R(Match{Field: FieldTCPDport, Values: []Value{Port(80), Port(443)}}, Accept()),
				R(Match{Field: FieldSCTPDport, Values: []Value{Port(9)}}, Accept()),
				R(Match{Field: FieldUDPSport, Neg: true, Values: []Value{Port(53)}}, Match{Field: FieldUDPDport, Values: []Value{Port(5353)}}, Accept()),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp), Proto(udp)}}, Match{Field: FieldTHDport, Neg: true, Values: []Value{Port(22)}}, Counter{}),
				R(Match{Field: FieldL4Proto, Neg: true, Values: []Value{Proto(sctp)}}, Counter{}),
				R(NFProtoMatch{Family: FamilyIPv6}, Counter{}),
				R(SetMark{Op: MarkSet, Value: 0x10}),
				R(SetMark{Op: MarkAnd, Value: 0xff}),
				{Stmts: []Stmt{Counter{}}, Comment: "end of forward"},
			}},
		},
	}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended)\n--- got:\n%s\n--- want:\n%s", name, got, want)
	}
}

// lineDiff lists the lines only in a (-) or only in b (+), keeping order;
// enough to read what differs between two listings.
func lineDiff(a, b string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	ca, cb := count(a), count(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if cb[l] > 0 {
			cb[l]--
			continue
		}
		out.WriteString("- " + l + "\n")
	}
	for _, l := range strings.Split(b, "\n") {
		if ca[l] > 0 {
			ca[l]--
			continue
		}
		out.WriteString("+ " + l + "\n")
	}
	return out.String()
}
