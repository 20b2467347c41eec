package lb

import "net/netip"

// IPFamily is an IP address family, spelled as Kubernetes spells it in
// spec.ipFamilies.
type IPFamily string

// The two IP families.
const (
	IPv4 IPFamily = "IPv4"
	IPv6 IPFamily = "IPv6"
)

// FamilyOf returns the family of addr: IPv4 for a 4-byte address, IPv6 for a
// 16-byte one (including IPv4-mapped IPv6 addresses, which lb's validators
// reject because their family is ambiguous), and "" for the zero Addr.
func FamilyOf(addr netip.Addr) IPFamily {
	switch {
	case addr.Is4():
		return IPv4
	case addr.Is6():
		return IPv6
	}
	return ""
}

// PrefixFamily returns the family of p's address, or "" for an invalid
// prefix.
func PrefixFamily(p netip.Prefix) IPFamily {
	if !p.IsValid() {
		return ""
	}
	return FamilyOf(p.Addr())
}

// Valid reports whether f is IPv4 or IPv6.
func (f IPFamily) Valid() bool { return f == IPv4 || f == IPv6 }

// Bits returns the address length of f in bits (32 or 128), or 0 when f is
// not valid.
func (f IPFamily) Bits() int {
	switch f {
	case IPv4:
		return 32
	case IPv6:
		return 128
	}
	return 0
}

// Other returns the other family (IPv6 for IPv4 and the reverse), or "" when
// f is not valid.
func (f IPFamily) Other() IPFamily {
	switch f {
	case IPv4:
		return IPv6
	case IPv6:
		return IPv4
	}
	return ""
}

// Matches reports whether addr belongs to family f.
func (f IPFamily) Matches(addr netip.Addr) bool { return f.Valid() && FamilyOf(addr) == f }

// FilterAddrs returns the addresses of addrs that belong to family f, in
// their original order. It returns nil when there are none.
func FilterAddrs(addrs []netip.Addr, f IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if f.Matches(a) {
			out = append(out, a)
		}
	}
	return out
}

// FilterPrefixes returns the prefixes of ps whose address belongs to family
// f, in their original order. It returns nil when there are none.
func FilterPrefixes(ps []netip.Prefix, f IPFamily) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && f.Matches(p.Addr()) {
			out = append(out, p)
		}
	}
	return out
}
