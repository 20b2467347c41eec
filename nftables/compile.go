package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// maxElemListBytes bounds the encoded elements of one NEWSETELEM or
// DELSETELEM message. The element list is one netlink attribute whose
// length is 16 bits; google/nftables v0.3.0 truncates longer lengths
// silently (mdlayher/netlink's MarshalAttributes casts to uint16), so the
// engine splits element lists into messages below this size.
const maxElemListBytes = 60000

// compiler turns a Transaction into calls on a sink.
type compiler struct {
	t      Table
	gt     *gnft.Table
	sets   map[string]*Set // definitions known for element encoding
	nextID uint32
	out    Batcher
	msgs   int // messages emitted
	bytes  int // estimated size of the batch
}

func newCompiler(t Table, known map[string]*Set, out Batcher) *compiler {
	sets := make(map[string]*Set, len(known))
	for k, v := range known {
		sets[k] = v
	}
	return &compiler{t: t, gt: gnftTable(t), sets: sets, out: out}
}

func gnftTable(t Table) *gnft.Table {
	fam := gnft.TableFamilyINet
	switch t.Family {
	case FamilyIPv4:
		fam = gnft.TableFamilyIPv4
	case FamilyIPv6:
		fam = gnft.TableFamilyIPv6
	}
	return &gnft.Table{Name: t.Name, Family: fam}
}

func (c *compiler) id() uint32 {
	c.nextID++
	return c.nextID
}

// compile emits every operation of tx.
func (c *compiler) compile(tx *Transaction) error {
	for i := range tx.ops {
		if err := c.op(&tx.ops[i]); err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
	}
	return nil
}

var hooks = map[Hook]*gnft.ChainHook{
	HookPrerouting:  gnft.ChainHookPrerouting,
	HookInput:       gnft.ChainHookInput,
	HookForward:     gnft.ChainHookForward,
	HookOutput:      gnft.ChainHookOutput,
	HookPostrouting: gnft.ChainHookPostrouting,
}

func (c *compiler) gchain(name string) *gnft.Chain { return &gnft.Chain{Name: name, Table: c.gt} }

func (c *compiler) op(o *op) error {
	c.bytes += 64
	switch o.kind {
	case opAddTable:
		c.out.AddTable(c.gt)
		c.msgs++
	case opDelTable:
		c.out.DelTable(c.gt)
		c.msgs++
	case opAddChain:
		gc := c.gchain(o.name)
		if b := o.chain.Base; b != nil {
			gc.Type = gnft.ChainType(b.Type)
			gc.Hooknum = hooks[b.Hook]
			gc.Priority = gnft.ChainPriorityRef(gnft.ChainPriority(b.Priority))
			pol := gnft.ChainPolicyAccept
			if b.Policy == PolicyDrop {
				pol = gnft.ChainPolicyDrop
			}
			gc.Policy = &pol
		}
		c.out.AddChain(gc)
		c.msgs++
	case opDelChain:
		c.out.DelChain(c.gchain(o.name))
		c.msgs++
	case opFlushChain:
		c.out.FlushChain(c.gchain(o.name))
		c.msgs++
	case opAddRule:
		return c.rule(o.name, o.rule)
	case opAddSet:
		return c.addSet(o.set)
	case opDelSet:
		c.out.DelSet(&gnft.Set{Table: c.gt, Name: o.name})
		c.msgs++
		delete(c.sets, o.name)
	case opFlushSet:
		c.out.FlushSet(&gnft.Set{Table: c.gt, Name: o.name})
		c.msgs++
	case opAddElems, opDelElems:
		s, ok := c.sets[o.name]
		if !ok {
			return fmt.Errorf("set %q: definition unknown, cannot encode its elements", o.name)
		}
		gs := c.gset(s)
		elems, err := encodeElements(s, o.elems)
		if err != nil {
			return fmt.Errorf("set %q: %w", o.name, err)
		}
		f := c.out.SetAddElements
		if o.kind == opDelElems {
			f = c.out.SetDeleteElements
		}
		return c.chunked(gs, elems, f)
	}
	return nil
}

