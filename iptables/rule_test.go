package iptables

import (
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// renderCase is a rule and the exact text iptables-save printed for it
// (captured from iptables 1.8.9, legacy and nf_tables backends alike).
type renderCase struct {
	name   string
	family Family
	table  Table
	rule   Rule
	want   string
}

// renderCases covers every match and target type. The tier-2 tests apply
// them on the kernel and compare with iptables-save.
func renderCases() []renderCase {
	tcp := ProtoMatch{Proto: ProtoTCP}
	return []renderCase{
		{"basic", IPv4, TableFilter, Rule{Src: Addr{Prefix: pfx("10.0.0.0/8")}, Dst: Addr{Prefix: pfx("192.0.2.1/32"), Invert: true},
			In: Iface{Name: "eth0"}, Out: Iface{Name: "lo", Invert: true}, Proto: tcp, Target: Accept},
			"-s 10.0.0.0/8 ! -d 192.0.2.1/32 -i eth0 ! -o lo -p tcp -j ACCEPT"},
		{"proto-invert", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: ProtoTCP, Invert: true}, Target: Drop}, "! -p tcp -j DROP"},
		{"iface-wildcard", IPv4, TableFilter, Rule{In: Iface{Name: "veth+", Invert: true}, Target: Return}, "! -i veth+ -j RETURN"},
		{"fragment", IPv4, TableFilter, Rule{Fragment: FragmentOnly, Target: Drop}, "-f -j DROP"},
		{"no-target", IPv4, TableFilter, Rule{Src: Addr{Prefix: pfx("198.51.100.0/24")}}, "-s 198.51.100.0/24"},
		{"comment-bare", IPv4, TableFilter, Rule{Matches: []Match{Comment("svc_a-1")}, Target: Accept},
			"-m comment --comment svc_a-1 -j ACCEPT"},
		{"comment-quoted", IPv4, TableFilter, Rule{Matches: []Match{Comment(`ns/svc:http "x" \y 'z'`)}, Target: Accept},
			`-m comment --comment "ns/svc:http \"x\" \\y \'z\'" -j ACCEPT`},
		{"comment-option", IPv4, TableFilter, Rule{Matches: []Match{Comment("-j"), Comment("--comment")}, Target: Accept},
			"-m comment --comment -j -m comment --comment --comment -j ACCEPT"},
		{"comment-empty", IPv4, TableFilter, Rule{Matches: []Match{Comment("")}, Target: Accept}, `-m comment --comment "" -j ACCEPT`},
		{"comment-utf8", IPv4, TableFilter, Rule{Matches: []Match{Comment("ünï")}, Target: Accept}, `-m comment --comment "ünï" -j ACCEPT`},
		{"dport", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{Dst: Port(80)}}, Target: Accept},
			"-p tcp -m tcp --dport 80 -j ACCEPT"},
		{"sport-dport", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{Dst: Port(20), Src: Port(10)}}, Target: Accept},
			"-p tcp -m tcp --sport 10 --dport 20 -j ACCEPT"},
		{"udp-range-invert", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: ProtoUDP}, Matches: []Match{Ports{Src: PortRange{1000, 2000}, DstInvert: true, Dst: Port(53)}}, Target: Return},
			"-p udp -m udp --sport 1000:2000 ! --dport 53 -j RETURN"},
		{"sctp", IPv6, TableFilter, Rule{Proto: ProtoMatch{Proto: ProtoSCTP}, Matches: []Match{Ports{Dst: PortRange{0, 1023}}}, Target: Accept},
			"-p sctp -m sctp --dport 0:1023 -j ACCEPT"},
		{"statistic", IPv4, TableNAT, Rule{Matches: []Match{Statistic{Probability: ProbabilityOf(1.0 / 3)}}, Target: Return},
			"-m statistic --mode random --probability 0.33333333349 -j RETURN"},
		{"statistic-tie", IPv4, TableNAT, Rule{Matches: []Match{Statistic{Probability: 1 << 19}}, Target: Return},
			"-m statistic --mode random --probability 0.00024414062 -j RETURN"},
		{"statistic-one", IPv4, TableNAT, Rule{Matches: []Match{Statistic{Probability: ProbabilityOne}}, Target: Return},
			"-m statistic --mode random --probability 1.00000000000 -j RETURN"},
		{"mark-mask", IPv4, TableNAT, Rule{Matches: []Match{MarkMatch{Value: 0x4000, Mask: 0x4000}}, Target: Return},
			"-m mark --mark 0x4000/0x4000 -j RETURN"},
		{"mark-exact-invert", IPv4, TableNAT, Rule{Matches: []Match{MarkMatch{Value: 0, Mask: 0xffffffff, Invert: true}}, Target: Return},
			"-m mark ! --mark 0x0 -j RETURN"},
		{"addrtype-dst", IPv4, TableNAT, Rule{Matches: []Match{AddrType{Dst: AddrLocal}}, Target: Return},
			"-m addrtype --dst-type LOCAL -j RETURN"},
		{"addrtype-both", IPv4, TableNAT, Rule{Matches: []Match{AddrType{Dst: AddrLocal, DstInvert: true, Src: AddrUnicast, SrcInvert: true}}, Target: Return},
			"-m addrtype ! --src-type UNICAST ! --dst-type LOCAL -j RETURN"},
		{"addrtype-limit", IPv4, TableNAT, Rule{Matches: []Match{AddrType{Src: AddrLocal | AddrBroadcast, LimitIfaceIn: true}}, Target: Return},
			"-m addrtype --src-type LOCAL,BROADCAST --limit-iface-in -j RETURN"},
		{"recent-set", IPv4, TableNAT, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "LBK-SEP-X"}}, Target: Return},
			"-m recent --set --name LBK-SEP-X --mask 255.255.255.255 --rsource -j RETURN"},
		{"recent-rcheck", IPv4, TableNAT, Rule{Matches: []Match{Recent{Mode: RecentCheck, Seconds: 10800, Reap: true, Name: "abc"}}, Target: Return},
			"-m recent --rcheck --seconds 10800 --reap --name abc --mask 255.255.255.255 --rsource -j RETURN"},
		{"recent-update", IPv4, TableNAT, Rule{Matches: []Match{Recent{Invert: true, Mode: RecentUpdate, Seconds: 5, HitCount: 2, RTTL: true, Name: "b", Mask: addr("255.255.255.0"), Dest: true}}, Target: Return},
			"-m recent ! --update --seconds 5 --hitcount 2 --rttl --name b --mask 255.255.255.0 --rdest -j RETURN"},
		{"recent-v6", IPv6, TableNAT, Rule{Matches: []Match{Recent{Mode: RecentRemove, Name: "x", Mask: addr("ffff:ffff::")}}, Target: Return},
			"-m recent --remove --name x --mask ffff:ffff:: --rsource -j RETURN"},
		{"recent-v6-full", IPv6, TableNAT, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "x"}}, Target: Return},
			"-m recent --set --name x --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j RETURN"},
		{"conntrack", IPv4, TableFilter, Rule{Matches: []Match{Conntrack{States: CTNew | CTEstablished}}, Target: Accept},
			"-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT"},
		{"conntrack-all-invert", IPv4, TableFilter, Rule{Matches: []Match{Conntrack{States: CTInvalid | CTNew | CTRelated | CTEstablished | CTUntracked | CTSNAT | CTDNAT, Invert: true}}, Target: Accept},
			"-m conntrack ! --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED,SNAT,DNAT -j ACCEPT"},
		{"match-order", IPv4, TableNAT, Rule{Dst: Addr{Prefix: pfx("192.0.2.1/32")}, Proto: tcp,
			Matches: []Match{Comment("first"), Ports{Dst: Port(80)}, MarkMatch{Value: 1, Mask: 0xffffffff}}, Target: Jump{Chain: "LBK-SVC-X"}},
			"-d 192.0.2.1/32 -p tcp -m comment --comment first -m tcp --dport 80 -m mark --mark 0x1 -j LBK-SVC-X"},
		{"raw-match", IPv4, TableFilter, Rule{Matches: []Match{RawMatch{Module: "limit", Spec: "--limit 5/sec --limit-burst 7"}}, Target: Accept},
			"-m limit --limit 5/sec --limit-burst 7 -j ACCEPT"},
		{"goto", IPv4, TableFilter, Rule{Target: Goto{Chain: "LBK-X"}}, "-g LBK-X"},
		{"reject-default", IPv4, TableFilter, Rule{Target: Reject{}}, "-j REJECT --reject-with icmp-port-unreachable"},
		{"reject-default-v6", IPv6, TableFilter, Rule{Target: Reject{}}, "-j REJECT --reject-with icmp6-port-unreachable"},
		{"reject-admin", IPv4, TableFilter, Rule{Target: Reject{With: RejectAdminProhibited}}, "-j REJECT --reject-with icmp-admin-prohibited"},
		{"reject-admin-v6", IPv6, TableFilter, Rule{Target: Reject{With: RejectAdminProhibited}}, "-j REJECT --reject-with icmp6-adm-prohibited"},
		{"reject-noroute-v6", IPv6, TableFilter, Rule{Target: Reject{With: RejectNoRoute}}, "-j REJECT --reject-with icmp6-no-route"},
		{"reject-tcp-reset", IPv4, TableFilter, Rule{Proto: tcp, Target: Reject{With: RejectTCPReset}}, "-p tcp -j REJECT --reject-with tcp-reset"},
		{"dnat", IPv4, TableNAT, Rule{Proto: tcp, Target: DNAT{Addr: addr("192.0.2.10"), Ports: Port(8080)}}, "-p tcp -j DNAT --to-destination 192.0.2.10:8080"},
		{"dnat-addr-only", IPv4, TableNAT, Rule{Target: DNAT{Addr: addr("192.0.2.10")}}, "-j DNAT --to-destination 192.0.2.10"},
		{"dnat-ranges", IPv4, TableNAT, Rule{Proto: tcp, Target: DNAT{Addr: addr("192.0.2.1"), AddrLast: addr("192.0.2.3"), Ports: PortRange{80, 90}, Random: true, Persistent: true}},
			"-p tcp -j DNAT --to-destination 192.0.2.1-192.0.2.3:80-90 --random --persistent"},
		{"dnat-v6", IPv6, TableNAT, Rule{Proto: tcp, Target: DNAT{Addr: addr("2001:db8::1"), Ports: Port(80)}}, "-p tcp -j DNAT --to-destination [2001:db8::1]:80"},
		{"dnat-v6-noport", IPv6, TableNAT, Rule{Target: DNAT{Addr: addr("2001:db8::1")}}, "-j DNAT --to-destination 2001:db8::1"},
		{"dnat-v6-range", IPv6, TableNAT, Rule{Proto: tcp, Target: DNAT{Addr: addr("2001:db8::1"), AddrLast: addr("2001:db8::5"), Ports: PortRange{80, 90}}},
			"-p tcp -j DNAT --to-destination [2001:db8::1-2001:db8::5]:80-90"},
		{"snat", IPv4, TableNAT, Rule{Proto: tcp, Target: SNAT{Addr: addr("192.0.2.1"), AddrLast: addr("192.0.2.5"), Ports: PortRange{1000, 2000}}},
			"-p tcp -j SNAT --to-source 192.0.2.1-192.0.2.5:1000-2000"},
		{"snat-v6-flags", IPv6, TableNAT, Rule{Proto: tcp, Target: SNAT{Addr: addr("2001:db8::1"), Ports: Port(1000), Persistent: true, RandomFully: true, Random: true}},
			"-p tcp -j SNAT --to-source [2001:db8::1]:1000 --random --random-fully --persistent"},
		{"masquerade", IPv4, TableNAT, Rule{Target: Masquerade{RandomFully: true}}, "-j MASQUERADE --random-fully"},
		{"masquerade-ports", IPv4, TableNAT, Rule{Proto: ProtoMatch{Proto: ProtoUDP}, Target: Masquerade{Ports: PortRange{1000, 2000}, Random: true, RandomFully: true}},
			"-p udp -j MASQUERADE --to-ports 1000-2000 --random --random-fully"},
		{"mark-or", IPv4, TableNAT, Rule{Target: OrMark(0x4000)}, "-j MARK --set-xmark 0x4000/0x4000"},
		{"mark-and", IPv4, TableMangle, Rule{Target: AndMark(0x10)}, "-j MARK --set-xmark 0x0/0xffffffef"},
		{"mark-xor", IPv4, TableMangle, Rule{Target: XorMark(0x10)}, "-j MARK --set-xmark 0x10/0x0"},
		{"mark-set", IPv4, TableMangle, Rule{Target: SetMark(0x10, 0xffffffff)}, "-j MARK --set-xmark 0x10/0xffffffff"},
		{"raw-target", IPv4, TableFilter, Rule{Target: RawTarget{Name: "LOG", Spec: `--log-prefix "lbk: " --log-level 6`}}, `-j LOG --log-prefix "lbk: " --log-level 6`},
		{"v6-addrs", IPv6, TableFilter, Rule{Src: Addr{Prefix: pfx("2001:db8::/32")}, Dst: Addr{Prefix: pfx("2001:db8::1/128")}, Proto: ProtoMatch{Proto: ProtoICMPv6}, Target: Accept},
			"-s 2001:db8::/32 -d 2001:db8::1/128 -p ipv6-icmp -j ACCEPT"},
	}
}

