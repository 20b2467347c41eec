package iptables

import (
	"net/netip"
	"strconv"
)

// targetHooks returns the hooks a target may be used from, 0 for all.
func targetHooks(t Target) hookMask {
	switch t.(type) {
	case DNAT:
		return hookPrerouting | hookOutput
	case SNAT:
		return hookPostrouting | hookInput
	case Masquerade:
		return hookPostrouting
	case Reject:
		return hookInput | hookForward | hookOutput
	}
	return 0
}

// Verdict is a standard target: ACCEPT, DROP or RETURN.
type Verdict string

// The verdicts.
const (
	Accept Verdict = "ACCEPT"
	Drop   Verdict = "DROP"
	Return Verdict = "RETURN"
)

func (v Verdict) appendTarget(b []byte, _ Family, _ *Rule) ([]byte, error) {
	switch v {
	case Accept, Drop, Return:
	default:
		return b, invalid("", "unknown verdict %q", string(v))
	}
	b = append(b, " -j "...)
	return append(b, v...), nil
}

func (Verdict) tableOK(Table) bool { return true }

// Jump is `-j CHAIN`: continue in a user-defined chain and come back.
type Jump struct{ Chain ChainName }

func (j Jump) appendTarget(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if err := checkJumpTarget(j.Chain); err != nil {
		return b, err
	}
	b = append(b, " -j "...)
	return append(b, j.Chain...), nil
}

func (Jump) tableOK(Table) bool { return true }

// Goto is `-g CHAIN`: continue in a user-defined chain without coming back.
type Goto struct{ Chain ChainName }

func (g Goto) appendTarget(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if err := checkJumpTarget(g.Chain); err != nil {
		return b, err
	}
	b = append(b, " -g "...)
	return append(b, g.Chain...), nil
}

func (Goto) tableOK(Table) bool { return true }

func checkJumpTarget(c ChainName) error {
	if c.IsBuiltin() {
		return &ValidationError{Field: "chain", Err: &ChainNameError{Name: string(c), Err: ErrChainNameBuiltin,
			Reason: "a rule can jump to user-defined chains only"}}
	}
	if err := c.validateRef(); err != nil {
		return &ValidationError{Field: "chain", Err: err}
	}
	return nil
}

// RejectWith is the ICMP (or TCP) answer of a REJECT target. The zero value
// is "port unreachable", which iptables uses by default and iptables-save
// prints explicitly; the parser returns the zero value for it.
type RejectWith uint8

// The REJECT answers. Some exist in one family only.
const (
	RejectPortUnreachable  RejectWith = iota // icmp-port-unreachable / icmp6-port-unreachable
	RejectNetUnreachable                     // IPv4: icmp-net-unreachable
	RejectHostUnreachable                    // IPv4: icmp-host-unreachable
	RejectProtoUnreachable                   // IPv4: icmp-proto-unreachable
	RejectNetProhibited                      // IPv4: icmp-net-prohibited
	RejectHostProhibited                     // IPv4: icmp-host-prohibited
	RejectAdminProhibited                    // icmp-admin-prohibited / icmp6-adm-prohibited
	RejectTCPReset                           // tcp-reset; needs Proto tcp
	RejectNoRoute                            // IPv6: icmp6-no-route
	RejectAddrUnreachable                    // IPv6: icmp6-addr-unreachable
	RejectPolicyFail                         // IPv6: icmp6-policy-fail
	RejectRoute                              // IPv6: icmp6-reject-route
	rejectEnd
)

func (w RejectWith) v6Only() bool { return w >= RejectNoRoute && w < rejectEnd }

