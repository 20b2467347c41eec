package iptables

import (
	"net/netip"
	"strings"
)

// Rule is one iptables rule: the basic matches every rule has (addresses,
// interfaces, protocol), extension matches in order, and a target.
//
// A Rule renders exactly as iptables-save prints it back: the basic matches
// come first in save order (-s, -d, -i, -o, -p, -f), then the extension
// matches in the order given, then the target. Every Rule that validates
// parses back from its rendered text to an equal Rule, and, after a round
// trip through the kernel, from iptables-save's output too — with one
// exception: a RawMatch or RawTarget spelling something the typed values
// cover (RawMatch{Module: "comment", ...}, RawTarget{Name: "LBK-X"}) comes
// back typed.
type Rule struct {
	Src Addr  // -s
	Dst Addr  // -d
	In  Iface // -i
	Out Iface // -o
	// Proto is -p; required (tcp, udp or sctp, not inverted) when a Ports
	// match, a port in a NAT target or REJECT with tcp-reset is used.
	Proto ProtoMatch
	// Fragment is -f (IPv4 only).
	Fragment Fragment
	// Matches are the extension matches (-m ...), in order.
	Matches []Match
	// Target is what the rule does (-j or -g); nil for a rule that only
	// counts packets.
	Target Target
}

// Addr is the -s or -d match: a prefix, optionally inverted. The zero Addr
// matches every address and is not printed. The prefix must be masked
// (10.0.0.0/8, not 10.1.2.3/8) and of the rule's family: iptables masks it
// and iptables-save prints the masked form, so only that form round-trips.
// /0 is not allowed (iptables-save omits it); leave the Addr zero instead.
type Addr struct {
	Prefix netip.Prefix
	Invert bool
}

// IsZero reports whether a matches everything.
func (a Addr) IsZero() bool { return !a.Prefix.IsValid() && !a.Invert }

// Iface is the -i or -o match: an interface name, optionally inverted. A
// trailing '+' matches every name with that prefix ("veth+"). The zero
// Iface matches every interface.
type Iface struct {
	Name   string
	Invert bool
}

// Protocol is an IP protocol as iptables-save prints it: "tcp", "udp",
// "sctp", "icmp", "ipv6-icmp", ...
type Protocol string

// Protocols with first-class support. Any other name iptables knows works
// in a rule too.
const (
	ProtoTCP    Protocol = "tcp"
	ProtoUDP    Protocol = "udp"
	ProtoSCTP   Protocol = "sctp"
	ProtoICMP   Protocol = "icmp"
	ProtoICMPv6 Protocol = "ipv6-icmp"
)

// hasPorts reports whether p has a port match module (tcp, udp, sctp).
func (p Protocol) hasPorts() bool { return p == ProtoTCP || p == ProtoUDP || p == ProtoSCTP }

// ProtoMatch is the -p match. The zero ProtoMatch matches every protocol.
type ProtoMatch struct {
	Proto  Protocol
	Invert bool
}

// Fragment is the -f match of IPv4 rules.
type Fragment uint8

// Fragment values: any packet (the default), only second and later
// fragments (-f), or everything but those (! -f).
const (
	FragmentAny Fragment = iota
	FragmentOnly
	FragmentNot
)

// Match is an extension match (-m). The implementations are Comment, Ports,
// Statistic, MarkMatch, AddrType, Recent, Conntrack and RawMatch (any other
// module, kept as text).
type Match interface {
	// appendMatch validates the match in the context of rule r and appends
	// its save form, starting with " -m <module>".
	appendMatch(b []byte, f Family, r *Rule) ([]byte, error)
}

// Target is what a rule does. The implementations are Verdict (ACCEPT, DROP,
// RETURN), Jump, Goto, Reject, DNAT, SNAT, Masquerade, Mark and RawTarget.
type Target interface {
	// appendTarget validates the target in the context of rule r and
	// appends its save form, starting with " -j " or " -g ".
	appendTarget(b []byte, f Family, r *Rule) ([]byte, error)
	// tableOK reports whether the target may be used in table t.
	tableOK(t Table) bool
}

