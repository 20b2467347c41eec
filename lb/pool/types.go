package pool

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	"github.com/lbkit/lbkit/lb"
)

// Family is a set of IP address families a service wants addresses for: a
// bitmask (IPv4, IPv6 or DualStack). It is not lb.IPFamily, which names ONE
// family as a string ("IPv4", as in spec.ipFamilies): pool.IPv4 and lb.IPv4
// are different types and do not mix (the compiler says so).
// FamilyFromIPFamilies and IPFamilies convert between the two.
type Family uint8

// The families a Request may ask for. These are pool.Family bits, not the
// lb.IPFamily values of the same names.
const (
	IPv4      Family        = 1 << iota // one IPv4 address
	IPv6                                // one IPv6 address
	DualStack = IPv4 | IPv6             // one address of each family
)

// FamilyFromIPFamilies returns the set of the given lb families, for
// example a Service's Families(): [IPv4 IPv6] gives DualStack. Invalid
// families are ignored.
func FamilyFromIPFamilies(fams ...lb.IPFamily) Family {
	var f Family
	for _, x := range fams {
		switch x {
		case lb.IPv4:
			f |= IPv4
		case lb.IPv6:
			f |= IPv6
		}
	}
	return f
}

// IPFamilies returns the lb families in f, IPv4 first.
func (f Family) IPFamilies() []lb.IPFamily {
	var out []lb.IPFamily
	if f&IPv4 != 0 {
		out = append(out, lb.IPv4)
	}
	if f&IPv6 != 0 {
		out = append(out, lb.IPv6)
	}
	return out
}