// name returns the --reject-with value for family f, "" when w does not
// exist in f.
func (w RejectWith) name(f Family) string {
	if f == IPv6 {
		switch w {
		case RejectPortUnreachable:
			return "icmp6-port-unreachable"
		case RejectAdminProhibited:
			return "icmp6-adm-prohibited"
		case RejectTCPReset:
			return "tcp-reset"
		case RejectNoRoute:
			return "icmp6-no-route"
		case RejectAddrUnreachable:
			return "icmp6-addr-unreachable"
		case RejectPolicyFail:
			return "icmp6-policy-fail"
		case RejectRoute:
			return "icmp6-reject-route"
		}
		return ""
	}
	switch w {
	case RejectPortUnreachable:
		return "icmp-port-unreachable"
	case RejectNetUnreachable:
		return "icmp-net-unreachable"
	case RejectHostUnreachable:
		return "icmp-host-unreachable"
	case RejectProtoUnreachable:
		return "icmp-proto-unreachable"
	case RejectNetProhibited:
		return "icmp-net-prohibited"
	case RejectHostProhibited:
		return "icmp-host-prohibited"
	case RejectAdminProhibited:
		return "icmp-admin-prohibited"
	case RejectTCPReset:
		return "tcp-reset"
	}
	return ""
}

// Reject is `-j REJECT --reject-with ANSWER`. The kernel allows it only in
// chains reached from INPUT, FORWARD and OUTPUT.
type Reject struct {
	With RejectWith
}

func (r Reject) appendTarget(b []byte, f Family, rule *Rule) ([]byte, error) {
	name := r.With.name(f)
	if name == "" {
		return b, invalid("with", "reject type %d does not exist for %s", r.With, f)
	}
	if r.With == RejectTCPReset && (rule.Proto.Proto != ProtoTCP || rule.Proto.Invert) {
		return b, invalid("with", "tcp-reset needs the rule's Proto tcp")
	}
	b = append(b, " -j REJECT --reject-with "...)
	return append(b, name...), nil
}

func (Reject) tableOK(Table) bool { return true }

// natRange is the address[-address][:port[-port]] of DNAT and SNAT.
func appendNATRange(b []byte, f Family, addr, last netip.Addr, ports PortRange, rule *Rule) ([]byte, error) {
	if err := checkAddr(f, addr); err != nil {
		return b, inField("addr", err)
	}
	if last.IsValid() {
		if err := checkAddr(f, last); err != nil {
			return b, inField("addr_last", err)
		}
		if last.Compare(addr) <= 0 {
			return b, invalid("addr_last", "%s must be above %s (leave it zero for one address)", last, addr)
		}
	}
	if !ports.IsZero() {
		if err := checkNATPorts(ports, rule); err != nil {
			return b, err
		}
	}
	bracket := f == IPv6 && !ports.IsZero()
	if bracket {
		b = append(b, '[')
	}
	b = addr.AppendTo(b)
	if last.IsValid() {
		b = append(b, '-')
		b = last.AppendTo(b)
	}
	if bracket {
		b = append(b, ']')
	}
	if !ports.IsZero() {
		b = append(b, ':')
		b = ports.appendTo(b, '-')
	}
	return b, nil
}

func checkNATPorts(ports PortRange, rule *Rule) error {
	if ports.First == 0 || ports.Last < ports.First {
		return invalid("ports", "port range %d-%d: ports start at 1 and ranges go up", ports.First, ports.Last)
	}
	if !rule.Proto.Proto.hasPorts() || rule.Proto.Invert {
		return invalid("ports", "a port needs the rule's Proto to be tcp, udp or sctp")
	}
	return nil
}

// DNAT is `-j DNAT --to-destination ADDR[-LAST][:PORTS]` (IPv6:
// `[ADDR]:PORTS`). Valid in the nat table, in chains reached from
// PREROUTING and OUTPUT.
type DNAT struct {
	Addr       netip.Addr
	AddrLast   netip.Addr // zero for a single address
	Ports      PortRange  // zero to keep the port
	Random     bool
	Persistent bool
}

func (d DNAT) appendTarget(b []byte, f Family, rule *Rule) ([]byte, error) {
	b = append(b, " -j DNAT --to-destination "...)
	b, err := appendNATRange(b, f, d.Addr, d.AddrLast, d.Ports, rule)
	if err != nil {
		return b, err
	}
	if d.Random {
		b = append(b, " --random"...)
	}
	if d.Persistent {
		b = append(b, " --persistent"...)
	}
	return b, nil
}

func (DNAT) tableOK(t Table) bool { return t == TableNAT }