// chunked sends elements in as many messages as needed to keep each element
// list below maxElemListBytes.
func (c *compiler) chunked(gs *gnft.Set, elems []gnft.SetElement, f func(*gnft.Set, []gnft.SetElement) error) error {
	start, size := 0, 0
	for i := range elems {
		n := elemSize(&elems[i])
		if size+n > maxElemListBytes && i > start {
			if err := f(gs, elems[start:i]); err != nil {
				return err
			}
			c.msgs++
			c.bytes += size + 64
			start, size = i, 0
		}
		size += n
	}
	if start < len(elems) {
		if err := f(gs, elems[start:]); err != nil {
			return err
		}
		c.msgs++
		c.bytes += size + 64
	}
	return nil
}

// elemSize is an upper bound of the encoded size of one element in a
// NFTA_SET_ELEM_LIST_ELEMENTS attribute.
func elemSize(e *gnft.SetElement) int {
	n := 4                          // list element header
	n += 4 + 4 + align4(len(e.Key)) // key nest + value
	if e.IntervalEnd {
		n += 8
	}
	if e.Timeout > 0 {
		n += 12
	}
	if e.VerdictData != nil {
		n += 4 + 4 + 8 + 4 + align4(len(e.VerdictData.Chain)+1)
	} else if len(e.Val) > 0 {
		n += 4 + 4 + align4(len(e.Val))
	}
	if e.Comment != "" {
		n += 4 + align4(2+len(e.Comment)+1)
	}
	return n
}

func align4(n int) int { return (n + 3) &^ 3 }

func gtype(t Type) gnft.SetDatatype {
	switch t {
	case TypeIPv4Addr:
		return gnft.TypeIPAddr
	case TypeIPv6Addr:
		return gnft.TypeIP6Addr
	case TypeInetProto:
		return gnft.TypeInetProto
	case TypeInetService:
		return gnft.TypeInetService
	case TypeMark:
		return gnft.TypeMark
	case TypeIfname:
		return gnft.TypeIFName
	case TypeInteger:
		return gnft.TypeInteger
	case TypeVerdict:
		return gnft.TypeVerdict
	}
	return gnft.TypeInvalid
}

func gtypes(ts []Type) gnft.SetDatatype {
	if len(ts) == 1 {
		return gtype(ts[0])
	}
	g := make([]gnft.SetDatatype, len(ts))
	for i, t := range ts {
		g[i] = gtype(t)
	}
	return gnft.MustConcatSetType(g...)
}

// hostOrder reports whether nft keeps a single-field key in host byte
// order (its userdata says so, and nft prints the keys accordingly).
func hostOrder(ts []Type) bool {
	return len(ts) == 1 && (ts[0] == TypeMark || ts[0] == TypeInteger || ts[0] == TypeIfname)
}

// gset returns the google/nftables description of a named set.
func (c *compiler) gset(s *Set) *gnft.Set {
	gs := &gnft.Set{
		Table:      c.gt,
		Name:       s.Name,
		Interval:   s.Interval,
		Constant:   s.Constant,
		IsMap:      s.IsMap(),
		HasTimeout: s.Timeout,
		Timeout:    s.DefaultTimeout,
		Dynamic:    s.Dynamic,
		KeyType:    gtypes(s.Key),
		Comment:    s.Comment,
		Size:       s.effectiveSize(),
	}
	if s.IsMap() {
		gs.DataType = gtypes(s.Data)
	}
	if hostOrder(s.Key) {
		gs.KeyByteOrder = binaryutil.NativeEndian
	}
	return gs
}

func (c *compiler) addSet(s *Set) error {
	def := *s
	def.Elements = nil
	c.sets[s.Name] = &def
	gs := c.gset(s)
	// google/nftables allocates set IDs from a package-level counter when
	// ID is 0; the engine numbers them per batch instead, which is race
	// free and what the kernel needs (IDs only matter within a batch).
	gs.ID = c.id()
	if err := c.out.AddSet(gs, nil); err != nil {
		return err
	}
	c.msgs++
	elems, err := encodeElements(s, s.Elements)
	if err != nil {
		return fmt.Errorf("set %q: %w", s.Name, err)
	}
	return c.chunked(gs, elems, c.out.SetAddElements)
}

