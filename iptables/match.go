package iptables

import (
	"math"
	"math/bits"
	"net/netip"
	"strconv"
)

// hookMask is a set of netfilter hooks (built-in chains), used by the Fake
// to refuse what the kernel refuses. Zero means every hook.
type hookMask uint8

const (
	hookPrerouting hookMask = 1 << iota
	hookInput
	hookForward
	hookOutput
	hookPostrouting
)

func hookOf(c ChainName) hookMask {
	switch c {
	case ChainPrerouting:
		return hookPrerouting
	case ChainInput:
		return hookInput
	case ChainForward:
		return hookForward
	case ChainOutput:
		return hookOutput
	case ChainPostrouting:
		return hookPostrouting
	}
	return 0
}

// matchHooks returns the hooks a match may be used from, 0 for all.
func matchHooks(m Match) hookMask {
	if a, ok := m.(AddrType); ok {
		switch {
		case a.LimitIfaceIn:
			return hookPrerouting | hookInput | hookForward
		case a.LimitIfaceOut:
			return hookPostrouting | hookOutput | hookForward
		}
	}
	return 0
}

// Comment is the comment match: `-m comment --comment TEXT`. Quotes and
// backslashes are escaped on output; control characters (newline, tab,
// ...) and invalid UTF-8 are rejected, and so are comments longer than
// MaxCommentLen bytes (see SanitizeComment).
type Comment string

func (c Comment) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if err := validateComment(string(c)); err != nil {
		return b, &ValidationError{Field: "comment", Reason: err.Error()}
	}
	b = append(b, " -m comment --comment "...)
	return appendQuoted(b, string(c)), nil
}

// PortRange is a port or an inclusive range of ports. The zero PortRange
// means "no port". Use Port(p) for a single port.
type PortRange struct {
	First, Last uint16
}

// Port returns the range holding only p.
func Port(p uint16) PortRange { return PortRange{First: p, Last: p} }

// IsZero reports whether r is unset.
func (r PortRange) IsZero() bool { return r.First == 0 && r.Last == 0 }

func (r PortRange) validate() error {
	switch {
	case r.Last < r.First:
		return invalid("", "port range %d:%d is reversed", r.First, r.Last)
	case r.First == 0 && r.Last == math.MaxUint16:
		return invalid("", "port range 0:65535 matches every port and iptables-save omits it; leave it zero")
	}
	return nil
}

// appendPorts appends "80" or "1000<sep>2000".
func (r PortRange) appendTo(b []byte, sep byte) []byte {
	b = strconv.AppendUint(b, uint64(r.First), 10)
	if r.Last != r.First {
		b = append(b, sep)
		b = strconv.AppendUint(b, uint64(r.Last), 10)
	}
	return b
}

// Ports is the port match of the rule's protocol (`-m tcp`, `-m udp` or
// `-m sctp`, with --sport and --dport), as iptables-save prints it. The
// rule's Proto must be tcp, udp or sctp and not inverted. At least one of
// Src and Dst is set. A rule may hold one Ports match.
type Ports struct {
	Src, Dst             PortRange
	SrcInvert, DstInvert bool
}

func (p Ports) appendMatch(b []byte, _ Family, r *Rule) ([]byte, error) {
	if !r.Proto.Proto.hasPorts() || r.Proto.Invert {
		return b, invalid("", "a port match needs the rule's Proto to be tcp, udp or sctp, not inverted")
	}
	if p.Src.IsZero() && p.Dst.IsZero() {
		return b, invalid("", "neither Src nor Dst port set")
	}
	if err := p.Src.validate(); err != nil {
		return b, inField("src", err)
	}
	if err := p.Dst.validate(); err != nil {
		return b, inField("dst", err)
	}
	if p.Src.IsZero() && p.SrcInvert {
		return b, invalid("src", "inverted without a port")
	}
	if p.Dst.IsZero() && p.DstInvert {
		return b, invalid("dst", "inverted without a port")
	}
	b = append(b, " -m "...)
	b = append(b, r.Proto.Proto...)
	if !p.Src.IsZero() {
		if p.SrcInvert {
			b = append(b, " !"...)
		}
		b = append(b, " --sport "...)
		b = p.Src.appendTo(b, ':')
	}
	if !p.Dst.IsZero() {
		if p.DstInvert {
			b = append(b, " !"...)
		}
		b = append(b, " --dport "...)
		b = p.Dst.appendTo(b, ':')
	}
	return b, nil
}

// Probability is the probability of the statistic match as the kernel keeps
// it: a count of 2^-31 units, from 0 (never) to 1<<31 (always). Keeping the
// kernel's integer makes the value exact: iptables-save prints it with 11
// decimals, which parses back to the same Probability.
type Probability uint32

// ProbabilityOne is the probability 1.
const ProbabilityOne Probability = 1 << 31

