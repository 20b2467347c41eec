package nftables

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stmt is one statement of a rule: a match or an action. The set of
// statements is closed; the concrete types are Match, NFProtoMatch,
// MarkMatch, FibLocal, CtState, CtStatus, Lookup, Counter, SetMark, DNAT, DNATMap,
// SNAT, Masquerade, Verdict, VMap, Reject, SetUpdate, and Unknown (only
// produced when reading back a rule the engine cannot decode).
//
// Each statement renders itself as nft text (String) and compiles to
// google/nftables expressions, adding the `meta nfproto` and `meta l4proto`
// guards nft would add in an inet table.
type Stmt interface {
	fmt.Stringer
	check(c *ruleCheck) error
	compile(c *ruleCompiler) error
}

// Key is what a map or verdict map is indexed with: a concatenation of
// fields (Concat), a random number (Numgen) or a hash of fields (JHash).
type Key interface {
	fmt.Stringer
	keyTypes() []Type
	checkKey(c *ruleCheck, path string) error
}

// Concat is a key made of packet fields, concatenated in order:
// Concat{FieldIPDaddr, FieldL4Proto, FieldTHDport} is
// `ip daddr . meta l4proto . th dport`.
type Concat []Field

// String returns the key as nft writes it.
func (k Concat) String() string   { return fieldsString(k) }
func (k Concat) keyTypes() []Type { return fieldTypes(k) }

// Numgen is `numgen random mod Mod offset Offset`: a uniformly random
// number in [Offset, Offset+Mod).
type Numgen struct {
	Mod    uint32
	Offset uint32
}

// String returns the key as nft writes it.
func (k Numgen) String() string {
	s := fmt.Sprintf("numgen random mod %d", k.Mod)
	if k.Offset != 0 {
		s += fmt.Sprintf(" offset %d", k.Offset)
	}
	return s
}
func (Numgen) keyTypes() []Type { return []Type{TypeInteger} }

// JHash is `jhash <fields> mod Mod seed Seed offset Offset`: the Jenkins
// hash of the concatenated fields, reduced to [Offset, Offset+Mod). Seed
// must not be zero: google/nftables v0.3.0 omits a zero seed and the kernel
// then picks a random one, which would make the hash differ between nodes.
type JHash struct {
	Fields []Field
	Mod    uint32
	Seed   uint32
	Offset uint32
}

// String returns the key as nft writes it.
func (k JHash) String() string {
	s := fmt.Sprintf("jhash %s mod %d seed 0x%x", fieldsString(k.Fields), k.Mod, k.Seed)
	if k.Offset != 0 {
		s += fmt.Sprintf(" offset %d", k.Offset)
	}
	return s
}
func (JHash) keyTypes() []Type { return []Type{TypeInteger} }

// Match compares one field with a value (`ip saddr 10.0.0.0/8`), or tests
// membership in an anonymous set of values (`tcp dport { 80, 443 }`) when
// Values has several. Neg inverts it (`!=`). For a named set use Lookup.
type Match struct {
	Field  Field
	Neg    bool
	Values []Value
}

// String returns the statement as nft writes it.
func (m Match) String() string {
	var b strings.Builder
	b.WriteString(m.Field.String())
	if m.Neg {
		b.WriteString(" !=")
	}
	b.WriteByte(' ')
	if len(m.Values) == 1 {
		b.WriteString(m.Values[0].String())
	} else {
		writeValueSet(&b, m.Values)
	}
	return b.String()
}

func writeValueSet(b *strings.Builder, vs []Value) {
	b.WriteString("{ ")
	for i, v := range vs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.String())
	}
	b.WriteString(" }")
}

// NFProtoMatch is `meta nfproto ipv4` or `meta nfproto ipv6` (inet tables
// only). Family is FamilyIPv4 or FamilyIPv6.
type NFProtoMatch struct {
	Family Family
}

