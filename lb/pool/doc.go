// Package pool allocates load-balancer addresses to services from pools of
// IPv4 and IPv6 addresses, with the semantics of MetalLB's IPAddressPool
// and allocator, so that MetalLB users find the behaviour they know.
//
// It is pure Go: no syscalls, no root. Announcing the addresses (ARP, NDP,
// BGP) is the job of other packages.
//
// # Pools
//
// An AddressPool has a name and ranges, each a CIDR prefix or an inclusive
// range ("192.0.2.10-192.0.2.20"; see ParseRange). Ranges of all pools must
// not overlap. A pool with DisableAutoAssign (MetalLB's autoAssign: false)
// is used only when a request names it or one of its addresses. A pool with
// AvoidBuggyIPs never hands out IPv4 addresses ending in .0 or .255.
//
// # Allocation
//
// Allocator.Allocate takes a Request for one service: specific addresses
// (spec.loadBalancerIP, or several in the metallb.io/loadBalancerIPs
// annotation for dual-stack), a pool by name (metallb.io/address-pool), or
// neither, in which case the first pool in configuration order that allows
// automatic assignment and has room is used. A DualStack request gets one
// IPv4 and one IPv6 address from the same pool. Request.Family is a Family
// bitmask (IPv4, IPv6, DualStack), not lb.IPFamily; FamilyFromIPFamilies
// turns a Service's lb families into one.
//
// # Sharing
//
// Services with the same non-empty SharingKey (MetalLB's
// metallb.io/allow-shared-ip) may share an address when their ports do not
// collide (same protocol and number) and their traffic policies allow it:
// both Cluster, or both Local with the same, non-empty, caller-supplied
// EndpointsSelector identity. A refused request returns a *SharingError
// whose Rule names the rule that blocked it; CanShare evaluates the rules
// for two requests without an allocator.
//
// This deliberately differs from MetalLB in two corners. MetalLB compares a
// "backend key": "" for a Cluster service and the pod selector's label
// string for a Local one, so two Local services without a selector ("" ==
// "") share, and so do a Cluster service and a selector-less Local one. An
// address shared by a Local service is announced only where that service
// has endpoints; sharing it is safe only when the other services have the
// same endpoints, and an empty selector says nothing about the endpoints
// (they are managed by hand or by another controller). So here an empty
// EndpointsSelector never matches, and Cluster never shares with Local. A
// caller that wants MetalLB's behaviour passes one fixed identity (say
// "<none>") for selector-less Local services.
//
// # Configuration changes and restarts
//
// Allocator.SetPools swaps in a new configuration and reports, as Changes,
// the services whose addresses left the pools and what became of them
// (re-allocated from their original request, or revoked). Allocator.Restore
// rebuilds the state after a restart from the assignments recorded
// elsewhere (e.g. service status) without moving any service; an address
// that no pool contains any more is reported and not restored.
//
// # Errors
//
// Malformed input gives a *ValidationError (errors.Is ErrInvalid) with the
// field path of the first problem found (lb's ValidationError lists every
// problem; see ValidationError for why this one does not). Allocation failures are *AllocationError wrapping
// ErrPoolExhausted, ErrNotInPool, ErrUnknownPool or a *SharingError
// (errors.Is ErrAddressInUse). Nothing is changed by a call that fails.
//
// # Memory
//
// Free addresses are kept per pool and family as a sorted list of free
// intervals, so memory is proportional to the number of allocations and of
// the holes they leave, not to the size of the pool: a /8 or a /64 costs
// the same as a /24 until addresses are handed out.
//
// An Allocator is safe for concurrent use. It keeps no package-level state
// and logs only to a *slog.Logger given with WithLogger.
package pool