// ProbabilityOf converts p, clamped to [0, 1], the way iptables does
// (lround(p * 2^31)).
func ProbabilityOf(p float64) Probability {
	switch {
	case !(p > 0): // also NaN
		return 0
	case p >= 1:
		return ProbabilityOne
	}
	return Probability(math.Round(p * float64(ProbabilityOne)))
}

// Float64 returns the probability as a number in [0, 1].
func (p Probability) Float64() float64 { return float64(p) / float64(ProbabilityOne) }

// String returns the probability the way iptables-save prints it
// ("0.33333333349").
func (p Probability) String() string { return string(p.appendTo(nil)) }

// appendTo appends p/2^31 with 11 decimals, rounded half to even like
// printf("%.11f"), in integer arithmetic: strconv's 'f' formatting with a
// precision allocates, and this runs once per endpoint rule.
func (p Probability) appendTo(b []byte) []byte {
	const scale = 100_000_000_000 // 10^11
	hi, lo := bits.Mul64(uint64(p), scale)
	q, r := bits.Div64(hi, lo, uint64(ProbabilityOne))
	const half = uint64(ProbabilityOne) / 2
	if r > half || r == half && q&1 == 1 {
		q++
	}
	b = strconv.AppendUint(b, q/scale, 10)
	b = append(b, '.')
	frac := q % scale
	for d := uint64(scale / 10); d > 0; d /= 10 {
		b = append(b, byte('0'+frac/d%10))
	}
	return b
}

// Statistic is `-m statistic --mode random --probability P`: the rule
// matches a packet with probability P, which is how kube-proxy spreads new
// connections over endpoints.
type Statistic struct {
	Probability Probability
}

func (s Statistic) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if s.Probability > ProbabilityOne {
		return b, invalid("probability", "%d is above 1<<31", uint32(s.Probability))
	}
	b = append(b, " -m statistic --mode random --probability "...)
	return s.Probability.appendTo(b), nil
}

// MarkMatch is `-m mark [!] --mark VALUE/MASK`: packets whose
// (mark & Mask) == Value. Use Mask 0xffffffff for an exact mark. Value may
// not have bits outside Mask (such a rule could never match).
type MarkMatch struct {
	Value, Mask uint32
	Invert      bool
}

func (m MarkMatch) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if m.Value&^m.Mask != 0 {
		return b, invalid("", "value %#x has bits outside mask %#x; use Mask 0xffffffff for an exact match", m.Value, m.Mask)
	}
	b = append(b, " -m mark"...)
	if m.Invert {
		b = append(b, " !"...)
	}
	b = append(b, " --mark 0x"...)
	b = strconv.AppendUint(b, uint64(m.Value), 16)
	if m.Mask != math.MaxUint32 {
		b = append(b, "/0x"...)
		b = strconv.AppendUint(b, uint64(m.Mask), 16)
	}
	return b, nil
}

// AddrTypes is a set of routing address types for the addrtype match.
type AddrTypes uint16

// The address types, in the order iptables prints them.
const (
	AddrUnspec AddrTypes = 1 << iota
	AddrUnicast
	AddrLocal
	AddrBroadcast
	AddrAnycast
	AddrMulticast
	AddrBlackhole
	AddrUnreachable
	AddrProhibit
	AddrThrow
	AddrNAT
	AddrXResolve
	addrTypeEnd
)

// addrTypeName returns the name iptables prints for bit i of AddrTypes.
func addrTypeName(i int) string {
	switch i {
	case 0:
		return "UNSPEC"
	case 1:
		return "UNICAST"
	case 2:
		return "LOCAL"
	case 3:
		return "BROADCAST"
	case 4:
		return "ANYCAST"
	case 5:
		return "MULTICAST"
	case 6:
		return "BLACKHOLE"
	case 7:
		return "UNREACHABLE"
	case 8:
		return "PROHIBIT"
	case 9:
		return "THROW"
	case 10:
		return "NAT"
	case 11:
		return "XRESOLVE"
	}
	return ""
}

const numAddrTypes = 12

func (t AddrTypes) appendTo(b []byte) []byte {
	first := true
	for i := 0; i < numAddrTypes; i++ {
		if name := addrTypeName(i); t&(1<<i) != 0 {
			if !first {
				b = append(b, ',')
			}
			b = append(b, name...)
			first = false
		}
	}
	return b
}

// String returns the types as iptables prints them ("LOCAL,BROADCAST").
func (t AddrTypes) String() string { return string(t.appendTo(nil)) }