// encodeElements turns elements into google/nftables elements; an interval
// set's prefix becomes a start and an end element.
func encodeElements(s *Set, es []Element) ([]gnft.SetElement, error) {
	out := make([]gnft.SetElement, 0, len(es))
	for i := range es {
		e := &es[i]
		if len(e.Key) != len(s.Key) {
			return nil, fmt.Errorf("element %s: %d key values for %d fields", e.keyString(), len(e.Key), len(s.Key))
		}
		ge := gnft.SetElement{Key: encodeValues(e.Key, len(s.Key) > 1), Timeout: e.Timeout, Comment: e.Comment}
		switch {
		case e.Verdict != nil:
			ge.VerdictData = gverdict(*e.Verdict)
		case len(e.Data) > 0:
			ge.Val = encodeValues(e.Data, len(e.Data) > 1)
		}
		if s.Interval {
			p := e.Key[0].AsPrefix().Masked()
			ge.Key = p.Addr().AsSlice()
			out = append(out, ge)
			if end, ok := prefixEnd(p); ok {
				out = append(out, gnft.SetElement{Key: end.AsSlice(), IntervalEnd: true})
			}
			continue
		}
		out = append(out, ge)
	}
	return out, nil
}

// prefixEnd returns the first address after p, unless p reaches the end of
// the address space.
func prefixEnd(p netip.Prefix) (netip.Addr, bool) {
	last := p.Masked().Addr()
	b := last.AsSlice()
	bits := p.Bits()
	for i := bits; i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	next := last.Next()
	return next, next.IsValid()
}

// encodeValue returns the bytes of one value as the kernel holds it.
func encodeValue(v Value) []byte {
	switch v.typ {
	case TypeIPv4Addr, TypeIPv6Addr:
		if v.bits >= 0 {
			return netip.PrefixFrom(v.addr, v.bits).Masked().Addr().AsSlice()
		}
		return v.addr.AsSlice()
	case TypeInetProto:
		return []byte{byte(v.num)}
	case TypeInetService:
		return binary.BigEndian.AppendUint16(nil, uint16(v.num))
	case TypeMark, TypeInteger:
		return binary.NativeEndian.AppendUint32(nil, v.num)
	case TypeIfname:
		return ifnameBytes(v.str)
	}
	return nil
}

func ifnameBytes(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// encodeValues concatenates values, padding each to 4 bytes when concat.
func encodeValues(vs []Value, concat bool) []byte {
	var out []byte
	for _, v := range vs {
		b := encodeValue(v)
		out = append(out, b...)
		if concat {
			for len(out)%4 != 0 {
				out = append(out, 0)
			}
		}
	}
	return out
}

// commentUserdata encodes a rule comment the way nft does.
func commentUserdata(c string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, c)
}

func gverdict(v Verdict) *expr.Verdict {
	k := map[VerdictKind]expr.VerdictKind{
		VerdictAccept: expr.VerdictAccept, VerdictDrop: expr.VerdictDrop, VerdictReturn: expr.VerdictReturn,
		VerdictJump: expr.VerdictJump, VerdictGoto: expr.VerdictGoto, VerdictContinue: expr.VerdictContinue,
	}[v.Kind]
	return &expr.Verdict{Kind: k, Chain: v.Chain}
}

// rule compiles one rule and emits it, after the anonymous sets it uses.
func (c *compiler) rule(chain string, r *Rule) error {
	exprs, anon, err := c.compileRule(r)
	if err != nil {
		return fmt.Errorf("chain %q rule %q: %w", chain, r.String(), err)
	}
	for _, a := range anon {
		if err := c.out.AddSet(a.set, a.elems); err != nil {
			return err
		}
		c.msgs += 2
		c.bytes += 256
		for i := range a.elems {
			c.bytes += elemSize(&a.elems[i])
		}
	}
	c.bytes += 64 + 48*len(exprs) + len(r.Comment)
	gr := &gnft.Rule{Table: c.gt, Chain: c.gchain(chain), Exprs: exprs}
	if r.Comment != "" {
		gr.UserData = commentUserdata(r.Comment)
	}
	c.out.AddRule(gr)
	c.msgs++
	return nil
}

type anonSet struct {
	def   *Set
	set   *gnft.Set
	elems []gnft.SetElement
}

// ruleCompiler holds the state of compiling one rule.
type ruleCompiler struct {
	c       *compiler
	exprs   []expr.Any
	anon    []anonSet
	nfproto uint8 // network family established by an earlier match or guard
	l4proto uint8 // transport protocol established likewise
}

func (c *compiler) compileRule(r *Rule) ([]expr.Any, []anonSet, error) {
	rc := &ruleCompiler{c: c}
	switch c.t.Family {
	case FamilyIPv4:
		rc.nfproto = unix.NFPROTO_IPV4
	case FamilyIPv6:
		rc.nfproto = unix.NFPROTO_IPV6
	}
	for _, s := range r.Stmts {
		if s == nil {
			return nil, nil, fmt.Errorf("nil statement")
		}
		if err := s.compile(rc); err != nil {
			return nil, nil, err
		}
	}
	return rc.exprs, rc.anon, nil
}

