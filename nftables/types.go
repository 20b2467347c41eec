package nftables

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Family is the address family of a table, as nft spells it.
type Family string

// The table families the engine supports. lbkit itself uses one inet
// table, which sees IPv4 and IPv6 alike.
const (
	FamilyINet Family = "inet"
	FamilyIPv4 Family = "ip"
	FamilyIPv6 Family = "ip6"
)

// Valid reports whether f is one of the supported families.
func (f Family) Valid() bool { return f == FamilyINet || f == FamilyIPv4 || f == FamilyIPv6 }

// Table names the one table an engine owns.
type Table struct {
	Family Family
	Name   string
}

// String returns the table as nft names it: "inet lbkit".
func (t Table) String() string { return string(t.Family) + " " + t.Name }

// ChainType is the type of a base chain.
type ChainType string

// Base chain types.
const (
	ChainTypeFilter ChainType = "filter"
	ChainTypeNAT    ChainType = "nat"
)

// Hook is the netfilter hook a base chain is attached to.
type Hook string

// Netfilter hooks.
const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// Policy is the verdict a base chain applies to packets that reach its end.
type Policy string

// Base chain policies. The zero value means accept.
const (
	PolicyAccept Policy = "accept"
	PolicyDrop   Policy = "drop"
)

// Well-known base chain priorities (the numbers nft's symbolic names stand
// for in the ip, ip6 and inet families).
const (
	PriorityRaw      = -300
	PriorityMangle   = -150
	PriorityDstNAT   = -100
	PriorityFilter   = 0
	PrioritySecurity = 50
	PrioritySrcNAT   = 100
)

// BaseChain makes a chain a base chain: one attached to a netfilter hook.
type BaseChain struct {
	Type     ChainType
	Hook     Hook
	Priority int32
	Policy   Policy // "" means accept
}

// Chain is a chain with its rules. Base is nil for a regular chain, one that
// is only reached by jump, goto or a verdict map.
type Chain struct {
	Name  string
	Base  *BaseChain
	Rules []Rule
}

// Rule is one rule: statements evaluated left to right, and an optional
// comment (at most 128 bytes of printable ASCII without quotes).
type Rule struct {
	Stmts   []Stmt
	Comment string
}

// R is shorthand for a Rule without a comment.
func R(stmts ...Stmt) Rule { return Rule{Stmts: stmts} }

// Ruleset is the desired (or read back) content of the owned table: its
// chains and its named sets and maps. Order is not significant: the
// renderer and the engine sort by name.
type Ruleset struct {
	Chains []Chain
	Sets   []Set
}

// Chain returns the chain with the given name, or nil.
func (rs *Ruleset) Chain(name string) *Chain {
	for i := range rs.Chains {
		if rs.Chains[i].Name == name {
			return &rs.Chains[i]
		}
	}
	return nil
}

// Set returns the set or map with the given name, or nil.
func (rs *Ruleset) Set(name string) *Set {
	for i := range rs.Sets {
		if rs.Sets[i].Name == name {
			return &rs.Sets[i]
		}
	}
	return nil
}

// Type is the data type of one field of a set key or of map data.
type Type uint8

// Data types. A set key is a concatenation of one or more of them.
const (
	// TypeIPv4Addr is an IPv4 address (ipv4_addr), 4 bytes.
	TypeIPv4Addr Type = iota + 1
	// TypeIPv6Addr is an IPv6 address (ipv6_addr), 16 bytes.
	TypeIPv6Addr
	// TypeInetProto is an IP protocol number (inet_proto), 1 byte.
	TypeInetProto
	// TypeInetService is a TCP, UDP or SCTP port (inet_service), 2 bytes.
	TypeInetService
	// TypeMark is a packet mark (mark), 4 bytes in host order.
	TypeMark
	// TypeIfname is an interface name (ifname), 16 bytes.
	TypeIfname
	// TypeInteger is a 32-bit number in host order: the output of numgen
	// and jhash. nft has no `type` name for it; the renderer declares such
	// maps with `typeof numgen random mod 1`. It may only be a whole key,
	// not part of a concatenation (see the package documentation).
	TypeInteger
	// TypeVerdict is a verdict; only as the data of a verdict map.
	TypeVerdict
)

var typeNames = map[Type]string{
	TypeIPv4Addr:    "ipv4_addr",
	TypeIPv6Addr:    "ipv6_addr",
	TypeInetProto:   "inet_proto",
	TypeInetService: "inet_service",
	TypeMark:        "mark",
	TypeIfname:      "ifname",
	TypeInteger:     "integer",
	TypeVerdict:     "verdict",
}

// typeofExpr is the expression nft's `typeof` declaration uses for each
// type, for maps whose key is a TypeInteger.
var typeofExpr = map[Type][2]string{ // [key form, data form]
	TypeIPv4Addr:    {"ip daddr", "ip daddr"},
	TypeIPv6Addr:    {"ip6 daddr", "ip6 daddr"},
	TypeInetProto:   {"meta l4proto", "meta l4proto"},
	TypeInetService: {"th dport", "th dport"},
	TypeMark:        {"meta mark", "meta mark"},
	TypeIfname:      {"iifname", "iifname"},
	TypeInteger:     {"numgen random mod 1", "numgen random mod 1"},
	TypeVerdict:     {"verdict", "verdict"},
}

