package pool

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Range is an inclusive range of IP addresses of one family, First <= Last.
// A CIDR prefix is the special case of a range whose size is a power of two
// and whose First address is aligned on it.
type Range struct {
	First netip.Addr
	Last  netip.Addr
}

// RangeFromPrefix returns the range covering every address of p (p is
// masked first, so 192.0.2.7/24 covers 192.0.2.0-192.0.2.255).
func RangeFromPrefix(p netip.Prefix) Range {
	p = p.Masked()
	first := p.Addr()
	x := toU128(first)
	hostBits := first.BitLen() - p.Bits()
	return Range{First: first, Last: fromU128(x.or(onesBelow(hostBits)), first.Is4())}
}

// ParseRange parses one entry of a MetalLB IPAddressPool's addresses list:
// a CIDR prefix ("192.0.2.0/24", "2001:db8::/64") or an inclusive range of
// two addresses of the same family separated by a dash
// ("192.0.2.10-192.0.2.20"; spaces around the dash are allowed). As an
// extension, a bare address ("192.0.2.7") is a range of one address.
//
// Like MetalLB (which uses net.ParseCIDR), a prefix with host bits set is
// masked: "192.0.2.7/24" is the whole 192.0.2.0/24. Zoned addresses and
// IPv4-mapped IPv6 addresses are rejected. Errors are *ValidationError and
// match ErrInvalid.
func ParseRange(s string) (Range, error) {
	in := strings.TrimSpace(s)
	bad := func(reason string) (Range, error) {
		return Range{}, &ValidationError{Field: "range", Value: s, Reason: reason}
	}
	if in == "" {
		return bad("empty")
	}
	if i := strings.IndexByte(in, '-'); i >= 0 {
		first, err := parseRangeAddr(strings.TrimSpace(in[:i]))
		if err != "" {
			return bad("start: " + err)
		}
		last, err := parseRangeAddr(strings.TrimSpace(in[i+1:]))
		if err != "" {
			return bad("end: " + err)
		}
		r := Range{First: first, Last: last}
		if reason := r.check(); reason != "" {
			return bad(reason)
		}
		return r, nil
	}
	if strings.IndexByte(in, '/') >= 0 {
		p, err := netip.ParsePrefix(in)
		if err != nil {
			return bad(trimNetipErr(err.Error()))
		}
		if p.Addr().Is4In6() {
			return bad("IPv4-mapped IPv6 prefix; write the IPv4 form")
		}
		return RangeFromPrefix(p), nil
	}
	a, err := parseRangeAddr(in)
	if err != "" {
		return bad(err)
	}
	return Range{First: a, Last: a}, nil
}