func (rc *ruleCompiler) add(e ...expr.Any) { rc.exprs = append(rc.exprs, e...) }

// reg returns the register number for 32-bit slot n (0-15), in nft's
// convention: a slot at the start of a 16-byte register is named by that
// register (NFT_REG_1..4), others by their 32-bit number (NFT_REG32_xx).
func reg(slot int) uint32 {
	if slot%4 == 0 {
		return uint32(unix.NFT_REG_1 + slot/4)
	}
	return uint32(unix.NFT_REG32_00 + slot)
}

// guardNF makes sure the rule only continues for packets of family nfp
// (inet tables): `meta nfproto ipv4`.
func (rc *ruleCompiler) guardNF(nfp uint8) {
	if nfp == 0 || rc.nfproto == nfp {
		return
	}
	rc.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfp}})
	rc.nfproto = nfp
}

// guardL4 is `meta l4proto <p>` unless already established.
func (rc *ruleCompiler) guardL4(p uint8) {
	if p == 0 || rc.l4proto == p {
		return
	}
	rc.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}})
	rc.l4proto = p
}

// guards emits the dependencies of a list of fields.
func (rc *ruleCompiler) guards(fs []Field) {
	for _, f := range fs {
		fi := f.info()
		rc.guardNF(fi.nfproto)
		rc.guardL4(fi.l4proto)
	}
}

// load emits the load of field f into slot, with length n (0: the field's
// natural length).
func (rc *ruleCompiler) load(f Field, slot int, n uint32) {
	fi := f.info()
	if n == 0 {
		n = uint32(fi.typ.Len())
	}
	if fi.meta {
		rc.add(&expr.Meta{Key: fi.key, Register: reg(slot)})
		return
	}
	rc.add(&expr.Payload{DestRegister: reg(slot), Base: fi.base, Offset: fi.offset, Len: n})
}

// loadConcat loads fields into consecutive slots from slot and returns the
// next free slot.
func (rc *ruleCompiler) loadConcat(fs []Field, slot int) int {
	for _, f := range fs {
		rc.load(f, slot, 0)
		slot += (f.Type().Len() + 3) / 4
	}
	return slot
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// anonymous adds an anonymous set (or map) and returns its name and ID for
// a lookup.
func (rc *ruleCompiler) anonymous(s *Set) (string, uint32, error) {
	elems, err := encodeElements(s, s.Elements)
	if err != nil {
		return "", 0, err
	}
	size := 0
	for i := range elems {
		size += elemSize(&elems[i])
	}
	if size > maxElemListBytes {
		return "", 0, fmt.Errorf("anonymous set of %d elements is too large for one message (%d bytes); use a named set", len(s.Elements), size)
	}
	id := rc.c.id()
	gs := rc.c.gset(s)
	gs.Name = "__set%d"
	if s.IsMap() {
		gs.Name = "__map%d"
	}
	gs.ID = id
	gs.Anonymous = true
	gs.Constant = true
	rc.anon = append(rc.anon, anonSet{def: s, set: gs, elems: elems})
	return gs.Name, id, nil
}

func (m Match) compile(rc *ruleCompiler) error {
	fi := m.Field.info()
	rc.guardNF(fi.nfproto)
	rc.guardL4(fi.l4proto)
	if len(m.Values) > 1 {
		rc.load(m.Field, 0, 0)
		interval := false
		elems := make([]Element, len(m.Values))
		for i, v := range m.Values {
			elems[i] = Element{Key: []Value{v}}
			interval = interval || v.IsPrefix()
		}
		s := &Set{Key: []Type{fi.typ}, Interval: interval, Constant: true, Elements: elems}
		name, id, err := rc.anonymous(s)
		if err != nil {
			return err
		}
		rc.add(&expr.Lookup{SourceRegister: 1, SetName: name, SetID: id, Invert: m.Neg})
		return nil
	}
	v := m.Values[0]
	switch {
	case v.Type() == TypeIfname && len(v.str) > 0 && v.str[len(v.str)-1] == '*':
		rc.load(m.Field, 0, 0)
		rc.add(&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: []byte(v.str[:len(v.str)-1])})
	case v.IsPrefix() && v.bits%8 == 0:
		n := v.bits / 8
		rc.load(m.Field, 0, uint32(n))
		rc.add(&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: encodeValue(v)[:n]})
	case v.IsPrefix():
		alen := v.addr.BitLen() / 8
		rc.load(m.Field, 0, 0)
		mask := netipMask(v.bits, alen)
		rc.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(alen), Mask: mask, Xor: make([]byte, alen)},
			&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: encodeValue(v)})
	default:
		rc.load(m.Field, 0, 0)
		rc.add(&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: encodeValue(v)})
	}
	if m.Field == FieldL4Proto && !m.Neg {
		rc.l4proto = uint8(v.num)
	}
	return nil
}