// String returns nft's name of the type.
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Valid reports whether t is a known type.
func (t Type) Valid() bool { _, ok := typeNames[t]; return ok }

// Len returns the size of a value of the type in bytes (0 for verdicts).
func (t Type) Len() int {
	switch t {
	case TypeIPv4Addr, TypeMark, TypeInteger:
		return 4
	case TypeIPv6Addr, TypeIfname:
		return 16
	case TypeInetProto:
		return 1
	case TypeInetService:
		return 2
	}
	return 0
}

// concatLen is the length of a concatenation of types: each field is padded
// to a multiple of 4 bytes, as nft and the kernel lay them out in registers.
// A single field is not padded.
func concatLen(ts []Type) int {
	if len(ts) == 1 {
		return ts[0].Len()
	}
	n := 0
	for _, t := range ts {
		n += (t.Len() + 3) &^ 3
	}
	return n
}

// Value is one typed value: an element key field, map data, or a match
// operand. Build it with Addr, Prefix, Proto, Port, Mark, Int or Ifname.
type Value struct {
	typ  Type
	addr netip.Addr
	bits int // prefix length when the value is a prefix, else -1
	num  uint32
	str  string
}

// Addr returns an IPv4 or IPv6 address value. An IPv4-mapped IPv6 address is
// taken as IPv6; validation rejects it (its family is ambiguous).
func Addr(a netip.Addr) Value {
	v := Value{addr: a, bits: -1, typ: TypeIPv6Addr}
	if a.Is4() {
		v.typ = TypeIPv4Addr
	}
	return v
}

// Prefix returns an address prefix value, for interval sets and prefix
// matches. A prefix covering a single address is the same as Addr.
func Prefix(p netip.Prefix) Value {
	v := Addr(p.Addr())
	v.bits = p.Bits()
	if p.Bits() == p.Addr().BitLen() {
		v.bits = -1
	}
	return v
}

// Proto returns an IP protocol number value (6 for TCP, 17 for UDP, 132 for
// SCTP).
func Proto(n uint8) Value { return Value{typ: TypeInetProto, num: uint32(n), bits: -1} }

// Port returns a transport port value.
func Port(p uint16) Value { return Value{typ: TypeInetService, num: uint32(p), bits: -1} }

// Mark returns a packet mark value.
func Mark(m uint32) Value { return Value{typ: TypeMark, num: m, bits: -1} }

// Int returns an integer value, the key of a map indexed by numgen or jhash.
func Int(n uint32) Value { return Value{typ: TypeInteger, num: n, bits: -1} }

// Ifname returns an interface name value. In a match a trailing "*" makes it
// a prefix match ("veth*").
func Ifname(s string) Value { return Value{typ: TypeIfname, str: s, bits: -1} }

// Type returns the value's data type (0 for the zero Value).
func (v Value) Type() Type { return v.typ }

// IsPrefix reports whether the value is an address prefix shorter than a
// full address.
func (v Value) IsPrefix() bool { return v.bits >= 0 }

// AsAddr returns the address of an address or prefix value.
func (v Value) AsAddr() netip.Addr { return v.addr }

// AsPrefix returns the value as a prefix (a full-length prefix for a plain
// address).
func (v Value) AsPrefix() netip.Prefix {
	if v.bits < 0 {
		return netip.PrefixFrom(v.addr, v.addr.BitLen())
	}
	return netip.PrefixFrom(v.addr, v.bits)
}

// AsUint returns the number of a Proto, Port, Mark or Int value.
func (v Value) AsUint() uint32 { return v.num }

// AsString returns the name of an Ifname value.
func (v Value) AsString() string { return v.str }

var protoNames = map[uint32]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}

// String returns the value as nft writes it.
func (v Value) String() string {
	switch v.typ {
	case TypeIPv4Addr, TypeIPv6Addr:
		if v.bits >= 0 {
			return netip.PrefixFrom(v.addr, v.bits).Masked().String()
		}
		return v.addr.String()
	case TypeInetProto:
		if n, ok := protoNames[v.num]; ok {
			return n
		}
		return strconv.FormatUint(uint64(v.num), 10)
	case TypeInetService, TypeInteger:
		return strconv.FormatUint(uint64(v.num), 10)
	case TypeMark:
		return fmt.Sprintf("0x%08x", v.num)
	case TypeIfname:
		return strconv.Quote(v.str)
	}
	return "<invalid>"
}

// Equal reports whether two values are the same.
func (v Value) Equal(o Value) bool {
	if v.typ != o.typ || v.bits != o.bits || v.num != o.num || v.str != o.str {
		return false
	}
	if v.bits >= 0 {
		return netip.PrefixFrom(v.addr, v.bits).Masked() == netip.PrefixFrom(o.addr, o.bits).Masked()
	}
	return v.addr == o.addr
}

// VerdictKind is what a verdict does.
type VerdictKind uint8