// String returns "IPv4", "IPv6", "DualStack" or "Family(n)".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	case DualStack:
		return "DualStack"
	}
	return "Family(" + strconv.Itoa(int(f)) + ")"
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// famIdx maps an address to the index of its family in per-family arrays.
func famIdx(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func familiesOf(ips []netip.Addr) Family {
	var f Family
	for _, ip := range ips {
		f |= familyOf(ip)
	}
	return f
}

// Port is one L4 port a service exposes on its load-balancer address.
type Port struct {
	// Protocol is TCP, UDP or SCTP; empty means TCP, as in lb and
	// Kubernetes. Requests are stored with it filled in.
	Protocol lb.Protocol
	Port     uint16
}

// String returns "TCP/80" (an empty protocol shows as TCP).
func (p Port) String() string { return string(p.Protocol.OrTCP()) + "/" + strconv.Itoa(int(p.Port)) }

func comparePorts(a, b Port) int {
	if c := cmp.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// AddressPool is one pool of load-balancer addresses, the equivalent of a
// MetalLB IPAddressPool.
type AddressPool struct {
	// Name identifies the pool; a Request may ask for it by name (MetalLB's
	// metallb.io/address-pool annotation). Required and unique.
	Name string
	// Ranges are the pool's addresses (spec.addresses), IPv4 and/or IPv6.
	// No two ranges of any pools may overlap. Use ParseRanges for the
	// MetalLB text forms.
	Ranges []Range
	// DisableAutoAssign is MetalLB's autoAssign: false. Such a pool is used
	// only when a request names it or asks for one of its addresses. The
	// field is inverted so that the zero value matches MetalLB's default.
	DisableAutoAssign bool
	// AvoidBuggyIPs excludes IPv4 addresses ending in .0 or .255, which some
	// consumer equipment mishandles, as MetalLB's avoidBuggyIPs does. Such an
	// address is then not part of the pool at all: it is never handed out
	// and requesting it fails with ErrNotInPool.
	AvoidBuggyIPs bool
}

func (p AddressPool) clone() AddressPool {
	p.Ranges = slices.Clone(p.Ranges)
	return p
}

// Request asks for load-balancer addresses for one service.
type Request struct {
	// Service identifies the service, e.g. "namespace/name". Required.
	Service string
	// Family is the set of families wanted. Zero means: the families of IPs
	// when IPs are given, else IPv4.
	Family Family
	// IPs are specific addresses wanted (spec.loadBalancerIP, or the
	// metallb.io/loadBalancerIPs annotation): at most one per family. For a
	// DualStack request that gives only one, the other family is picked
	// from the same pool.
	IPs []netip.Addr
	// Pool asks for addresses from the named pool only (MetalLB's
	// metallb.io/address-pool annotation). It may name a pool with
	// DisableAutoAssign.
	Pool string
	// Ports are the service's ports; services sharing an address must not
	// use the same protocol and port.
	Ports []Port
	// SharingKey is MetalLB's metallb.io/allow-shared-ip value. Services
	// share an address only when both have the same non-empty key.
	SharingKey string
	// TrafficPolicy is the service's external traffic policy; empty means
	// Cluster.
	TrafficPolicy lb.TrafficPolicy
	// EndpointsSelector is a caller-chosen identity of the service's
	// endpoints (for Kubernetes, the pod selector in canonical form). Two
	// Local services may share an address only when both identities are
	// non-empty and equal; unlike MetalLB, two selector-less Local services
	// do not share (see the package doc for why, and how to opt in). It is
	// ignored for Cluster services.
	EndpointsSelector string
}

func (r Request) clone() Request {
	r.IPs = slices.Clone(r.IPs)
	r.Ports = slices.Clone(r.Ports)
	return r
}

// Assignment is the addresses a service holds.
type Assignment struct {
	// Service is the service holding the addresses.
	Service string
	// Pool is the name of the pool the addresses come from.
	Pool string
	// IPs are the addresses, IPv4 first.
	IPs []netip.Addr
	// Request is the request the assignment was made for, normalized
	// (Family, TrafficPolicy and port protocols filled in, IPs and Ports
	// sorted). The
	// allocator keeps it to re-allocate the service when its addresses
	// leave the pools.
	Request Request
}

// ChangeKind says what SetPools did to a service.
type ChangeKind string

const (
	// ChangeRepooled: the service keeps its addresses, but they now belong
	// to a different pool (e.g. a pool was renamed or split), which its
	// request allows (it names no pool).
	ChangeRepooled ChangeKind = "repooled"
	// ChangeReallocated: some of the service's addresses left the pools,
	// or they no longer satisfy its request; it got new ones from its
	// request. Addresses that remained eligible are kept where possible.
	ChangeReallocated ChangeKind = "reallocated"
	// ChangeRevoked: the service had to be re-allocated (as for
	// ChangeReallocated) and no addresses could be found; the service now
	// holds nothing and Err says why.
	ChangeRevoked ChangeKind = "revoked"
)

// Change reports what a pool configuration change did to one service.
type Change struct {
	// Service is the affected service.
	Service string
	// Kind says what happened.
	Kind ChangeKind
	// Old is the assignment before the change.
	Old Assignment
	// New is the assignment after it; zero for ChangeRevoked.
	New Assignment
	// Left are the addresses of Old that no pool contains any more (a
	// range was removed or shrunk, or AvoidBuggyIPs now excludes them).
	// Empty when the service only had to move because its addresses ended
	// up in different pools, or in a pool its request does not allow.
	Left []netip.Addr
	// Err is why re-allocation failed, for ChangeRevoked.
	Err error
}

// RestoreResult reports the outcome of restoring one assignment.
type RestoreResult struct {
	// Service is the service the result is about.
	Service string
	// Assignment is what the service holds now; zero when Err is set.
	Assignment Assignment
	// NotInPool lists the addresses of the restored assignment that no
	// configured pool contains. When it is non-empty the service was not
	// restored (Err wraps ErrNotInPool): the allocator does not own such
	// addresses. The caller decides whether to keep
	// announcing them or to call Allocate, which gives new addresses.
	NotInPool []netip.Addr
	// Err is why the assignment was not restored; the service then keeps
	// what it held before the call (nothing, right after a restart):
	//   - an *AllocationError wrapping ErrNotInPool, either because
	//     NotInPool is non-empty (its IP is NotInPool[0]), or because every
	//     address is in a pool but not the same one (a dual-stack item
	//     whose families now live in two pools; one assignment's addresses
	//     come from one pool). In that second case NotInPool is empty and
	//     the error's IP and Pool name the address in the other pool;
	//   - an *AllocationError wrapping a *SharingError: it conflicts with
	//     an assignment restored or made earlier;
	//   - a *ValidationError.
	Err error
}

// PoolStats is a snapshot of one pool's usage.
type PoolStats struct {
	// Name is the pool name.
	Name string
	// AutoAssign is false when the pool has DisableAutoAssign.
	AutoAssign bool
	// AvoidBuggyIPs mirrors the pool setting.
	AvoidBuggyIPs bool
	// IPv4Size and IPv6Size count the allocatable addresses of each family
	// (after AvoidBuggyIPs), saturated at MaxUint64 for huge IPv6 pools.
	IPv4Size, IPv6Size uint64
	// IPv4InUse and IPv6InUse count addresses held by at least one service.
	IPv4InUse, IPv6InUse int
}

func sortAddrs(ips []netip.Addr) { slices.SortFunc(ips, netip.Addr.Compare) }
