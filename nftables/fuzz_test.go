package nftables

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func mustAttrs(attrs []netlink.Attribute) []byte {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		panic(err)
	}
	return b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// seedMessages returns well-formed kernel messages (family header and
// attributes) of each kind the reader parses.
func seedMessages() [][]byte {
	hdr := []byte{unix.NFPROTO_INET, 0, 0, 0}
	chain := append(append([]byte(nil), hdr...), mustAttrs([]netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr("t")},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr("c")},
		{Type: unix.NFTA_CHAIN_HOOK | unix.NLA_F_NESTED, Data: mustAttrs([]netlink.Attribute{
			{Type: unix.NFTA_HOOK_HOOKNUM, Data: be32(0)}, {Type: unix.NFTA_HOOK_PRIORITY, Data: be32(0xffffff9c)}})},
		{Type: unix.NFTA_CHAIN_POLICY, Data: be32(1)},
		{Type: unix.NFTA_CHAIN_TYPE, Data: cstr("nat")},
	})...)
	set := append(append([]byte(nil), hdr...), mustAttrs([]netlink.Attribute{
		{Type: unix.NFTA_SET_TABLE, Data: cstr("t")},
		{Type: unix.NFTA_SET_NAME, Data: cstr("s")},
		{Type: unix.NFTA_SET_FLAGS, Data: be32(unix.NFT_SET_MAP | unix.NFT_SET_TIMEOUT)},
		{Type: unix.NFTA_SET_KEY_TYPE, Data: be32(7<<12 | 12<<6 | 13)},
		{Type: unix.NFTA_SET_DATA_TYPE, Data: be32(unix.NFT_DATA_VERDICT)},
		{Type: unix.NFTA_SET_TIMEOUT, Data: binary.BigEndian.AppendUint64(nil, 1000)},
		{Type: unix.NFTA_SET_USERDATA, Data: []byte{7, 3, 'h', 'i', 0}},
	})...)
	elem := mustAttrs([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: mustAttrs([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: []byte{192, 0, 2, 1}}})},
		{Type: unix.NFTA_SET_ELEM_DATA | unix.NLA_F_NESTED, Data: mustAttrs([]netlink.Attribute{{Type: unix.NFTA_DATA_VERDICT | unix.NLA_F_NESTED,
			Data: mustAttrs([]netlink.Attribute{{Type: unix.NFTA_VERDICT_CODE, Data: be32(uint32(0xfffffffc))}, {Type: unix.NFTA_VERDICT_CHAIN, Data: cstr("c")}})}})},
		{Type: unix.NFTA_SET_ELEM_FLAGS, Data: be32(1)},
		{Type: unix.NFTA_SET_ELEM_USERDATA, Data: []byte{0, 2, 'x', 0}},
	})
	elems := append(append([]byte(nil), hdr...), mustAttrs([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: mustAttrs([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: elem}})},
	})...)
	var exprs []netlink.Attribute
	for _, e := range []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{6}},
		&expr.Numgen{Register: 1, Modulus: 3, Type: unix.NFT_NG_RANDOM}, &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "m"},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: 2, RegAddrMin: 1, RegProtoMin: 9},
	} {
		b, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			panic(err)
		}
		exprs = append(exprs, netlink.Attribute{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: b})
	}
	rule := append(append([]byte(nil), hdr...), mustAttrs([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: cstr("t")},
		{Type: unix.NFTA_RULE_CHAIN, Data: cstr("c")},
		{Type: unix.NFTA_RULE_EXPRESSIONS | unix.NLA_F_NESTED, Data: mustAttrs(exprs)},
		{Type: unix.NFTA_RULE_USERDATA, Data: commentUserdata("hello")},
	})...)
	return [][]byte{chain, set, elems, rule}
}

// FuzzParseKernelMessages feeds arbitrary bytes to every parser of kernel
// messages and decodes what parses: nothing may panic, whatever a foreign
// program left in the table.
func FuzzParseKernelMessages(f *testing.F) {
	for _, s := range seedMessages() {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = parseChain(b)
		if s, _, err := parseSet(b); err == nil && s.Name == "" && len(s.Key) == 0 {
			t.Fatalf("parseSet accepted a set without key")
		}
		if raw, err := parseElems(b); err == nil {
			for _, ts := range [][]Type{{TypeIPv4Addr}, {TypeIPv4Addr, TypeInetProto, TypeInetService}, {TypeInteger}} {
				_, _ = decodeElems(&Set{Name: "s", Key: ts, Data: []Type{TypeVerdict}}, raw)
				_, _ = decodeElems(&Set{Name: "s", Key: ts, Interval: true}, raw)
			}
		}
		if _, _, r, err := parseRule(unix.NFPROTO_INET, b); err == nil {
			d := &decoder{family: FamilyINet, sets: func(string) (*Set, bool) { return nil, false }}
			rule := d.decodeRule(r.exprs, r.unknown, r.udata)
			_ = rule.String()
		}
	})
}