// AddrType is `-m addrtype`: the routing type of the source and/or
// destination address (kube-proxy's `--dst-type LOCAL` finds node ports).
// LimitIfaceIn (only from PREROUTING, INPUT, FORWARD) and LimitIfaceOut
// (only from POSTROUTING, OUTPUT, FORWARD) restrict the lookup to the
// packet's interface; at most one of them.
type AddrType struct {
	Src, Dst                    AddrTypes
	SrcInvert, DstInvert        bool
	LimitIfaceIn, LimitIfaceOut bool
}

func (a AddrType) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	switch {
	case a.Src == 0 && a.Dst == 0:
		return b, invalid("", "neither Src nor Dst type set")
	case a.Src >= addrTypeEnd || a.Dst >= addrTypeEnd:
		return b, invalid("", "unknown address type bits")
	case a.Src == 0 && a.SrcInvert:
		return b, invalid("src", "inverted without a type")
	case a.Dst == 0 && a.DstInvert:
		return b, invalid("dst", "inverted without a type")
	case a.LimitIfaceIn && a.LimitIfaceOut:
		return b, invalid("", "LimitIfaceIn and LimitIfaceOut are exclusive")
	}
	b = append(b, " -m addrtype"...)
	if a.Src != 0 {
		if a.SrcInvert {
			b = append(b, " !"...)
		}
		b = append(b, " --src-type "...)
		b = a.Src.appendTo(b)
	}
	if a.Dst != 0 {
		if a.DstInvert {
			b = append(b, " !"...)
		}
		b = append(b, " --dst-type "...)
		b = a.Dst.appendTo(b)
	}
	if a.LimitIfaceIn {
		b = append(b, " --limit-iface-in"...)
	}
	if a.LimitIfaceOut {
		b = append(b, " --limit-iface-out"...)
	}
	return b, nil
}

// RecentMode is the command of the recent match.
type RecentMode uint8

// The recent commands: --set adds the address to the list, --rcheck checks
// it, --update checks it and refreshes its time, --remove drops it.
const (
	RecentSet RecentMode = iota + 1
	RecentCheck
	RecentUpdate
	RecentRemove
)

func (m RecentMode) option() string {
	switch m {
	case RecentSet:
		return "--set"
	case RecentCheck:
		return "--rcheck"
	case RecentUpdate:
		return "--update"
	case RecentRemove:
		return "--remove"
	}
	return ""
}

// MaxRecentNameLen is the longest list name of the recent match
// (XT_RECENT_NAME_LEN 200 including the NUL).
const MaxRecentNameLen = 199

// Recent is `-m recent`, a list of recently seen addresses, which is how
// kube-proxy implements ClientIP session affinity: the endpoint chain does
// `--set --name CHAIN --rsource` and the service chain sends a client found
// by `--rcheck --seconds TIMEOUT --reap --name CHAIN --rsource` back to it.
type Recent struct {
	Invert bool
	Mode   RecentMode
	// Seconds, HitCount, Reap and RTTL work with RecentCheck and
	// RecentUpdate only; Reap needs Seconds.
	Seconds  uint32
	Reap     bool
	HitCount uint32
	RTTL     bool
	// Name of the list (/proc/net/xt_recent/NAME): 1 to 199 bytes of
	// letters, digits, '-', '_' and '.'; iptables prints it verbatim.
	Name string
	// Mask is applied to the address before it is stored or looked up. The
	// zero Mask means the whole address (iptables prints 255.255.255.255 or
	// ffff:...:ffff, and the parser returns the zero Mask for it); a full
	// mask written out is rejected so that every rule has one spelling.
	Mask netip.Addr
	// Dest uses the destination address (--rdest) instead of the source
	// (--rsource).
	Dest bool
}

func (m Recent) appendMatch(b []byte, f Family, _ *Rule) ([]byte, error) {
	if m.Mode < RecentSet || m.Mode > RecentRemove {
		return b, invalid("mode", "unknown recent mode %d", m.Mode)
	}
	checking := m.Mode == RecentCheck || m.Mode == RecentUpdate
	switch {
	case !checking && (m.Seconds != 0 || m.HitCount != 0 || m.Reap || m.RTTL):
		return b, invalid("", "Seconds, HitCount, Reap and RTTL need RecentCheck or RecentUpdate")
	case m.Reap && m.Seconds == 0:
		return b, invalid("reap", "Reap needs Seconds")
	case m.Seconds > math.MaxInt32 || m.HitCount > math.MaxInt32:
		return b, invalid("", "Seconds and HitCount are at most %d", math.MaxInt32)
	}
	if err := validateRecentName(m.Name); err != nil {
		return b, inField("name", err)
	}
	if m.Mask.IsValid() {
		if err := checkAddr(f, m.Mask); err != nil {
			return b, inField("mask", err)
		}
		if m.Mask == fullMask(f) {
			return b, invalid("mask", "leave Mask zero for the whole address")
		}
	}
	b = append(b, " -m recent"...)
	if m.Invert {
		b = append(b, " !"...)
	}
	b = append(b, ' ')
	b = append(b, m.Mode.option()...)
	if m.Seconds != 0 {
		b = append(b, " --seconds "...)
		b = strconv.AppendUint(b, uint64(m.Seconds), 10)
	}
	if m.Reap {
		b = append(b, " --reap"...)
	}
	if m.HitCount != 0 {
		b = append(b, " --hitcount "...)
		b = strconv.AppendUint(b, uint64(m.HitCount), 10)
	}
	if m.RTTL {
		b = append(b, " --rttl"...)
	}
	b = append(b, " --name "...)
	b = append(b, m.Name...)
	b = append(b, " --mask "...)
	if m.Mask.IsValid() {
		b = m.Mask.AppendTo(b)
	} else {
		b = fullMask(f).AppendTo(b)
	}
	if m.Dest {
		b = append(b, " --rdest"...)
	} else {
		b = append(b, " --rsource"...)
	}
	return b, nil
}

