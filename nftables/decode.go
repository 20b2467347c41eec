package nftables

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"time"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// rawElem is one set element as the kernel holds it, before typing.
type rawElem struct {
	key      []byte
	data     []byte
	verdict  *Verdict
	end      bool // interval end
	timeout  time.Duration
	comment  string
	hasValue bool // data present
}

// setDef is what decoding needs to know about a set: its typed definition.
type setResolver func(name string) (*Set, bool)

// decoder turns expressions of one rule back into statements.
type decoder struct {
	family Family
	sets   setResolver // named and anonymous sets (anonymous ones with elements)
}

type pending struct {
	l4  bool // else nfproto
	val uint8
}

type dstate struct {
	d     *decoder
	ex    []expr.Any
	i     int
	nf    uint8
	l4    uint8
	pend  []pending
	out   []Stmt
	names []string // names of unknown expressions, parallel to ex (nil if known)
}

// decodeRule decodes the expressions of a rule. unknown holds, for each
// expression, the kernel name of an expression google/nftables could not
// parse ("" when parsed).
func (d *decoder) decodeRule(ex []expr.Any, unknown []string, udata []byte) Rule {
	st := &dstate{d: d, ex: ex, names: unknown}
	switch d.family {
	case FamilyIPv4:
		st.nf = unix.NFPROTO_IPV4
	case FamilyIPv6:
		st.nf = unix.NFPROTO_IPV6
	}
	for st.i < len(st.ex) {
		if !st.step() {
			// Could not decode from here: keep the rest as one Unknown.
			st.flushPending()
			st.out = append(st.out, Unknown{Desc: describe(st.ex[st.i:], st.names, st.i)})
			break
		}
	}
	st.flushPending()
	r := Rule{Stmts: st.out}
	if c, ok := udataString(udata, 0); ok { // NFTNL_UDATA_RULE_COMMENT
		r.Comment = c
	}
	return r
}

func describe(ex []expr.Any, names []string, off int) string {
	s := ""
	for i, e := range ex {
		if i > 0 {
			s += ","
		}
		if names != nil && off+i < len(names) && names[off+i] != "" {
			s += names[off+i]
		} else {
			s += fmt.Sprintf("%T", e)
		}
	}
	return s
}

func (st *dstate) peek(k int) expr.Any {
	if st.i+k < len(st.ex) {
		return st.ex[st.i+k]
	}
	return nil
}

// emit appends a statement that needs network family nf and transport
// protocol l4 (0: none). Pending guards it needs are swallowed; the others
// become explicit matches in front of it.
func (st *dstate) emit(s Stmt, nf, l4 uint8) {
	st.settle(nf, l4)
	st.out = append(st.out, s)
}

// flushPending turns every pending guard into an explicit match.
func (st *dstate) flushPending() { st.settle(0, 0) }

func (st *dstate) settle(nf, l4 uint8) {
	for _, p := range st.pend {
		switch {
		case (!p.l4 && st.nf == p.val) || (p.l4 && st.l4 == p.val):
			// Already established: a redundant repeat, dropped.
		case !p.l4 && p.val == nf:
			st.nf = nf
		case p.l4 && p.val == l4:
			st.l4 = l4
		case p.l4:
			st.out = append(st.out, Match{Field: FieldL4Proto, Values: []Value{Proto(p.val)}})
			st.l4 = p.val
		default:
			st.out = append(st.out, NFProtoMatch{Family: nfFamily(p.val)})
			st.nf = p.val
		}
	}
	st.pend = st.pend[:0]
}

func nfFamily(v uint8) Family {
	if v == unix.NFPROTO_IPV6 {
		return FamilyIPv6
	}
	return FamilyIPv4
}

// effective context: a pending guard counts.
func (st *dstate) effNF() uint8 {
	for i := len(st.pend) - 1; i >= 0; i-- {
		if !st.pend[i].l4 {
			return st.pend[i].val
		}
	}
	return st.nf
}

func (st *dstate) effL4() uint8 {
	for i := len(st.pend) - 1; i >= 0; i-- {
		if st.pend[i].l4 {
			return st.pend[i].val
		}
	}
	return st.l4
}

func slotOf(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00), true
	}
	return 0, false
}