// ParseRanges parses each string with ParseRange. A failure is reported as a
// *ValidationError whose Field names the index ("addresses[2]").
func ParseRanges(addresses ...string) ([]Range, error) {
	out := make([]Range, 0, len(addresses))
	for i, s := range addresses {
		r, err := ParseRange(s)
		if err != nil {
			ve := err.(*ValidationError)
			ve.Field = "addresses[" + strconv.Itoa(i) + "]"
			return nil, ve
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRangeAddr(s string) (netip.Addr, string) {
	if s == "" {
		return netip.Addr{}, "missing address"
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, trimNetipErr(err.Error())
	}
	if a.Zone() != "" {
		return netip.Addr{}, "zoned address not allowed"
	}
	if a.Is4In6() {
		return netip.Addr{}, "IPv4-mapped IPv6 address; write the IPv4 form"
	}
	return a, ""
}

// trimNetipErr drops the "ParseAddr(...): " prefix that repeats the input,
// since ValidationError already shows the value.
func trimNetipErr(s string) string {
	if i := strings.LastIndex(s, "): "); i >= 0 {
		return s[i+3:]
	}
	return s
}

// check returns why r is not a usable range, or "".
func (r Range) check() string {
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		return "missing address"
	case r.First.Zone() != "" || r.Last.Zone() != "":
		return "zoned address not allowed"
	case r.First.Is4In6() || r.Last.Is4In6():
		return "IPv4-mapped IPv6 address; write the IPv4 form"
	case r.First.Is4() != r.Last.Is4():
		return "start and end are of different address families"
	case r.Last.Less(r.First):
		return "start is after end"
	}
	return ""
}

// Is4 reports whether r is a range of IPv4 addresses.
func (r Range) Is4() bool { return r.First.Is4() }

// Contains reports whether a lies in r (same family, First <= a <= Last).
func (r Range) Contains(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && a.Is4() == r.First.Is4() && !a.Is4In6() &&
		r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether r and o have an address in common.
func (r Range) Overlaps(o Range) bool {
	return r.Is4() == o.Is4() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// Prefix returns the CIDR prefix equal to r, if r is exactly one prefix.
func (r Range) Prefix() (netip.Prefix, bool) {
	if r.check() != "" {
		return netip.Prefix{}, false
	}
	lo, hi := toU128(r.First), toU128(r.Last)
	span := hi.sub(lo) // size-1
	// span+1 must be a power of two (span is all ones below some bit) and
	// First must be aligned on it.
	if !span.add1().and(span).isZero() {
		return netip.Prefix{}, false
	}
	if !lo.and(span).isZero() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(r.First, r.First.BitLen()-span.onesCount()), true
}

// String formats r as a CIDR prefix when it is exactly one (a single
// address is a /32 or /128), else as "First-Last". The result parses back to
// r with ParseRange.
func (r Range) String() string {
	if r.check() != "" {
		return "invalid-range"
	}
	if p, ok := r.Prefix(); ok {
		return p.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// size returns the number of addresses in r, saturated at MaxUint64.
func (r Range) size() uint64 {
	return toU128(r.Last).sub(toU128(r.First)).add1Sat()
}

// u128 is an address as an unsigned 128-bit integer; IPv4 addresses use the
// low 32 bits, so arithmetic never crosses into another family.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func fromU128(x u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(x.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b)
}

// onesBelow returns the value with the low n bits set (0 <= n <= 128).
func onesBelow(n int) u128 {
	switch {
	case n <= 0:
		return u128{}
	case n < 64:
		return u128{0, 1<<uint(n) - 1}
	case n < 128:
		return u128{1<<uint(n-64) - 1, ^uint64(0)}
	}
	return u128{^uint64(0), ^uint64(0)}
}

func (x u128) cmp(y u128) int {
	switch {
	case x.hi < y.hi:
		return -1
	case x.hi > y.hi:
		return 1
	case x.lo < y.lo:
		return -1
	case x.lo > y.lo:
		return 1
	}
	return 0
}

func (x u128) add1() u128 {
	lo, carry := bits.Add64(x.lo, 1, 0)
	return u128{x.hi + carry, lo}
}

func (x u128) sub1() u128 {
	lo, borrow := bits.Sub64(x.lo, 1, 0)
	return u128{x.hi - borrow, lo}
}

func (x u128) sub(y u128) u128 {
	lo, borrow := bits.Sub64(x.lo, y.lo, 0)
	return u128{x.hi - y.hi - borrow, lo}
}

func (x u128) and(y u128) u128 { return u128{x.hi & y.hi, x.lo & y.lo} }
func (x u128) or(y u128) u128  { return u128{x.hi | y.hi, x.lo | y.lo} }
func (x u128) isZero() bool    { return x.hi == 0 && x.lo == 0 }
func (x u128) onesCount() int  { return bits.OnesCount64(x.hi) + bits.OnesCount64(x.lo) }

// add1Sat returns x+1 as a uint64, saturated at MaxUint64.
func (x u128) add1Sat() uint64 {
	if x.hi != 0 || x.lo == ^uint64(0) {
		return ^uint64(0)
	}
	return x.lo + 1
}