// FuzzUdataString checks the bounds-checked userdata reader.
func FuzzUdataString(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 0}, byte(0))
	f.Add([]byte{7, 200, 'x'}, byte(7))
	f.Fuzz(func(t *testing.T, b []byte, typ byte) {
		s, ok := udataString(b, typ)
		if ok && len(s) > len(b) {
			t.Fatalf("string %q longer than its input", s)
		}
	})
}

// FuzzNames checks that whatever the validator accepts as a name or a
// comment cannot break out of an nft script.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"svc-a", "a;b", "x\"y", "snat", "a b", "service-ULMVA6XW-ns/svc/tcp/p80", "é", "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkName("n", "chain", s) == nil {
			if strings.ContainsAny(s, " \t\n\"';{}#@$\\") || nftKeywords[s] || s == "" {
				t.Fatalf("accepted name %q", s)
			}
		}
		if checkComment("c", s) == nil && strings.ContainsAny(s, "\"\n\r\\") {
			t.Fatalf("accepted comment %q", s)
		}
	})
}

// ruleFromBytes builds a rule from fuzz input: a few statements chosen and
// parameterised by the bytes. It returns nil when the input runs out.
func ruleFromBytes(b []byte) []Stmt {
	var out []Stmt
	next := func() (byte, bool) {
		if len(b) == 0 {
			return 0, false
		}
		v := b[0]
		b = b[1:]
		return v, true
	}
	for len(out) < 5 {
		op, ok := next()
		if !ok {
			break
		}
		v, _ := next()
		w, _ := next()
		addr4 := netip.AddrFrom4([4]byte{192, 0, 2, v})
		addr6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: v})
		protos := []uint8{tcp, udp, sctp}
		switch op % 16 {
		case 0:
			out = append(out, Match{Field: FieldIPSaddr, Neg: w&1 == 1, Values: []Value{Prefix(netip.PrefixFrom(addr4, int(w%33)))}})
		case 1:
			out = append(out, Match{Field: FieldIP6Daddr, Neg: w&1 == 1, Values: []Value{Prefix(netip.PrefixFrom(addr6, int(w)%129))}})
		case 2:
			out = append(out, Match{Field: FieldL4Proto, Neg: w&1 == 1, Values: []Value{Proto(protos[int(v)%3])}})
		case 3:
			out = append(out, Match{Field: []Field{FieldTHDport, FieldTCPDport, FieldUDPSport, FieldSCTPDport}[v%4], Values: []Value{Port(uint16(w) + 1)}})
		case 4:
			out = append(out, NFProtoMatch{Family: []Family{FamilyIPv4, FamilyIPv6}[v%2]})
		case 5:
			out = append(out, MarkMatch{Mask: uint32(v), Value: uint32(v & w)})
		case 6:
			out = append(out, SetMark{Op: MarkOp(v % 4), Value: uint32(w)})
		case 7:
			out = append(out, CtState{States: []CtStateBits{CtNew, CtEstablished | CtRelated, CtInvalid}[v%3], Neg: v%3 != 1 && w&1 == 1})
		case 8:
			if w&2 == 2 {
				out = append(out, CtStatus{Bits: []CtStatusBits{CtStatusDNAT, CtStatusSNAT, CtStatusDNAT | CtStatusSNAT}[v%3]})
				continue
			}
			out = append(out, FibLocal{Neg: w&1 == 1, Source: w&4 == 4})
		case 9:
			out = append(out, Counter{})
		case 10:
			out = append(out, Match{Field: FieldIPDaddr, Values: []Value{Addr(addr4), Addr(netip.AddrFrom4([4]byte{198, 51, 100, w}))}})
		case 11:
			out = append(out, Lookup{Fields: []Field{FieldIPSaddr, FieldL4Proto, FieldTHDport}, Set: "s3", Neg: w&1 == 1})
		case 12:
			out = append(out, Match{Field: FieldIifname, Neg: w&1 == 1, Values: []Value{Ifname([]string{"eth0", "veth*", "lo"}[v%3])}})
		case 13:
			out = append(out, DNATMap{Family: FamilyIPv4, Key: JHash{Fields: []Field{FieldIPSaddr, FieldTHSport}, Mod: uint32(v) + 1, Seed: uint32(w) + 1}, Map: "m4"})
			return out
		case 14:
			out = append(out, Reject{Type: RejectType(v % 5), Code: []uint8{0, 1, 3}[w%3]})
			return out
		case 15:
			out = append(out, VMap{Key: Numgen{Mod: uint32(v) + 1, Offset: uint32(w)}, Map: "vm"})
			return out
		}
	}
	return out
}