// String returns the statement as nft writes it.
func (m NFProtoMatch) String() string {
	if m.Family == FamilyIPv6 {
		return "meta nfproto ipv6"
	}
	return "meta nfproto ipv4"
}

// MarkMatch tests bits of the packet mark: `meta mark & Mask == Value`
// (`!=` with Neg). A zero Mask means all bits: `meta mark Value`.
type MarkMatch struct {
	Mask  uint32
	Value uint32
	Neg   bool
}

// String returns the statement as nft writes it.
func (m MarkMatch) String() string {
	op := ""
	if m.Neg {
		op = "!= "
	}
	if m.Mask == 0 || m.Mask == 0xffffffff {
		return fmt.Sprintf("meta mark %s0x%08x", op, m.Value)
	}
	if !m.Neg {
		op = "== "
	}
	return fmt.Sprintf("meta mark & 0x%08x %s0x%08x", m.Mask, op, m.Value)
}

// FibLocal is `fib daddr type local`: the destination is an address of
// this host. With Source it is `fib saddr type local`: the source is an
// address of this host (traffic the node itself sends). Neg inverts it.
type FibLocal struct {
	Neg    bool
	Source bool
}

// String returns the statement as nft writes it.
func (m FibLocal) String() string {
	addr := "daddr"
	if m.Source {
		addr = "saddr"
	}
	if m.Neg {
		return "fib " + addr + " type != local"
	}
	return "fib " + addr + " type local"
}

// CtStateBits is a set of conntrack states.
type CtStateBits uint32

// Conntrack states, as nft's ct state.
const (
	CtInvalid     CtStateBits = 1
	CtEstablished CtStateBits = 2
	CtRelated     CtStateBits = 4
	CtNew         CtStateBits = 8
	CtUntracked   CtStateBits = 64
)

var ctStateNames = []struct {
	bit  CtStateBits
	name string
}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}, {CtUntracked, "untracked"}}

// CtState is `ct state new` or `ct state established,related`: the
// connection is in any of States. Neg is `ct state != ...`.
type CtState struct {
	States CtStateBits
	Neg    bool
}