func TestRenderRule(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuffer(tc.family)
			if err := b.StartTable(tc.table); err != nil {
				t.Fatal(err)
			}
			if err := b.AppendRule("LBK-T", &tc.rule); err != nil {
				t.Fatalf("AppendRule: %v", err)
			}
			want := "*" + string(tc.table) + "\n-A LBK-T " + tc.want + "\n"
			if got := b.String(); got != want {
				t.Errorf("rendered\n%s\nwant\n%s", got, want)
			}
			// The save text parses back to the same typed rule.
			chain, got, err := ParseRule(tc.family, "-A LBK-T "+tc.want)
			if err != nil {
				t.Fatalf("ParseRule: %v", err)
			}
			if chain != "LBK-T" || !reflect.DeepEqual(got, tc.rule) {
				t.Errorf("parsed %s %#v\nwant %#v", chain, got, tc.rule)
			}
			// Args are the arguments iptables would see.
			args, err := tc.rule.Args(tc.family)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(args, " ") == "" && tc.want != "" {
				t.Errorf("no args")
			}
		})
	}
}

func TestArgsUnquote(t *testing.T) {
	r := Rule{Matches: []Match{Comment(`a "b" \c`)}, Target: Jump{Chain: "LBK-X"}}
	args, err := r.Args(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-m", "comment", "--comment", `a "b" \c`, "-j", "LBK-X"}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("Args = %q, want %q", args, want)
	}
}