// loadedField is a field loaded into a register, with the length loaded.
type loadedField struct {
	f    Field
	slot int
	n    int
}

// fieldOfLoad identifies the field a load expression reads.
func (st *dstate) fieldOfLoad(e expr.Any) (loadedField, bool) {
	switch e := e.(type) {
	case *expr.Meta:
		if e.SourceRegister {
			return loadedField{}, false
		}
		slot, ok := slotOf(e.Register)
		if !ok {
			return loadedField{}, false
		}
		var f Field
		switch e.Key {
		case expr.MetaKeyL4PROTO:
			f = FieldL4Proto
		case expr.MetaKeyMARK:
			f = FieldMark
		case expr.MetaKeyIIFNAME:
			f = FieldIifname
		case expr.MetaKeyOIFNAME:
			f = FieldOifname
		default:
			return loadedField{}, false
		}
		return loadedField{f, slot, f.Type().Len()}, true
	case *expr.Payload:
		if e.OperationType != expr.PayloadLoad {
			return loadedField{}, false
		}
		slot, ok := slotOf(e.DestRegister)
		if !ok {
			return loadedField{}, false
		}
		n := int(e.Len)
		l4 := st.effL4()
		if e.Base == expr.PayloadBaseTransportHeader && l4 != unix.IPPROTO_TCP && l4 != unix.IPPROTO_UDP && l4 != unix.IPPROTO_SCTP {
			l4 = 0 // th
		}
		for f, fi := range fields {
			if fi.meta || fi.base != e.Base || fi.offset != e.Offset || n < 1 || n > fi.typ.Len() {
				continue
			}
			if e.Base == expr.PayloadBaseNetworkHeader && fi.nfproto == st.effNF() {
				return loadedField{f, slot, n}, true
			}
			if e.Base == expr.PayloadBaseTransportHeader && fi.l4proto == l4 && n == fi.typ.Len() {
				return loadedField{f, slot, n}, true
			}
		}
	}
	return loadedField{}, false
}

// needs returns the guards the fields require.
func needs(fs []Field) (nf, l4 uint8) {
	for _, f := range fs {
		fi := f.info()
		if fi.nfproto != 0 {
			nf = fi.nfproto
		}
		if fi.l4proto != 0 {
			l4 = fi.l4proto
		}
	}
	return nf, l4
}