func fullMask(f Family) netip.Addr {
	if f == IPv6 {
		return netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
}

func validateRecentName(s string) error {
	if s == "" {
		return invalid("", "empty (iptables would use DEFAULT; name it)")
	}
	if len(s) > MaxRecentNameLen {
		return invalid("", "%d bytes, at most %d", len(s), MaxRecentNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return invalid("", "byte %q at offset %d is not a letter, digit, '-', '_' or '.'", s[i], i)
		}
	}
	if s[0] == '-' {
		return invalid("", "%q starts with '-'", s)
	}
	if s == "." || s == ".." {
		return invalid("", "%q is not a valid proc file name", s)
	}
	return nil
}

// CTState is a set of conntrack states for the conntrack match.
type CTState uint8

// The conntrack states, in the order iptables prints them.
const (
	CTInvalid CTState = 1 << iota
	CTNew
	CTRelated
	CTEstablished
	CTUntracked
	CTSNAT
	CTDNAT
	ctStateEnd
)

// ctStateName returns the name iptables prints for bit i of CTState.
func ctStateName(i int) string {
	switch i {
	case 0:
		return "INVALID"
	case 1:
		return "NEW"
	case 2:
		return "RELATED"
	case 3:
		return "ESTABLISHED"
	case 4:
		return "UNTRACKED"
	case 5:
		return "SNAT"
	case 6:
		return "DNAT"
	}
	return ""
}

const numCTStates = 7

func (s CTState) appendTo(b []byte) []byte {
	first := true
	for i := 0; i < numCTStates; i++ {
		if name := ctStateName(i); s&(1<<i) != 0 {
			if !first {
				b = append(b, ',')
			}
			b = append(b, name...)
			first = false
		}
	}
	return b
}

// String returns the states as iptables prints them ("RELATED,ESTABLISHED").
func (s CTState) String() string { return string(s.appendTo(nil)) }

// Conntrack is `-m conntrack [!] --ctstate STATES`.
type Conntrack struct {
	States CTState
	Invert bool
}

func (c Conntrack) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if c.States == 0 || c.States >= ctStateEnd {
		return b, invalid("states", "no or unknown conntrack states")
	}
	b = append(b, " -m conntrack"...)
	if c.Invert {
		b = append(b, " !"...)
	}
	b = append(b, " --ctstate "...)
	return c.States.appendTo(b), nil
}

// RawMatch is any other match module, kept as text: Module is the name
// after -m and Spec its options exactly as iptables-save prints them
// ("--match-set KUBE-CLUSTER-IP dst,dst"). The parser returns a RawMatch
// for modules the typed matches do not cover (and for options of those
// modules they do not cover), so that reading a table never loses a rule.
// Spec may not hold control characters or unbalanced quotes, so it cannot
// end the line or swallow the rest of the rule.
type RawMatch struct {
	Module string
	Spec   string
}

func (m RawMatch) appendMatch(b []byte, _ Family, _ *Rule) ([]byte, error) {
	if err := validateModuleName(m.Module); err != nil {
		return b, inField("module", err)
	}
	if err := validateSpec(m.Spec); err != nil {
		return b, &ValidationError{Field: "spec", Reason: err.Error()}
	}
	b = append(b, " -m "...)
	b = append(b, m.Module...)
	if m.Spec != "" {
		b = append(b, ' ')
		b = append(b, m.Spec...)
	}
	return b, nil
}

func validateModuleName(s string) error {
	if s == "" || len(s) > MaxChainNameLen {
		return invalid("", "module or target name %q must be 1 to %d bytes", s, MaxChainNameLen)
	}
	if s[0] == '-' || s[0] == '!' {
		return invalid("", "module or target name %q starts with %q", s, s[0])
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return invalid("", "module or target name %q has byte %q", s, s[i])
		}
	}
	return nil
}