func netipMask(bits, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < bits; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}

func (m NFProtoMatch) compile(rc *ruleCompiler) error {
	nfp := uint8(unix.NFPROTO_IPV4)
	if m.Family == FamilyIPv6 {
		nfp = unix.NFPROTO_IPV6
	}
	rc.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfp}})
	rc.nfproto = nfp
	return nil
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func (m MarkMatch) compile(rc *ruleCompiler) error {
	rc.add(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1})
	if m.Mask != 0 && m.Mask != 0xffffffff {
		rc.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(m.Mask), Xor: u32(0)})
	}
	rc.add(&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: u32(m.Value)})
	return nil
}

func (m FibLocal) compile(rc *ruleCompiler) error {
	rc.add(&expr.Fib{Register: 1, FlagDADDR: !m.Source, FlagSADDR: m.Source, ResultADDRTYPE: true},
		&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: u32(unix.RTN_LOCAL)})
	return nil
}

func (m CtState) compile(rc *ruleCompiler) error {
	rc.add(&expr.Ct{Key: expr.CtKeySTATE, Register: 1})
	if m.Neg {
		// A connection is in exactly one state, so "not new" is
		// "state != new", which is how nft encodes it.
		rc.add(&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(uint32(m.States))})
		return nil
	}
	rc.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(uint32(m.States)), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)})
	return nil
}

func (m CtStatus) compile(rc *ruleCompiler) error {
	rc.add(&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(uint32(m.Bits)), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)})
	return nil
}

func (m Lookup) compile(rc *ruleCompiler) error {
	rc.guards(m.Fields)
	rc.loadConcat(m.Fields, 0)
	rc.add(&expr.Lookup{SourceRegister: 1, SetName: m.Set, Invert: m.Neg})
	return nil
}

func (Counter) compile(rc *ruleCompiler) error {
	rc.add(&expr.Counter{})
	return nil
}

func (s SetMark) compile(rc *ruleCompiler) error {
	if s.Op == MarkSet {
		rc.add(&expr.Immediate{Register: 1, Data: u32(s.Value)})
	} else {
		mask, xor := uint32(0xffffffff), uint32(0)
		switch s.Op {
		case MarkOr:
			mask, xor = ^s.Value, s.Value
		case MarkXor:
			xor = s.Value
		case MarkAnd:
			mask = s.Value
		}
		rc.add(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(mask), Xor: u32(xor)})
	}
	rc.add(&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	return nil
}

func (s DNAT) compile(rc *ruleCompiler) error {
	rc.add(&expr.Immediate{Register: 1, Data: s.Addr.AsSlice()})
	n := &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfprotoOf(s.Addr)), RegAddrMin: 1}
	if s.Port != 0 {
		rc.add(&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, s.Port)})
		n.RegProtoMin = 2
		n.Specified = true
	}
	rc.add(n)
	return nil
}

// compileKey emits the computation of a map key into slot 0 (register 1).
func (rc *ruleCompiler) compileKey(k Key) error {
	switch k := k.(type) {
	case Concat:
		rc.guards(k)
		rc.loadConcat(k, 0)
	case Numgen:
		rc.add(&expr.Numgen{Register: 1, Modulus: k.Mod, Type: unix.NFT_NG_RANDOM, Offset: k.Offset})
	case JHash:
		rc.guards(k.Fields)
		rc.loadConcat(k.Fields, 4)
		rc.add(&expr.Hash{SourceRegister: reg(4), DestRegister: 1, Length: uint32(concatLen(fieldTypes(k.Fields))),
			Modulus: k.Mod, Seed: k.Seed, Offset: k.Offset, Type: expr.HashTypeJenkins})
	default:
		return fmt.Errorf("unsupported key %T", k)
	}
	return nil
}