// String returns the statement as nft writes it.
func (m CtState) String() string {
	var names []string
	for _, s := range ctStateNames {
		if m.States&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	op := ""
	if m.Neg {
		op = "!= "
	}
	return "ct state " + op + strings.Join(names, ",")
}

// CtStatusBits is a set of conntrack status bits.
type CtStatusBits uint32

// Conntrack status bits CtStatus can test.
const (
	CtStatusSNAT CtStatusBits = 0x10 // the connection is source NATed
	CtStatusDNAT CtStatusBits = 0x20 // the connection is destination NATed
)

// CtStatus is `ct status dnat`: the connection has any of Bits. It lets a
// postrouting rule tell DNATed (service) traffic without a per-service mark.
type CtStatus struct {
	Bits CtStatusBits
}

// String returns the statement as nft writes it.
func (m CtStatus) String() string {
	var names []string
	if m.Bits&CtStatusSNAT != 0 {
		names = append(names, "snat")
	}
	if m.Bits&CtStatusDNAT != 0 {
		names = append(names, "dnat")
	}
	return "ct status " + strings.Join(names, ",")
}

// Lookup tests membership of a concatenation of fields in a named set:
// `ip saddr . ip daddr . meta l4proto . th dport @aff`. Neg is `!=`.
type Lookup struct {
	Fields []Field
	Set    string
	Neg    bool
}

// String returns the statement as nft writes it.
func (m Lookup) String() string {
	op := ""
	if m.Neg {
		op = "!= "
	}
	return fieldsString(m.Fields) + " " + op + "@" + m.Set
}

// Counter counts packets and bytes: `counter`.
type Counter struct{}

// String returns the statement as nft writes it.
func (Counter) String() string { return "counter" }

// MarkOp is how SetMark combines its value with the packet mark.
type MarkOp uint8

// Mark operations.
const (
	MarkSet MarkOp = iota // mark = v
	MarkOr                // mark |= v
	MarkXor               // mark ^= v
	MarkAnd               // mark &= v
)

// SetMark changes the packet mark: `meta mark set 0x10`, or
// `meta mark set meta mark | 0x4000` with MarkOr.
type SetMark struct {
	Op    MarkOp
	Value uint32
}

// String returns the statement as nft writes it.
func (s SetMark) String() string {
	switch s.Op {
	case MarkOr:
		return fmt.Sprintf("meta mark set meta mark | 0x%08x", s.Value)
	case MarkXor:
		return fmt.Sprintf("meta mark set meta mark ^ 0x%08x", s.Value)
	case MarkAnd:
		return fmt.Sprintf("meta mark set meta mark & 0x%08x", s.Value)
	}
	return fmt.Sprintf("meta mark set 0x%08x", s.Value)
}

// DNAT rewrites the destination to Addr, and to Port when it is not zero:
// `dnat ip to 192.0.2.1:80`. A port needs an earlier match on the transport
// protocol in the same rule (as nft requires).
type DNAT struct {
	Addr netip.Addr
	Port uint16
}

// String returns the statement as nft writes it.
func (s DNAT) String() string {
	fam := "ip"
	if s.Addr.Is6() {
		fam = "ip6"
	}
	if s.Port == 0 {
		return "dnat " + fam + " to " + s.Addr.String()
	}
	return "dnat " + fam + " to " + netip.AddrPortFrom(s.Addr, s.Port).String()
}

// DNATMap rewrites the destination to the address (and port, when the map
// data is address . inet_service) found by looking Key up in a map: the
// named map Map, or the anonymous map Entries.
// `dnat ip to numgen random mod 3 map @eps4`. Family is FamilyIPv4 or
// FamilyIPv6, the family of the map data.
type DNATMap struct {
	Family  Family
	Key     Key
	Map     string
	Entries []Element
}

// String returns the statement as nft writes it.
func (s DNATMap) String() string {
	fam := "ip"
	if s.Family == FamilyIPv6 {
		fam = "ip6"
	}
	return "dnat " + fam + " to " + s.Key.String() + " map " + mapRef(s.Map, s.Entries)
}

func mapRef(name string, entries []Element) string {
	if name != "" {
		return "@" + name
	}
	var b strings.Builder
	b.WriteString("{ ")
	for i := range entries {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(entries[i].keyString())
		b.WriteString(" : ")
		b.WriteString(entries[i].dataString())
	}
	b.WriteString(" }")
	return b.String()
}

// SNAT rewrites the source to Addr: `snat ip to 192.0.2.9`.
type SNAT struct {
	Addr netip.Addr
}

// String returns the statement as nft writes it.
func (s SNAT) String() string {
	if s.Addr.Is6() {
		return "snat ip6 to " + s.Addr.String()
	}
	return "snat ip to " + s.Addr.String()
}

// Masquerade rewrites the source to the address of the outgoing interface:
// `masquerade`, or `masquerade fully-random` (random source port choice,
// which avoids port collisions between nodes).
type Masquerade struct {
	FullyRandom bool
}

// String returns the statement as nft writes it.
func (s Masquerade) String() string {
	if s.FullyRandom {
		return "masquerade fully-random"
	}
	return "masquerade"
}

// VMap looks Key up in a verdict map and applies the verdict found:
// `ip daddr . meta l4proto . th dport vmap @services` or
// `numgen random mod 2 vmap { 0 : goto a, 1 : goto b }`. When nothing is
// found evaluation continues with the next rule.
type VMap struct {
	Key     Key
	Map     string
	Entries []Element
}

// String returns the statement as nft writes it.
func (s VMap) String() string { return s.Key.String() + " vmap " + mapRef(s.Map, s.Entries) }

// RejectType is how Reject answers.
type RejectType uint8

// Reject types.
const (
	// RejectDefault is plain `reject`: ICMP or ICMPv6 port unreachable.
	RejectDefault RejectType = iota
	// RejectICMPX answers with a family-independent ICMPX code.
	RejectICMPX
	// RejectICMP answers IPv4 with an ICMP destination-unreachable code.
	RejectICMP
	// RejectICMPv6 answers IPv6 with an ICMPv6 destination-unreachable code.
	RejectICMPv6
	// RejectTCPReset answers TCP with a reset.
	RejectTCPReset
)

// ICMPX codes for Reject with RejectICMPX.
const (
	ICMPXNoRoute         uint8 = 0
	ICMPXPortUnreachable uint8 = 1
	ICMPXHostUnreachable uint8 = 2
	ICMPXAdminProhibited uint8 = 3
)

var icmpxNames = map[uint8]string{0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"}

var icmpNames = map[uint8]string{0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable",
	9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}

var icmpv6Names = map[uint8]string{0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable",
	5: "policy-fail", 6: "reject-route"}

// Reject refuses the packet with an ICMP error or a TCP reset. It is only
// allowed in input, forward and output chains (and chains they reach).
type Reject struct {
	Type RejectType
	Code uint8
}

// String returns the statement as nft writes it.
func (s Reject) String() string {
	switch s.Type {
	case RejectICMPX:
		if s.Code == ICMPXPortUnreachable {
			return "reject"
		}
		return "reject with icmpx " + icmpxNames[s.Code]
	case RejectICMP:
		return "reject with icmp " + icmpNames[s.Code]
	case RejectICMPv6:
		return "reject with icmpv6 " + icmpv6Names[s.Code]
	case RejectTCPReset:
		return "meta l4proto tcp reject with tcp reset"
	}
	return "reject"
}

// SetOp is the operation of SetUpdate.
type SetOp uint8

// Dynamic set operations.
const (
	// OpAdd adds the element if it is missing (`add @set {...}`).
	OpAdd SetOp = iota
	// OpUpdate adds the element or refreshes its timeout
	// (`update @set {...}`).
	OpUpdate
)

// SetUpdate adds or refreshes an element of a dynamic set from the packet:
// `update @aff { ip saddr timeout 3h }`, or for a dynamic map
// `update @m { ip saddr timeout 3h : numgen random mod 3 }`. Timeout 0
// uses the set's default.
type SetUpdate struct {
	Op      SetOp
	Set     string
	Key     []Field
	Data    Key // map data; nil for a set
	Timeout time.Duration
}

// String returns the statement as nft writes it.
func (s SetUpdate) String() string {
	var b strings.Builder
	if s.Op == OpAdd {
		b.WriteString("add @")
	} else {
		b.WriteString("update @")
	}
	b.WriteString(s.Set)
	b.WriteString(" { ")
	b.WriteString(fieldsString(s.Key))
	if s.Timeout > 0 {
		b.WriteString(" timeout ")
		b.WriteString(formatDuration(s.Timeout))
	}
	if s.Data != nil {
		b.WriteString(" : ")
		b.WriteString(s.Data.String())
	}
	b.WriteString(" }")
	return b.String()
}

// Unknown stands for expressions the engine read back from the kernel but
// could not decode into a statement: a rule somebody else changed. It
// renders as a comment-like marker and is refused in desired state.
type Unknown struct {
	Desc string
}

// String returns the statement as nft writes it.
func (s Unknown) String() string { return "#unknown(" + s.Desc + ")" }

func (s Unknown) check(c *ruleCheck) error {
	return c.fail("", "statement %s cannot be programmed", s)
}

func (s Unknown) compile(c *ruleCompiler) error {
	return fmt.Errorf("nftables: cannot compile %s", s)
}

// nfprotoOf returns the NFPROTO value for an address.
func nfprotoOf(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}