// SNAT is `-j SNAT --to-source ADDR[-LAST][:PORTS]`. Valid in the nat
// table, in chains reached from POSTROUTING and INPUT.
type SNAT struct {
	Addr        netip.Addr
	AddrLast    netip.Addr
	Ports       PortRange
	Random      bool
	RandomFully bool
	Persistent  bool
}

func (s SNAT) appendTarget(b []byte, f Family, rule *Rule) ([]byte, error) {
	b = append(b, " -j SNAT --to-source "...)
	b, err := appendNATRange(b, f, s.Addr, s.AddrLast, s.Ports, rule)
	if err != nil {
		return b, err
	}
	if s.Random {
		b = append(b, " --random"...)
	}
	if s.RandomFully {
		b = append(b, " --random-fully"...)
	}
	if s.Persistent {
		b = append(b, " --persistent"...)
	}
	return b, nil
}

func (SNAT) tableOK(t Table) bool { return t == TableNAT }

// Masquerade is `-j MASQUERADE [--to-ports P[-Q]] [--random]
// [--random-fully]`: SNAT to the address of the outgoing interface. Valid
// in the nat table, in chains reached from POSTROUTING.
type Masquerade struct {
	Ports       PortRange
	Random      bool
	RandomFully bool
}

func (m Masquerade) appendTarget(b []byte, _ Family, rule *Rule) ([]byte, error) {
	b = append(b, " -j MASQUERADE"...)
	if !m.Ports.IsZero() {
		if err := checkNATPorts(m.Ports, rule); err != nil {
			return b, err
		}
		b = append(b, " --to-ports "...)
		b = m.Ports.appendTo(b, '-')
	}
	if m.Random {
		b = append(b, " --random"...)
	}
	if m.RandomFully {
		b = append(b, " --random-fully"...)
	}
	return b, nil
}

func (Masquerade) tableOK(t Table) bool { return t == TableNAT }

// Mark is the MARK target as iptables-save prints it:
// `-j MARK --set-xmark VALUE/MASK`, which sets mark = (mark &^ Mask) ^ Value.
// OrMark, AndMark, XorMark and SetMark build the other spellings iptables
// accepts; they are all printed as --set-xmark.
type Mark struct {
	Value, Mask uint32
}

// OrMark is `--or-mark BITS`: sets BITS and keeps the rest (kube-proxy's
// KUBE-MARK-MASQ).
func OrMark(bits uint32) Mark { return Mark{Value: bits, Mask: bits} }

// AndMark is `--and-mark BITS`: clears every bit not in BITS.
func AndMark(bits uint32) Mark { return Mark{Value: 0, Mask: ^bits} }

// XorMark is `--xor-mark BITS`: flips BITS.
func XorMark(bits uint32) Mark { return Mark{Value: bits, Mask: 0} }

// SetMark is `--set-mark VALUE/MASK`: clears MASK, then sets VALUE.
func SetMark(value, mask uint32) Mark { return Mark{Value: value, Mask: mask} }

func (m Mark) appendTarget(b []byte, _ Family, _ *Rule) ([]byte, error) {
	b = append(b, " -j MARK --set-xmark 0x"...)
	b = strconv.AppendUint(b, uint64(m.Value), 16)
	b = append(b, "/0x"...)
	return strconv.AppendUint(b, uint64(m.Mask), 16), nil
}

func (Mark) tableOK(Table) bool { return true }

// RawTarget is any other target, kept as text: Name after -j and Spec its
// options exactly as iptables-save prints them (`LOG --log-prefix "x: "`).
// Like RawMatch, Spec may not hold control characters or unbalanced quotes.
type RawTarget struct {
	Name string
	Spec string
}

func (t RawTarget) appendTarget(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if err := validateModuleName(t.Name); err != nil {
		return b, inField("name", err)
	}
	if err := validateSpec(t.Spec); err != nil {
		return b, &ValidationError{Field: "spec", Reason: err.Error()}
	}
	b = append(b, " -j "...)
	b = append(b, t.Name...)
	if t.Spec != "" {
		b = append(b, ' ')
		b = append(b, t.Spec...)
	}
	return b, nil
}

func (RawTarget) tableOK(Table) bool { return true }