// FuzzRuleRoundTrip compiles fuzz-built rules to expressions, decodes them
// back and compiles again: the expressions must be identical (the decoder
// is the exact inverse of the compiler on its own output), and Canonical
// must be a fixed point.
func FuzzRuleRoundTrip(f *testing.F) {
	f.Add([]byte{2, 0, 0, 3, 1, 80, 13, 5, 6})
	f.Add([]byte{4, 0, 0, 0, 10, 24, 7, 0, 1, 14, 3, 1})
	f.Add([]byte{1, 9, 48, 12, 1, 0, 15, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		stmts := ruleFromBytes(b)
		if len(stmts) == 0 {
			return
		}
		rs := &Ruleset{
			Sets: []Set{
				{Name: "s3", Key: []Type{TypeIPv4Addr, TypeInetProto, TypeInetService}},
				{Name: "m4", Key: []Type{TypeInteger}, Data: []Type{TypeIPv4Addr, TypeInetService}},
				{Name: "vm", Key: []Type{TypeInteger}, Data: []Type{TypeVerdict}},
			},
			Chains: []Chain{{Name: "c", Rules: []Rule{R(stmts...)}}},
		}
		if Validate(testTable, rs) != nil {
			return
		}
		c1, err := Canonical(testTable, rs)
		if err != nil {
			t.Fatalf("Canonical(%s): %v", R(stmts...), err)
		}
		c2, err := Canonical(testTable, c1)
		if err != nil {
			t.Fatalf("Canonical of canonical %s: %v", c1.Chains[0].Rules[0], err)
		}
		r1, r2 := c1.Chains[0].Rules[0].String(), c2.Chains[0].Rules[0].String()
		if r1 != r2 {
			t.Fatalf("Canonical is not a fixed point: %s -> %s -> %s", R(stmts...), r1, r2)
		}
		if strings.Contains(r1, "#unknown") {
			t.Fatalf("the decoder does not understand the compiler's output for %s: %s", R(stmts...), r1)
		}
		known := setIndex(rs)
		comp := newCompiler(testTable, known, &recorder{})
		e0, _, err := comp.compileRule(&rs.Chains[0].Rules[0])
		if err != nil {
			t.Fatal(err)
		}
		e1, _, err := comp.compileRule(&c1.Chains[0].Rules[0])
		if err != nil {
			t.Fatal(err)
		}
		e2, _, err := comp.compileRule(&c2.Chains[0].Rules[0])
		if err != nil {
			t.Fatal(err)
		}
		// The canonical form compiles stably, and to a subset of what the
		// original compiles to: canonicalisation only folds guards and drops
		// repeated matches, it never adds or changes a test.
		if !sameExprs(e1, e2) && !sameMultiset(e1, e2) {
			t.Fatalf("canonical %s does not compile stably", r1)
		}
		if !subMultiset(e1, e0) {
			t.Fatalf("canonical %s compiles to expressions that %s does not have", r1, R(stmts...))
		}
	})
}

func marshalAll(es []expr.Any) [][]byte {
	out := make([][]byte, len(es))
	for i, e := range es {
		if l, ok := e.(*expr.Lookup); ok && l.SetID != 0 {
			c := *l
			c.SetID = 0 // anonymous set IDs are per batch
			e = &c
		}
		b, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}

func sameExprs(a, b []expr.Any) bool {
	ma, mb := marshalAll(a), marshalAll(b)
	if len(ma) != len(mb) {
		return false
	}
	for i := range ma {
		if !bytes.Equal(ma[i], mb[i]) {
			return false
		}
	}
	return true
}

// sameMultiset accepts the one legitimate difference between two
// compilations of equivalent rules: guards in another order.
func sameMultiset(a, b []expr.Any) bool {
	return len(a) == len(b) && subMultiset(a, b)
}

// subMultiset reports whether every expression of a occurs in b (as many
// times).
func subMultiset(a, b []expr.Any) bool {
	count := map[string]int{}
	for _, m := range marshalAll(b) {
		count[string(m)]++
	}
	for _, m := range marshalAll(a) {
		if count[string(m)] == 0 {
			return false
		}
		count[string(m)]--
	}
	return true
}