func (st *dstate) step() bool {
	e := st.peek(0)
	if st.names != nil && st.i < len(st.names) && st.names[st.i] != "" {
		return false
	}
	switch e := e.(type) {
	case *expr.Meta:
		if e.Key == expr.MetaKeyNFPROTO && !e.SourceRegister {
			if c, ok := st.peek(1).(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == 1 && c.Register == e.Register {
				st.pend = append(st.pend, pending{val: c.Data[0]})
				st.i += 2
				return true
			}
			return false
		}
		if e.Key == expr.MetaKeyL4PROTO && !e.SourceRegister {
			if c, ok := st.peek(1).(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == 1 && c.Register == e.Register {
				st.pend = append(st.pend, pending{l4: true, val: c.Data[0]})
				st.i += 2
				return true
			}
		}
		if e.Key == expr.MetaKeyMARK && !e.SourceRegister {
			if st.decodeMark() {
				return true
			}
		}
		return st.decodeLoads() || st.decodeHash()
	case *expr.Payload:
		return st.decodeLoads() || st.decodeHash()
	case *expr.Immediate:
		return st.decodeImmediate()
	case *expr.Numgen:
		slot, _ := slotOf(e.Register)
		if slot != 0 {
			return false
		}
		st.i++
		return st.decodeKeyUse(Numgen{Mod: e.Modulus, Offset: e.Offset}, 0, 0)
	case *expr.Fib:
		c, ok := st.peek(1).(*expr.Cmp)
		if ok && e.FlagDADDR != e.FlagSADDR && e.ResultADDRTYPE && len(c.Data) == 4 &&
			binary.NativeEndian.Uint32(c.Data) == unix.RTN_LOCAL {
			st.i += 2
			st.emit(FibLocal{Neg: c.Op == expr.CmpOpNeq, Source: e.FlagSADDR}, 0, 0)
			return true
		}
	case *expr.Ct:
		if c, ok := st.peek(1).(*expr.Cmp); ok && e.Key == expr.CtKeySTATE && !e.SourceRegister && c.Op == expr.CmpOpNeq && len(c.Data) == 4 {
			v := binary.NativeEndian.Uint32(c.Data)
			if v != 0 && v&(v-1) == 0 {
				st.i += 2
				st.emit(CtState{States: CtStateBits(v), Neg: true}, 0, 0)
				return true
			}
		}
		b, ok1 := st.peek(1).(*expr.Bitwise)
		c, ok2 := st.peek(2).(*expr.Cmp)
		if !e.SourceRegister && ok1 && ok2 && len(b.Mask) == 4 && bytes.Equal(b.Xor, u32(0)) && bytes.Equal(c.Data, u32(0)) && c.Op == expr.CmpOpNeq {
			mask := binary.NativeEndian.Uint32(b.Mask)
			switch e.Key {
			case expr.CtKeySTATE:
				st.i += 3
				st.emit(CtState{States: CtStateBits(mask)}, 0, 0)
				return true
			case expr.CtKeySTATUS:
				if mask != 0 && mask&^uint32(CtStatusSNAT|CtStatusDNAT) == 0 {
					st.i += 3
					st.emit(CtStatus{Bits: CtStatusBits(mask)}, 0, 0)
					return true
				}
			}
		}
	case *expr.Counter:
		st.i++
		st.emit(Counter{}, 0, 0)
		return true
	case *expr.Masq:
		if e.ToPorts || e.Random || e.Persistent {
			return false
		}
		st.i++
		st.emit(Masquerade{FullyRandom: e.FullyRandom}, 0, 0)
		return true
	case *expr.Verdict:
		v, ok := fromGVerdict(e)
		if !ok {
			return false
		}
		st.i++
		st.emit(v, 0, 0)
		return true
	case *expr.Reject:
		return st.decodeReject(e)
	}
	return false
}

func fromGVerdict(e *expr.Verdict) (Verdict, bool) {
	switch e.Kind {
	case expr.VerdictAccept:
		return Accept(), true
	case expr.VerdictDrop:
		return Drop(), true
	case expr.VerdictReturn:
		return Return(), true
	case expr.VerdictContinue:
		return Verdict{Kind: VerdictContinue}, true
	case expr.VerdictJump:
		return Jump(e.Chain), true
	case expr.VerdictGoto:
		return Goto(e.Chain), true
	}
	return Verdict{}, false
}

func (st *dstate) decodeReject(e *expr.Reject) bool {
	var s Reject
	var nf, l4 uint8
	switch e.Type {
	case unix.NFT_REJECT_ICMPX_UNREACH:
		s = Reject{Type: RejectICMPX, Code: e.Code}
		if e.Code == ICMPXPortUnreachable && st.effNF() == 0 {
			s = Reject{Type: RejectDefault}
		}
	case unix.NFT_REJECT_TCP_RST:
		s, l4 = Reject{Type: RejectTCPReset}, unix.IPPROTO_TCP
	case unix.NFT_REJECT_ICMP_UNREACH:
		// Plain reject after a match that set the family is port
		// unreachable in that family.
		switch st.effNF() {
		case unix.NFPROTO_IPV4:
			s, nf = Reject{Type: RejectICMP, Code: e.Code}, unix.NFPROTO_IPV4
			if st.nf == unix.NFPROTO_IPV4 && e.Code == 3 {
				s, nf = Reject{Type: RejectDefault}, 0
			}
		case unix.NFPROTO_IPV6:
			s, nf = Reject{Type: RejectICMPv6, Code: e.Code}, unix.NFPROTO_IPV6
			if st.nf == unix.NFPROTO_IPV6 && e.Code == 4 {
				s, nf = Reject{Type: RejectDefault}, 0
			}
		default:
			return false
		}
	default:
		return false
	}
	st.i++
	st.emit(s, nf, l4)
	return true
}

// decodeMark handles `meta mark` compares and `meta mark set`.
func (st *dstate) decodeMark() bool {
	m := st.peek(0).(*expr.Meta)
	if m.Register != unix.NFT_REG_1 {
		return false
	}
	switch n := st.peek(1).(type) {
	case *expr.Cmp:
		if len(n.Data) != 4 || (n.Op != expr.CmpOpEq && n.Op != expr.CmpOpNeq) {
			return false
		}
		st.i += 2
		st.emit(MarkMatch{Value: binary.NativeEndian.Uint32(n.Data), Neg: n.Op == expr.CmpOpNeq}, 0, 0)
		return true
	case *expr.Bitwise:
		if len(n.Mask) != 4 || len(n.Xor) != 4 {
			return false
		}
		mask, xor := binary.NativeEndian.Uint32(n.Mask), binary.NativeEndian.Uint32(n.Xor)
		switch nn := st.peek(2).(type) {
		case *expr.Cmp:
			if xor != 0 || len(nn.Data) != 4 || (nn.Op != expr.CmpOpEq && nn.Op != expr.CmpOpNeq) {
				return false
			}
			st.i += 3
			st.emit(MarkMatch{Mask: mask, Value: binary.NativeEndian.Uint32(nn.Data), Neg: nn.Op == expr.CmpOpNeq}, 0, 0)
			return true
		case *expr.Meta:
			if nn.Key != expr.MetaKeyMARK || !nn.SourceRegister {
				return false
			}
			var s SetMark
			switch {
			case mask == ^xor:
				s = SetMark{Op: MarkOr, Value: xor}
			case mask == 0xffffffff:
				s = SetMark{Op: MarkXor, Value: xor}
			case xor == 0:
				s = SetMark{Op: MarkAnd, Value: mask}
			default:
				return false
			}
			st.i += 3
			st.emit(s, 0, 0)
			return true
		}
	}
	return false
}

func (st *dstate) decodeImmediate() bool {
	im := st.peek(0).(*expr.Immediate)
	slot, ok := slotOf(im.Register)
	if !ok || slot != 0 {
		return false
	}
	// meta mark set <const>
	if ms, ok := st.peek(1).(*expr.Meta); ok && ms.SourceRegister && ms.Key == expr.MetaKeyMARK && len(im.Data) == 4 {
		st.i += 2
		st.emit(SetMark{Op: MarkSet, Value: binary.NativeEndian.Uint32(im.Data)}, 0, 0)
		return true
	}
	addr, ok := netip.AddrFromSlice(im.Data)
	if !ok {
		return false
	}
	k := 1
	var port uint16
	if p, ok := st.peek(1).(*expr.Immediate); ok && p.Register == unix.NFT_REG_2 && len(p.Data) == 2 {
		port = binary.BigEndian.Uint16(p.Data)
		k = 2
	}
	n, ok := st.peek(k).(*expr.NAT)
	if !ok || !plainNAT(n) || n.RegAddrMin != unix.NFT_REG_1 {
		return false
	}
	if n.Family != uint32(nfprotoOf(addr)) {
		return false
	}
	switch {
	case n.Type == expr.NATTypeDestNAT && port != 0 && n.RegProtoMin == unix.NFT_REG_2:
		st.i += k + 1
		st.emit(DNAT{Addr: addr, Port: port}, 0, 0)
	case n.Type == expr.NATTypeDestNAT && port == 0 && n.RegProtoMin == 0:
		st.i += k + 1
		st.emit(DNAT{Addr: addr}, 0, 0)
	case n.Type == expr.NATTypeSourceNAT && port == 0 && n.RegProtoMin == 0:
		st.i += k + 1
		st.emit(SNAT{Addr: addr}, 0, 0)
	default:
		return false
	}
	return true
}

// decodeLoads handles statements that start by loading fields: single
// field compares, prefix matches, anonymous set matches, and concatenated
// keys used by lookups, maps and dynamic sets.
func (st *dstate) decodeLoads() bool {
	start := st.i
	var loads []loadedField
	next := 0
	for {
		lf, ok := st.fieldOfLoad(st.peek(0))
		if !ok || lf.slot != next {
			break
		}
		loads = append(loads, lf)
		next += (lf.n + 3) / 4
		st.i++
	}
	if len(loads) == 0 {
		st.i = start
		return false
	}
	// A hash input starts at slot 4, not 0.
	if loads[0].slot != 0 {
		st.i = start
		return false
	}
	first := loads[0]
	full := first.n == first.f.Type().Len()
	if len(loads) == 1 && !full {
		// prefix of an address (byte aligned)
		c, ok := st.peek(0).(*expr.Cmp)
		if !ok || c.Register != unix.NFT_REG_1 || len(c.Data) != first.n || (c.Op != expr.CmpOpEq && c.Op != expr.CmpOpNeq) {
			st.i = start
			return false
		}
		t := first.f.Type()
		if t != TypeIPv4Addr && t != TypeIPv6Addr {
			st.i = start
			return false
		}
		b := make([]byte, t.Len())
		copy(b, c.Data)
		a, _ := netip.AddrFromSlice(b)
		st.i++
		st.emitField(Match{Field: first.f, Neg: c.Op == expr.CmpOpNeq, Values: []Value{Prefix(netip.PrefixFrom(a, first.n*8))}})
		return true
	}
	for _, l := range loads {
		if l.n != l.f.Type().Len() {
			st.i = start
			return false
		}
	}
	fs := make([]Field, len(loads))
	for i, l := range loads {
		fs[i] = l.f
	}
	if len(loads) == 1 {
		switch n := st.peek(0).(type) {
		case *expr.Cmp:
			if n.Register != unix.NFT_REG_1 || (n.Op != expr.CmpOpEq && n.Op != expr.CmpOpNeq) {
				break
			}
			v, ok := decodeMatchValue(first.f, n.Data)
			if !ok {
				break
			}
			st.i++
			if first.f == FieldMark {
				st.emit(MarkMatch{Value: v.num, Neg: n.Op == expr.CmpOpNeq}, 0, 0)
				return true
			}
			st.emitField(Match{Field: first.f, Neg: n.Op == expr.CmpOpNeq, Values: []Value{v}})
			return true
		case *expr.Bitwise:
			// non byte-aligned prefix
			c, ok := st.peek(1).(*expr.Cmp)
			t := first.f.Type()
			if !ok || (t != TypeIPv4Addr && t != TypeIPv6Addr) || len(n.Mask) != t.Len() || !bytes.Equal(n.Xor, make([]byte, t.Len())) || len(c.Data) != t.Len() {
				break
			}
			bits, ok := maskBits(n.Mask)
			if !ok {
				break
			}
			a, _ := netip.AddrFromSlice(c.Data)
			st.i += 2
			st.emitField(Match{Field: first.f, Neg: c.Op == expr.CmpOpNeq, Values: []Value{Prefix(netip.PrefixFrom(a, bits))}})
			return true
		case *expr.Lookup:
			if !n.IsDestRegSet {
				s, ok := st.d.sets(n.SetName)
				if ok && isAnonName(n.SetName) && !s.IsMap() {
					vals := make([]Value, 0, len(s.Elements))
					for _, e := range s.Elements {
						vals = append(vals, e.Key[0])
					}
					st.i++
					st.emitField(Match{Field: first.f, Neg: n.Invert, Values: vals})
					return true
				}
			}
		}
	}
	if st.decodeKeyUse(Concat(fs), 0, 0) {
		return true
	}
	st.i = start
	return false
}

// plainNAT reports whether a nat expression has no range and no flags
// beyond those the kernel adds itself (it dumps max registers equal to the
// min ones, and the map-ips and proto-specified flags).
func plainNAT(n *expr.NAT) bool {
	return (n.RegAddrMax == 0 || n.RegAddrMax == n.RegAddrMin) && (n.RegProtoMax == 0 || n.RegProtoMax == n.RegProtoMin) &&
		!n.Random && !n.FullyRandom && !n.Persistent && !n.Prefix
}

func isAnonName(n string) bool {
	return len(n) > 5 && (n[:5] == "__set" || n[:5] == "__map")
}

// emitField emits a single-field match with the guards its field needs.
func (st *dstate) emitField(m Match) {
	nf, l4 := needs([]Field{m.Field})
	if m.Field == FieldL4Proto && !m.Neg && len(m.Values) == 1 {
		st.emit(m, nf, l4)
		st.l4 = uint8(m.Values[0].num)
		return
	}
	st.emit(m, nf, l4)
}

func maskBits(m []byte) (int, bool) {
	bits := 0
	for i := 0; i < len(m)*8; i++ {
		if m[i/8]&(0x80>>(i%8)) != 0 {
			if bits != i {
				return 0, false
			}
			bits++
		}
	}
	return bits, true
}

func decodeMatchValue(f Field, b []byte) (Value, bool) {
	t := f.Type()
	if t == TypeIfname && len(b) < 16 {
		return Ifname(string(b) + "*"), true
	}
	if len(b) != t.Len() {
		return Value{}, false
	}
	return decodeValue(t, b)
}

// decodeValue types the bytes of one value.
func decodeValue(t Type, b []byte) (Value, bool) {
	switch t {
	case TypeIPv4Addr, TypeIPv6Addr:
		if len(b) != t.Len() {
			return Value{}, false
		}
		a, _ := netip.AddrFromSlice(b)
		return Addr(a), true
	case TypeInetProto:
		if len(b) < 1 {
			return Value{}, false
		}
		return Proto(b[0]), true
	case TypeInetService:
		if len(b) < 2 {
			return Value{}, false
		}
		return Port(binary.BigEndian.Uint16(b)), true
	case TypeMark:
		if len(b) != 4 {
			return Value{}, false
		}
		return Mark(binary.NativeEndian.Uint32(b)), true
	case TypeInteger:
		if len(b) != 4 {
			return Value{}, false
		}
		return Int(binary.NativeEndian.Uint32(b)), true
	case TypeIfname:
		if len(b) != 16 {
			return Value{}, false
		}
		return Ifname(string(bytes.TrimRight(b, "\x00"))), true
	}
	return Value{}, false
}

// decodeValues splits concatenated bytes into typed values.
func decodeValues(ts []Type, b []byte) ([]Value, bool) {
	if len(ts) == 1 {
		v, ok := decodeValue(ts[0], b)
		return []Value{v}, ok
	}
	out := make([]Value, 0, len(ts))
	for _, t := range ts {
		n := (t.Len() + 3) &^ 3
		if len(b) < n {
			return nil, false
		}
		v, ok := decodeValue(t, b[:t.Len()])
		if !ok {
			return nil, false
		}
		out = append(out, v)
		b = b[n:]
	}
	return out, len(b) == 0
}

// decodeKeyUse decodes what follows a key computed into register 1:
// a lookup, a verdict map, a DNAT map or a dynamic set update. For
// JHash the key was computed by decodeHash.
func (st *dstate) decodeKeyUse(k Key, _ int, _ int) bool {
	var nf, l4 uint8
	switch k := k.(type) {
	case Concat:
		nf, l4 = needs(k)
	case JHash:
		nf, l4 = needs(k.Fields)
	}
	switch n := st.peek(0).(type) {
	case *expr.Lookup:
		if n.SourceRegister != unix.NFT_REG_1 {
			return false
		}
		if !n.IsDestRegSet {
			c, ok := k.(Concat)
			if !ok || isAnonName(n.SetName) {
				return false
			}
			st.i++
			st.emit(Lookup{Fields: c, Set: n.SetName, Neg: n.Invert}, nf, l4)
			return true
		}
		name, entries, ok := st.mapOperand(n.SetName)
		if !ok || n.Invert {
			return false
		}
		if n.DestRegister == unix.NFT_REG_VERDICT {
			st.i++
			st.emit(VMap{Key: k, Map: name, Entries: entries}, nf, l4)
			return true
		}
		if n.DestRegister != unix.NFT_REG_1 {
			return false
		}
		nat, ok := st.peek(1).(*expr.NAT)
		if !ok || nat.Type != expr.NATTypeDestNAT || nat.RegAddrMin != unix.NFT_REG_1 || !plainNAT(nat) {
			return false
		}
		fam := FamilyIPv4
		portReg := reg(1)
		if nat.Family == unix.NFPROTO_IPV6 {
			fam, portReg = FamilyIPv6, reg(4)
		} else if nat.Family != unix.NFPROTO_IPV4 {
			return false
		}
		if nat.RegProtoMin != 0 && nat.RegProtoMin != portReg {
			return false
		}
		st.i += 2
		st.emit(DNATMap{Family: fam, Key: k, Map: name, Entries: entries}, nf, l4)
		return true
	case *expr.Dynset:
		c, ok := k.(Concat)
		if !ok || n.SrcRegKey != unix.NFT_REG_1 || n.Invert || len(n.Exprs) > 0 || isAnonName(n.SetName) {
			return false
		}
		su := SetUpdate{Op: OpAdd, Set: n.SetName, Key: c, Timeout: n.Timeout}
		switch n.Operation {
		case unix.NFT_DYNSET_OP_ADD:
		case unix.NFT_DYNSET_OP_UPDATE:
			su.Op = OpUpdate
		default:
			return false
		}
		if n.SrcRegData != 0 {
			// The data was loaded right after the key, into the next
			// 16-byte register: split the loads there.
			dslot, ok := slotOf(n.SrcRegData)
			if !ok {
				return false
			}
			slot, split := 0, -1
			for i, f := range c {
				if slot == dslot {
					split = i
					break
				}
				slot += (f.Type().Len() + 3) / 4
			}
			if split <= 0 || 4*units(concatLen(fieldTypes(c[:split]))) != dslot {
				return false
			}
			su.Key, su.Data = c[:split], Concat(c[split:])
			nf, l4 = needs(c)
		}
		st.i++
		st.emit(su, nf, l4)
		return true
	case *expr.Payload, *expr.Meta, *expr.Numgen:
		// key followed by data loads for a dynamic map update
		return st.decodeDynsetData(k, nf, l4)
	case *expr.Hash:
		return false
	}
	return false
}

// decodeDynsetData handles `update @m { key : data }`, whose data is loaded
// (or generated) after the key, from the next 16-byte register.
func (st *dstate) decodeDynsetData(k Key, nf, l4 uint8) bool {
	c, ok := k.(Concat)
	if !ok {
		return false
	}
	start := st.i
	slot := 4 * units(concatLen(fieldTypes(c)))
	var data Key
	if ng, ok := st.peek(0).(*expr.Numgen); ok {
		s, _ := slotOf(ng.Register)
		if s != slot || ng.Type != unix.NFT_NG_RANDOM {
			return false
		}
		data = Numgen{Mod: ng.Modulus, Offset: ng.Offset}
		st.i++
	} else {
		fs := st.loadRun(slot)
		if len(fs) == 0 {
			st.i = start
			return false
		}
		data = Concat(fs)
		dnf, dl4 := needs(fs)
		if dnf != 0 {
			nf = dnf
		}
		if dl4 != 0 {
			l4 = dl4
		}
	}
	d, ok := st.peek(0).(*expr.Dynset)
	if !ok || d.SrcRegKey != unix.NFT_REG_1 || d.SrcRegData != reg(slot) || d.Invert || len(d.Exprs) > 0 {
		st.i = start
		return false
	}
	su := SetUpdate{Op: OpAdd, Set: d.SetName, Key: c, Data: data, Timeout: d.Timeout}
	switch d.Operation {
	case unix.NFT_DYNSET_OP_ADD:
	case unix.NFT_DYNSET_OP_UPDATE:
		su.Op = OpUpdate
	default:
		st.i = start
		return false
	}
	st.i++
	st.emit(su, nf, l4)
	return true
}

// loadRun consumes loads of whole fields into consecutive slots from slot
// and returns the fields.
func (st *dstate) loadRun(slot int) []Field {
	var fs []Field
	for {
		lf, ok := st.fieldOfLoad(st.peek(0))
		if !ok || lf.slot != slot || lf.n != lf.f.Type().Len() {
			return fs
		}
		fs = append(fs, lf.f)
		slot += (lf.n + 3) / 4
		st.i++
	}
}

// mapOperand returns the named map, or the entries of an anonymous one.
func (st *dstate) mapOperand(name string) (string, []Element, bool) {
	if !isAnonName(name) {
		return name, nil, true
	}
	s, ok := st.d.sets(name)
	if !ok || !s.IsMap() {
		return "", nil, false
	}
	return "", s.Elements, true
}

// decodeHash is called for loads that start at slot 4 followed by a hash.
func (st *dstate) decodeHash() bool {
	start := st.i
	fs := st.loadRun(4)
	h, ok := st.peek(0).(*expr.Hash)
	if len(fs) == 0 || !ok || h.Type != expr.HashTypeJenkins || h.SourceRegister != reg(4) || h.DestRegister != unix.NFT_REG_1 ||
		int(h.Length) != concatLen(fieldTypes(fs)) {
		st.i = start
		return false
	}
	st.i++
	if st.decodeKeyUse(JHash{Fields: fs, Mod: h.Modulus, Seed: h.Seed, Offset: h.Offset}, 0, 0) {
		return true
	}
	st.i = start
	return false
}

// decodeElems types raw elements of set s (definition without elements),
// turning interval start/end pairs back into prefixes.
func decodeElems(s *Set, raw []rawElem) ([]Element, error) {
	if s.Interval {
		return decodeIntervals(s, raw)
	}
	out := make([]Element, 0, len(raw))
	for _, r := range raw {
		key, ok := decodeValues(s.Key, r.key)
		if !ok {
			return nil, fmt.Errorf("set %q: element key %x does not fit %s", s.Name, r.key, typesString(s.Key))
		}
		e := Element{Key: key, Comment: r.comment}
		if r.timeout != s.DefaultTimeout {
			e.Timeout = r.timeout
		}
		switch {
		case s.IsVerdictMap():
			if r.verdict == nil {
				return nil, fmt.Errorf("set %q: element %s without verdict", s.Name, e.keyString())
			}
			v := *r.verdict
			e.Verdict = &v
		case s.IsMap():
			data, ok := decodeValues(s.Data, r.data)
			if !ok {
				return nil, fmt.Errorf("set %q: element data %x does not fit %s", s.Name, r.data, typesString(s.Data))
			}
			e.Data = data
		}
		out = append(out, e)
	}
	return sortedElements(out), nil
}

func decodeIntervals(s *Set, raw []rawElem) ([]Element, error) {
	sort.Slice(raw, func(i, j int) bool {
		if c := bytes.Compare(raw[i].key, raw[j].key); c != 0 {
			return c < 0
		}
		return raw[i].end && !raw[j].end // an end sorts before a start at the same key
	})
	var out []Element
	for i := 0; i < len(raw); i++ {
		r := raw[i]
		if r.end {
			continue // a leading end (nft's 0.0.0.0 marker) or a stray end
		}
		start, ok := netip.AddrFromSlice(r.key)
		if !ok {
			return nil, fmt.Errorf("set %q: bad interval start %x", s.Name, r.key)
		}
		var last netip.Addr
		if i+1 < len(raw) && raw[i+1].end {
			end, _ := netip.AddrFromSlice(raw[i+1].key)
			last = end.Prev()
			i++
		} else {
			b := start.AsSlice()
			for k := range b {
				b[k] = 0xff
			}
			last, _ = netip.AddrFromSlice(b)
		}
		p, ok := rangeToPrefix(start, last)
		if !ok {
			return nil, fmt.Errorf("set %q: range %s-%s is not a prefix", s.Name, start, last)
		}
		out = append(out, Element{Key: []Value{Prefix(p)}, Comment: r.comment})
	}
	return sortedElements(out), nil
}

func rangeToPrefix(first, last netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= first.BitLen(); bits++ {
		p := netip.PrefixFrom(first, bits)
		if p.Masked().Addr() != first {
			continue
		}
		end, ok := prefixEnd(p)
		if ok && end.Prev() == last {
			return p, true
		}
		if !ok && isAllOnes(last) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func isAllOnes(a netip.Addr) bool {
	for _, b := range a.AsSlice() {
		if b != 0xff {
			return false
		}
	}
	return true
}

// rawFromG converts google/nftables elements (as the compiler produced
// them) to raw elements, for Canonical.
func rawFromG(es []gnft.SetElement) []rawElem {
	out := make([]rawElem, len(es))
	for i, e := range es {
		r := rawElem{key: e.Key, data: e.Val, end: e.IntervalEnd, timeout: e.Timeout, comment: e.Comment}
		if e.VerdictData != nil {
			v, _ := fromGVerdict(e.VerdictData)
			r.verdict = &v
		}
		out[i] = r
	}
	return out
}