func TestRuleValidation(t *testing.T) {
	tcp := ProtoMatch{Proto: ProtoTCP}
	cases := []struct {
		name   string
		family Family
		table  Table
		rule   Rule
		field  string // wanted ValidationError.Field
		is     error  // wanted errors.Is target besides ErrInvalid
	}{
		{"unmasked-prefix", IPv4, TableFilter, Rule{Src: Addr{Prefix: pfx("10.1.2.3/8")}}, "src", nil},
		{"zero-prefix", IPv4, TableFilter, Rule{Src: Addr{Prefix: pfx("0.0.0.0/0")}}, "src", nil},
		{"wrong-family", IPv4, TableFilter, Rule{Dst: Addr{Prefix: pfx("2001:db8::/32")}}, "dst", nil},
		{"mapped-v6", IPv6, TableFilter, Rule{Dst: Addr{Prefix: pfx("::ffff:192.0.2.1/128")}}, "dst", nil},
		{"invert-nothing", IPv4, TableFilter, Rule{Src: Addr{Invert: true}}, "src", nil},
		{"iface-long", IPv4, TableFilter, Rule{In: Iface{Name: "abcdefghijklmnop"}}, "in", nil},
		{"iface-quote", IPv4, TableFilter, Rule{In: Iface{Name: `eth"0`}}, "in", nil},
		{"iface-space", IPv4, TableFilter, Rule{Out: Iface{Name: "eth 0"}}, "out", nil},
		{"iface-plus-mid", IPv4, TableFilter, Rule{Out: Iface{Name: "et+h"}}, "out", nil},
		{"iface-all", IPv4, TableFilter, Rule{Out: Iface{Name: "+"}}, "out", nil},
		{"proto-all", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: "all"}}, "proto", nil},
		{"proto-space", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: "tcp -j DROP"}}, "proto", nil},
		{"fragment-v6", IPv6, TableFilter, Rule{Fragment: FragmentOnly}, "fragment", nil},
		{"comment-newline", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\n-A INPUT -j DROP")}}, "matches[0].comment", nil},
		{"comment-cr", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\rb")}}, "matches[0].comment", nil},
		{"comment-tab", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\tb")}}, "matches[0].comment", nil},
		{"comment-nul", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\x00b")}}, "matches[0].comment", nil},
		{"comment-c1", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\u0085b")}}, "matches[0].comment", nil},
		{"comment-bad-utf8", IPv4, TableFilter, Rule{Matches: []Match{Comment("a\xffb")}}, "matches[0].comment", nil},
		{"comment-long", IPv4, TableFilter, Rule{Matches: []Match{Comment(strings.Repeat("x", 256))}}, "matches[0].comment", nil},
		{"ports-no-proto", IPv4, TableFilter, Rule{Matches: []Match{Ports{Dst: Port(80)}}}, "matches[0]", nil},
		{"ports-icmp", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: ProtoICMP}, Matches: []Match{Ports{Dst: Port(80)}}}, "matches[0]", nil},
		{"ports-empty", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{}}}, "matches[0]", nil},
		{"ports-reversed", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{Dst: PortRange{90, 80}}}}, "matches[0].dst", nil},
		{"ports-all", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{Dst: PortRange{0, 65535}}}}, "matches[0].dst", nil},
		{"ports-twice", IPv4, TableFilter, Rule{Proto: tcp, Matches: []Match{Ports{Dst: Port(1)}, Ports{Src: Port(2)}}}, "matches[1]", nil},
		{"probability-big", IPv4, TableFilter, Rule{Matches: []Match{Statistic{Probability: ProbabilityOne + 1}}}, "matches[0].probability", nil},
		{"mark-outside", IPv4, TableFilter, Rule{Matches: []Match{MarkMatch{Value: 0x4000}}}, "matches[0]", nil},
		{"addrtype-empty", IPv4, TableFilter, Rule{Matches: []Match{AddrType{}}}, "matches[0]", nil},
		{"addrtype-both-limits", IPv4, TableFilter, Rule{Matches: []Match{AddrType{Dst: AddrLocal, LimitIfaceIn: true, LimitIfaceOut: true}}}, "matches[0]", nil},
		{"recent-no-mode", IPv4, TableFilter, Rule{Matches: []Match{Recent{Name: "a"}}}, "matches[0].mode", nil},
		{"recent-no-name", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentSet}}}, "matches[0].name", nil},
		{"recent-slash", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "a/b"}}}, "matches[0].name", nil},
		{"recent-set-seconds", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "a", Seconds: 5}}}, "matches[0]", nil},
		{"recent-reap-alone", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentCheck, Name: "a", Reap: true}}}, "matches[0].reap", nil},
		{"recent-full-mask", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "a", Mask: addr("255.255.255.255")}}}, "matches[0].mask", nil},
		{"recent-v6-mask-on-v4", IPv4, TableFilter, Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "a", Mask: addr("ffff::")}}}, "matches[0].mask", nil},
		{"conntrack-empty", IPv4, TableFilter, Rule{Matches: []Match{Conntrack{}}}, "matches[0].states", nil},
		{"raw-newline", IPv4, TableFilter, Rule{Matches: []Match{RawMatch{Module: "limit", Spec: "--limit 5\n-A INPUT"}}}, "matches[0].spec", nil},
		{"raw-quote", IPv4, TableFilter, Rule{Matches: []Match{RawMatch{Module: "limit", Spec: `--x "open`}}}, "matches[0].spec", nil},
		{"raw-module", IPv4, TableFilter, Rule{Matches: []Match{RawMatch{Module: "a b"}}}, "matches[0].module", nil},
		{"nil-match", IPv4, TableFilter, Rule{Matches: []Match{nil}}, "matches[0]", nil},
		{"jump-builtin", IPv4, TableFilter, Rule{Target: Jump{Chain: ChainInput}}, "target.chain", ErrChainNameBuiltin},
		{"jump-long", IPv4, TableFilter, Rule{Target: Jump{Chain: "LBK-0123456789012345678901234"}}, "target.chain", ErrChainNameTooLong},
		{"goto-bad", IPv4, TableFilter, Rule{Target: Goto{Chain: "a\nb"}}, "target.chain", ErrChainNameInvalid},
		{"verdict-bad", IPv4, TableFilter, Rule{Target: Verdict("QUEUE")}, "target", nil},
		{"reject-v6-only", IPv4, TableFilter, Rule{Target: Reject{With: RejectNoRoute}}, "target.with", nil},
		{"reject-v4-only", IPv6, TableFilter, Rule{Target: Reject{With: RejectHostProhibited}}, "target.with", nil},
		{"reject-reset-udp", IPv4, TableFilter, Rule{Proto: ProtoMatch{Proto: ProtoUDP}, Target: Reject{With: RejectTCPReset}}, "target.with", nil},
		{"dnat-filter", IPv4, TableFilter, Rule{Target: DNAT{Addr: addr("192.0.2.1")}}, "target", nil},
		{"dnat-no-addr", IPv4, TableNAT, Rule{Target: DNAT{}}, "target.addr", nil},
		{"dnat-port-no-proto", IPv4, TableNAT, Rule{Target: DNAT{Addr: addr("192.0.2.1"), Ports: Port(80)}}, "target.ports", nil},
		{"dnat-v6-addr-on-v4", IPv4, TableNAT, Rule{Target: DNAT{Addr: addr("2001:db8::1")}}, "target.addr", nil},
		{"dnat-last-below", IPv4, TableNAT, Rule{Target: DNAT{Addr: addr("192.0.2.5"), AddrLast: addr("192.0.2.1")}}, "target.addr_last", nil},
		{"snat-port-zero", IPv4, TableNAT, Rule{Proto: tcp, Target: SNAT{Addr: addr("192.0.2.5"), Ports: PortRange{0, 5}}}, "target.ports", nil},
		{"masq-filter", IPv4, TableFilter, Rule{Target: Masquerade{}}, "target", nil},
		{"raw-target-newline", IPv4, TableFilter, Rule{Target: RawTarget{Name: "LOG", Spec: "--log-prefix x\nCOMMIT"}}, "target.spec", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuffer(tc.family)
			if err := b.StartTable(tc.table); err != nil {
				t.Fatal(err)
			}
			before := b.String()
			err := b.AppendRule("LBK-T", &tc.rule)
			if err == nil {
				t.Fatalf("AppendRule accepted %q", b.String())
			}
			if b.String() != before {
				t.Errorf("buffer changed on error: %q", b.String())
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v (%T) is not a *ValidationError wrapping ErrInvalid", err, err)
			}
			if ve.Field != tc.field {
				t.Errorf("Field = %q, want %q (%v)", ve.Field, tc.field, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestRuleLineLimits(t *testing.T) {
	var ms []Match
	for i := 0; i < 45; i++ {
		ms = append(ms, Comment("c"))
	}
	r := Rule{Matches: ms, Target: Accept} // 45*4 + 4 arguments
	b := NewBuffer(IPv4)
	_ = b.StartTable(TableFilter)
	err := b.AppendRule("LBK-T", &r)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "arguments") {
		t.Errorf("too many arguments: err = %v", err)
	}
	ms = nil
	for i := 0; i < 40; i++ {
		ms = append(ms, Comment(strings.Repeat("y", 250)))
	}
	r = Rule{Matches: ms, Target: Accept}
	err = b.AppendRule("LBK-T", &r)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("too long: err = %v", err)
	}
	// Quoted spaces are not argument separators.
	ms = nil
	for i := 0; i < 30; i++ {
		ms = append(ms, Comment("a b c d e f g h"))
	}
	r = Rule{Matches: ms, Target: Accept}
	if err := b.AppendRule("LBK-T", &r); err != nil {
		t.Errorf("30 comments with spaces: %v", err)
	}
}

func TestProbability(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want Probability
	}{{0, 0}, {-1, 0}, {1, ProbabilityOne}, {2, ProbabilityOne}, {0.5, 1 << 30}, {1.0 / 3, 715827883}} {
		if got := ProbabilityOf(c.in); got != c.want {
			t.Errorf("ProbabilityOf(%v) = %d, want %d", c.in, got, c.want)
		}
	}
	// The integer formatting is printf's %.11f (round half to even), which
	// strconv also implements: compare on a sweep, the ties included.
	for p := Probability(0); p <= ProbabilityOne; p += 9973 {
		for _, q := range []Probability{p, p&^(1<<19-1) | 1<<19} {
			if q > ProbabilityOne {
				continue
			}
			if got, want := q.String(), strconv.FormatFloat(q.Float64(), 'f', 11, 64); got != want {
				t.Fatalf("Probability(%d) = %s, want %s", q, got, want)
			}
		}
	}
	// Every printed value parses back to the same integer.
	for p := Probability(0); p <= ProbabilityOne; p += 104729 {
		m, ok := parseStatistic([]token{{s: "--mode"}, {s: "random"}, {s: "--probability"}, {s: p.String()}})
		if !ok || m.(Statistic).Probability != p {
			t.Fatalf("probability %d printed %s parsed %v", p, p, m)
		}
	}
}

func TestRuleString(t *testing.T) {
	r := Rule{Proto: ProtoMatch{Proto: ProtoTCP}, Dst: Addr{Prefix: pfx("2001:db8::1/128")}, Target: Accept}
	if got, want := r.String(), "-d 2001:db8::1/128 -p tcp -j ACCEPT"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	bad := Rule{Target: Verdict("NOPE")}
	if !strings.HasPrefix(bad.String(), "<") {
		t.Errorf("String of invalid rule = %q", bad.String())
	}
}