// mapRefFor returns the set name and ID a lookup uses: the named map, or a
// new anonymous map holding entries.
func (rc *ruleCompiler) mapRefFor(k Key, name string, entries []Element, verdict bool) (string, uint32, int, error) {
	if name != "" {
		dataLen := 0
		if s := rc.c.sets[name]; s != nil {
			dataLen = len(s.Data)
		}
		return name, 0, dataLen, nil
	}
	s := &Set{Key: k.keyTypes(), Constant: true, Elements: entries}
	if verdict {
		s.Data = []Type{TypeVerdict}
	} else if len(entries) > 0 {
		s.Data = elementDataTypes(entries[0])
	}
	n, id, err := rc.anonymous(s)
	return n, id, len(s.Data), err
}

func (s DNATMap) compile(rc *ruleCompiler) error {
	if err := rc.compileKey(s.Key); err != nil {
		return err
	}
	name, id, dataFields, err := rc.mapRefFor(s.Key, s.Map, s.Entries, false)
	if err != nil {
		return err
	}
	if dataFields == 0 {
		return fmt.Errorf("map %q: data type unknown", s.Map)
	}
	rc.add(&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: name, SetID: id})
	nfp := uint32(unix.NFPROTO_IPV4)
	portSlot := 1
	if s.Family == FamilyIPv6 {
		nfp = unix.NFPROTO_IPV6
		portSlot = 4
	}
	n := &expr.NAT{Type: expr.NATTypeDestNAT, Family: nfp, RegAddrMin: 1}
	if dataFields == 2 {
		n.RegProtoMin = reg(portSlot)
	}
	rc.add(n)
	return nil
}

func (s SNAT) compile(rc *ruleCompiler) error {
	rc.add(&expr.Immediate{Register: 1, Data: s.Addr.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(nfprotoOf(s.Addr)), RegAddrMin: 1})
	return nil
}

func (s Masquerade) compile(rc *ruleCompiler) error {
	rc.add(&expr.Masq{FullyRandom: s.FullyRandom})
	return nil
}

func (v Verdict) compile(rc *ruleCompiler) error {
	rc.add(gverdict(v))
	return nil
}

func (s VMap) compile(rc *ruleCompiler) error {
	if err := rc.compileKey(s.Key); err != nil {
		return err
	}
	name, id, _, err := rc.mapRefFor(s.Key, s.Map, s.Entries, true)
	if err != nil {
		return err
	}
	rc.add(&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: name, SetID: id})
	return nil
}

func (s Reject) compile(rc *ruleCompiler) error {
	switch s.Type {
	case RejectDefault:
		// Like nft: port unreachable in the family the rule already
		// established, else the family-independent ICMPX code.
		switch rc.nfproto {
		case unix.NFPROTO_IPV4:
			rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3})
		case unix.NFPROTO_IPV6:
			rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 4})
		default:
			rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: ICMPXPortUnreachable})
		}
	case RejectICMPX:
		rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: s.Code})
	case RejectICMP:
		rc.guardNF(unix.NFPROTO_IPV4)
		rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: s.Code})
	case RejectICMPv6:
		rc.guardNF(unix.NFPROTO_IPV6)
		rc.add(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: s.Code})
	case RejectTCPReset:
		rc.guardL4(unix.IPPROTO_TCP)
		rc.add(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	}
	return nil
}

func (s SetUpdate) compile(rc *ruleCompiler) error {
	rc.guards(s.Key)
	var dataFields []Field
	if c, ok := s.Data.(Concat); ok {
		dataFields = c
	}
	rc.guards(dataFields)
	keyLen := concatLen(fieldTypes(s.Key))
	rc.loadConcat(s.Key, 0)
	d := &expr.Dynset{SrcRegKey: 1, SetName: s.Set, Timeout: s.Timeout, Operation: unix.NFT_DYNSET_OP_ADD}
	if s.Op == OpUpdate {
		d.Operation = unix.NFT_DYNSET_OP_UPDATE
	}
	if s.Data != nil {
		slot := 4 * units(keyLen)
		switch k := s.Data.(type) {
		case Concat:
			rc.loadConcat(k, slot)
		case Numgen:
			rc.add(&expr.Numgen{Register: reg(slot), Modulus: k.Mod, Type: unix.NFT_NG_RANDOM, Offset: k.Offset})
		default:
			return fmt.Errorf("dynamic map data %T is not supported", s.Data)
		}
		d.SrcRegData = reg(slot)
	}
	rc.add(d)
	return nil
}