// appendRuleSpec validates r and appends its save form after "-A CHAIN":
// every part starts with a space.
func appendRuleSpec(b []byte, f Family, r *Rule) ([]byte, error) {
	var err error
	if b, err = appendAddr(b, f, "src", 's', r.Src); err != nil {
		return b, err
	}
	if b, err = appendAddr(b, f, "dst", 'd', r.Dst); err != nil {
		return b, err
	}
	if b, err = appendIface(b, "in", 'i', r.In); err != nil {
		return b, err
	}
	if b, err = appendIface(b, "out", 'o', r.Out); err != nil {
		return b, err
	}
	if r.Proto.Proto != "" {
		if err := validateProtocol(r.Proto.Proto); err != nil {
			return b, inField("proto", err)
		}
		if r.Proto.Invert {
			b = append(b, " !"...)
		}
		b = append(b, " -p "...)
		b = append(b, r.Proto.Proto...)
	} else if r.Proto.Invert {
		return b, invalid("proto", "inverted without a protocol")
	}
	switch r.Fragment {
	case FragmentAny:
	case FragmentOnly, FragmentNot:
		if f != IPv4 {
			return b, invalid("fragment", "-f exists only for IPv4")
		}
		if r.Fragment == FragmentNot {
			b = append(b, " !"...)
		}
		b = append(b, " -f"...)
	default:
		return b, invalid("fragment", "unknown value %d", r.Fragment)
	}
	portMatches := 0
	for i, m := range r.Matches {
		if m == nil {
			return b, invalid(indexed("matches", i), "nil match")
		}
		if _, ok := m.(Ports); ok {
			portMatches++
			if portMatches > 1 {
				// iptables-nft merges two port matches into one, so the
				// rule would not read back the same on that backend.
				return b, invalid(indexed("matches", i), "at most one Ports match per rule")
			}
		}
		if b, err = m.appendMatch(b, f, r); err != nil {
			return b, inField(indexed("matches", i), err)
		}
	}
	if r.Target != nil {
		if b, err = r.Target.appendTarget(b, f, r); err != nil {
			return b, inField("target", err)
		}
	}
	return b, nil
}

func appendAddr(b []byte, f Family, field string, letter byte, a Addr) ([]byte, error) {
	if !a.Prefix.IsValid() {
		if a.Invert {
			return b, invalid(field, "inverted without a prefix")
		}
		return b, nil
	}
	if err := checkPrefix(f, a.Prefix); err != nil {
		return b, inField(field, err)
	}
	if a.Invert {
		b = append(b, " !"...)
	}
	b = append(b, " -"...)
	b = append(b, letter, ' ')
	return a.Prefix.AppendTo(b), nil
}

func checkPrefix(f Family, p netip.Prefix) error {
	if err := checkAddr(f, p.Addr()); err != nil {
		return err
	}
	if p.Bits() == 0 {
		return invalid("", "%s: /0 matches everything and iptables-save omits it; leave the Addr zero", p)
	}
	if p.Masked() != p {
		return invalid("", "%s has host bits set; iptables stores %s", p, p.Masked())
	}
	return nil
}

func checkAddr(f Family, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return invalid("", "missing address")
	case a.Zone() != "":
		return invalid("", "%s: zones are not allowed", a)
	case f == IPv4 && !a.Is4():
		return invalid("", "%s is not an IPv4 address", a)
	case f == IPv6 && (!a.Is6() || a.Is4In6()):
		return invalid("", "%s is not an IPv6 address (IPv4-mapped addresses are not allowed)", a)
	}
	return nil
}

// maxIfaceLen is IFNAMSIZ minus the NUL.
const maxIfaceLen = 15