// Verdict kinds.
const (
	VerdictAccept VerdictKind = iota + 1
	VerdictDrop
	VerdictReturn
	VerdictJump
	VerdictGoto
	VerdictContinue
)

// Verdict ends (or continues) rule evaluation. Chain is the target of Jump
// and Goto. As a statement it is the last statement of a rule.
type Verdict struct {
	Kind  VerdictKind
	Chain string
}

// Accept, Drop, Return, Jump and Goto build verdicts.
func Accept() Verdict { return Verdict{Kind: VerdictAccept} }

// Drop returns the drop verdict.
func Drop() Verdict { return Verdict{Kind: VerdictDrop} }

// Return returns the return verdict.
func Return() Verdict { return Verdict{Kind: VerdictReturn} }

// Jump returns a verdict that jumps to chain and comes back.
func Jump(chain string) Verdict { return Verdict{Kind: VerdictJump, Chain: chain} }

// Goto returns a verdict that continues in chain and does not come back.
func Goto(chain string) Verdict { return Verdict{Kind: VerdictGoto, Chain: chain} }

// String returns the verdict as nft writes it.
func (v Verdict) String() string {
	switch v.Kind {
	case VerdictAccept:
		return "accept"
	case VerdictDrop:
		return "drop"
	case VerdictReturn:
		return "return"
	case VerdictContinue:
		return "continue"
	case VerdictJump:
		return "jump " + v.Chain
	case VerdictGoto:
		return "goto " + v.Chain
	}
	return "<invalid verdict>"
}

// Set is a named set or map. A set has only Key; a map also has Data (its
// value type, possibly a concatenation such as ipv4_addr . inet_service) or
// is a verdict map when Data is []Type{TypeVerdict}.
type Set struct {
	Name string
	Key  []Type // one type, or several for a concatenation
	Data []Type // nil for a set

	// Interval lets elements be prefixes (CIDR ranges). Only for a key of
	// one address type.
	Interval bool
	// Timeout lets elements expire; DefaultTimeout is used for elements
	// without their own.
	Timeout        bool
	DefaultTimeout time.Duration
	// Dynamic lets rules add and update elements (`update @set {...}`).
	// The engine never diffs the elements of a dynamic set: the kernel
	// owns them.
	Dynamic bool
	// Constant forbids changing the elements after creation.
	Constant bool
	// Size bounds the number of elements; 0 is the kernel default (for
	// dynamic sets the renderer and engine use 65535 explicitly).
	Size uint32
	// Comment is shown by nft list (at most 128 printable bytes).
	Comment string

	Elements []Element
}

// IsMap reports whether the set is a map.
func (s *Set) IsMap() bool { return len(s.Data) > 0 }

// IsVerdictMap reports whether the set is a verdict map.
func (s *Set) IsVerdictMap() bool { return len(s.Data) == 1 && s.Data[0] == TypeVerdict }

// usesTypeof reports whether nft needs a typeof declaration for the set.
func (s *Set) usesTypeof() bool {
	for _, ts := range [][]Type{s.Key, s.Data} {
		for _, t := range ts {
			if t == TypeInteger {
				return true
			}
		}
	}
	return false
}

const defaultDynamicSize = 65535

func (s *Set) effectiveSize() uint32 {
	if s.Size == 0 && s.Dynamic {
		return defaultDynamicSize
	}
	return s.Size
}

// Element is one element of a set or map.
type Element struct {
	Key     []Value  // one value per key field
	Data    []Value  // data of a map element
	Verdict *Verdict // data of a verdict map element
	// Timeout overrides the set's default timeout; only for sets with
	// Timeout.
	Timeout time.Duration
	Comment string
}

// E builds a set element from its key values.
func E(key ...Value) Element { return Element{Key: key} }

// MapElem builds a map element.
func MapElem(key []Value, data ...Value) Element { return Element{Key: key, Data: data} }

// VMapElem builds a verdict map element.
func VMapElem(v Verdict, key ...Value) Element { return Element{Key: key, Verdict: &v} }

// keyString renders the key of an element as nft writes it.
func (e *Element) keyString() string {
	parts := make([]string, len(e.Key))
	for i, v := range e.Key {
		parts[i] = v.String()
	}
	return strings.Join(parts, " . ")
}

func (e *Element) dataString() string {
	if e.Verdict != nil {
		return e.Verdict.String()
	}
	parts := make([]string, len(e.Data))
	for i, v := range e.Data {
		parts[i] = v.String()
	}
	return strings.Join(parts, " . ")
}

// formatDuration writes a duration the way nft prints timeouts: "3h",
// "1h30m", "10s", "500ms".
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	ms := d.Milliseconds()
	var b strings.Builder
	units := []struct {
		n    int64
		name string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}}
	for _, u := range units {
		if ms >= u.n {
			b.WriteString(strconv.FormatInt(ms/u.n, 10))
			b.WriteString(u.name)
			ms %= u.n
		}
	}
	return b.String()
}

// maxTimeout is the longest timeout the kernel accepts (it keeps
// milliseconds in 64 bits but jiffies in fewer); nft itself refuses more
// than this.
const maxTimeout = time.Duration(math.MaxUint32) * time.Millisecond