func appendIface(b []byte, field string, letter byte, i Iface) ([]byte, error) {
	if i.Name == "" {
		if i.Invert {
			return b, invalid(field, "inverted without an interface name")
		}
		return b, nil
	}
	if err := validateIface(i.Name); err != nil {
		return b, inField(field, err)
	}
	if i.Name == "+" && !i.Invert {
		return b, invalid(field, `"+" matches every interface and iptables-save omits it; leave the Iface zero`)
	}
	if i.Invert {
		b = append(b, " !"...)
	}
	b = append(b, " -"...)
	b = append(b, letter, ' ')
	return append(b, i.Name...), nil
}

// validateIface accepts what the kernel accepts as an interface name (1 to
// 15 bytes, no '/', no whitespace, not "." or "..") minus anything that
// would need quoting: iptables-save prints interface names verbatim.
func validateIface(name string) error {
	if len(name) > maxIfaceLen {
		return invalid("", "interface name %q longer than %d bytes", name, maxIfaceLen)
	}
	if name == "." || name == ".." {
		return invalid("", "interface name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '"' || c == '\'' || c == '\\' || c == ':' {
			return invalid("", "interface name %q has byte %q", name, c)
		}
		if c == '+' && i != len(name)-1 {
			return invalid("", "interface name %q: '+' only as the last byte", name)
		}
	}
	if name[0] == '!' || name[0] == '-' {
		return invalid("", "interface name %q starts with %q", name, name[0])
	}
	return nil
}

// validateProtocol accepts a protocol name or number as a single bare
// token.
func validateProtocol(p Protocol) error {
	s := string(p)
	if s == "icmpv6" {
		return invalid("", `write "ipv6-icmp", the name iptables-save prints`)
	}
	if s == "all" || s == "0" {
		return invalid("", "%q matches every protocol and iptables-save omits it; leave Proto empty", s)
	}
	if s == "" || len(s) > 32 {
		return invalid("", "protocol %q", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return invalid("", "protocol %q has byte %q", s, c)
		}
	}
	return nil
}

// Args returns the rule as the argument list of an iptables command
// ("-s", "10.0.0.0/8", "-m", "comment", "--comment", "a b", "-j", "X"), for
// go-iptables and for people. It validates the rule like the renderer.
func (r *Rule) Args(f Family) ([]string, error) {
	b, err := appendRuleSpec(nil, f, r)
	if err != nil {
		return nil, err
	}
	toks, err := tokenize(string(b), nil)
	if err != nil {
		return nil, invalid("", "rendered rule does not tokenize: %v", err)
	}
	out := make([]string, len(toks))
	for i, t := range toks {
		out[i] = t.s
	}
	return out, nil
}

// Validate checks that r can be rendered for family f.
func (r *Rule) Validate(f Family) error {
	_, err := appendRuleSpec(nil, f, r)
	return err
}

// String returns the rule's save form without "-A CHAIN", or the validation
// error in angle brackets. Intended for logs and test failures.
func (r *Rule) String() string {
	b, err := appendRuleSpec(nil, familyOfRule(r), r)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimPrefix(string(b), " ")
}

// familyOfRule guesses the family of a rule from its addresses, for String.
func familyOfRule(r *Rule) Family {
	for _, p := range []netip.Prefix{r.Src.Prefix, r.Dst.Prefix} {
		if p.IsValid() && p.Addr().Is6() {
			return IPv6
		}
	}
	for _, m := range r.Matches {
		if rc, ok := m.(Recent); ok && rc.Mask.Is6() {
			return IPv6
		}
	}
	switch t := r.Target.(type) {
	case DNAT:
		if t.Addr.Is6() {
			return IPv6
		}
	case SNAT:
		if t.Addr.Is6() {
			return IPv6
		}
	case Reject:
		if t.With.v6Only() {
			return IPv6
		}
	}
	if r.Proto.Proto == ProtoICMPv6 {
		return IPv6
	}
	return IPv4
}
