package pool

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Allocator hands out load-balancer addresses from a set of pools. It is
// safe for concurrent use; every method is atomic with respect to the
// others.
type Allocator struct {
	mu  sync.Mutex
	st  *state
	log *slog.Logger
}

// Option configures an Allocator.
type Option func(*Allocator)

// WithLogger makes the allocator log its decisions to l (allocations and
// releases at Debug, configuration changes that move or revoke services at
// Info). By default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(a *Allocator) {
		if l != nil {
			a.log = l
		}
	}
}

// New returns an Allocator over pools (tried in this order for automatic
// assignment). It fails with a *ValidationError when a pool has no name, a
// duplicate name, no range, an invalid range, or a range overlapping another
// one. An empty list is allowed; use SetPools later.
func New(pools []AddressPool, opts ...Option) (*Allocator, error) {
	st, err := newState(pools)
	if err != nil {
		return nil, err
	}
	a := &Allocator{st: st, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// Allocate gives the service of req its addresses and returns them.
//
// Addresses are chosen as follows:
//   - req.IPs given: exactly those (one per family); they must be in one
//     pool (any pool, even one with DisableAutoAssign), in req.Pool if that
//     is set too, and free or shareable under the sharing rules. Families
//     of req.Family without a requested address are picked from that pool.
//   - else req.Pool given: from that pool.
//   - else from the first pool, in configuration order, that allows
//     automatic assignment and has room for every wanted family. A
//     dual-stack service gets one address of each family from one pool.
//
// Within a pool, a service with a SharingKey joins the lowest address
// already held under that key when the sharing rules allow (see CanShare),
// so services meant to share end up together; otherwise it gets the lowest
// free address.
//
// If the service already has an assignment that satisfies req (same
// families, requested IPs among its addresses, requested pool), it keeps
// it, with its ports, key and policy updated after a sharing check. If the
// assignment no longer satisfies req, the service is moved, reusing its old
// addresses where eligible; if that fails it keeps the old assignment.
// Nothing changes when an error is returned.
//
// Errors: *ValidationError for a malformed request; otherwise an
// *AllocationError wrapping ErrPoolExhausted, ErrNotInPool, ErrUnknownPool
// or a *SharingError (which matches ErrAddressInUse).
func (a *Allocator) Allocate(req Request) (Assignment, error) {
	n, err := normalize(req)
	if err != nil {
		return Assignment{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	sv, err := a.st.assign(n, nil)
	if err != nil {
		a.log.Debug("allocation failed", "service", n.Service, "error", err)
		return Assignment{}, err
	}
	a.log.Debug("allocated", "service", n.Service, "pool", sv.pool.cfg.Name, "ips", sv.ips)
	return sv.assignment(), nil
}

// Release frees the service's addresses (an address shared with other
// services stays theirs) and returns what it held. ok is false when the
// service held nothing.
func (a *Allocator) Release(service string) (released Assignment, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	sv := a.st.svcs[service]
	if sv == nil {
		return Assignment{}, false
	}
	a.st.detach(sv)
	a.log.Debug("released", "service", service, "pool", sv.pool.cfg.Name, "ips", sv.ips)
	return sv.assignment(), true
}

// Assignment returns what the service holds.
func (a *Allocator) Assignment(service string) (Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	sv := a.st.svcs[service]
	if sv == nil {
		return Assignment{}, false
	}
	return sv.assignment(), true
}

// Assignments returns every assignment, sorted by service.
func (a *Allocator) Assignments() []Assignment {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Assignment, 0, len(a.st.svcs))
	for _, sv := range a.st.svcs {
		out = append(out, sv.assignment())
	}
	slices.SortFunc(out, func(x, y Assignment) int { return strings.Compare(x.Service, y.Service) })
	return out
}

// Holders returns the services holding ip, sorted; more than one when the
// address is shared.
func (a *Allocator) Holders(ip netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st.ips[ip]
	if st == nil {
		return nil
	}
	out := make([]string, len(st.holders))
	for i, h := range st.holders {
		out[i] = h.req.Service
	}
	return out
}

// PoolOf returns the name of the pool that owns ip (whether or not it is
// allocated), or false when no pool does, including when the pool's
// AvoidBuggyIPs excludes it.
func (a *Allocator) PoolOf(ip netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.st.poolOf(ip); p != nil {
		return p.cfg.Name, true
	}
	return "", false
}

// Pools returns the current pool configuration.
func (a *Allocator) Pools() []AddressPool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AddressPool, len(a.st.pools))
	for i, p := range a.st.pools {
		out[i] = p.cfg.clone()
	}
	return out
}

// Stats returns each pool's size and usage, in configuration order.
func (a *Allocator) Stats() []PoolStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolStats, len(a.st.pools))
	for i, p := range a.st.pools {
		out[i] = PoolStats{
			Name:          p.cfg.Name,
			AutoAssign:    !p.cfg.DisableAutoAssign,
			AvoidBuggyIPs: p.cfg.AvoidBuggyIPs,
			IPv4Size:      p.size[0],
			IPv6Size:      p.size[1],
			IPv4InUse:     p.inUse[0],
			IPv6InUse:     p.inUse[1],
		}
	}
	return out
}

// SetPools replaces the pool configuration. The new configuration is
// validated first; on error nothing changes.
//
// Every service whose addresses all lie in one pool of the new
// configuration and still satisfy its request there keeps them (reported as
// ChangeRepooled if that pool has a new name). The others are re-allocated
// from their request, as MetalLB re-allocates at a configuration change,
// keeping any of their addresses that are still eligible: a service whose
// addresses left the pools (a range removed or shrunk, AvoidBuggyIPs
// switched on), ended up in different pools, or no longer satisfy its
// request (it asked for pool "a" and a split put its address in pool "b";
// a Restore gave it addresses other than those it requests). Each gets
// ChangeReallocated, with the departed addresses in Left, or ChangeRevoked
// with Err when no address can be found. So after SetPools, an Allocate
// with a service's own request never moves it. Services are re-allocated
// in service-name order, after all the unaffected ones are in place; an
// address that a re-allocated service may keep is reserved for it, so an
// earlier one in that order does not take it. A service that finds no
// address is tried once more at the end, when the addresses kept for
// others but not used by them are free again.
// Changes are returned sorted by service; unaffected services are not
// listed.
func (a *Allocator) SetPools(pools []AddressPool) ([]Change, error) {
	ns, err := newState(pools)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.st
	names := make([]string, 0, len(old.svcs))
	for name := range old.svcs {
		names = append(names, name)
	}
	slices.Sort(names)

	var changes []Change
	var evicted []*svcState
	for _, name := range names {
		sv := old.svcs[name]
		np := ns.poolOf(sv.ips[0])
		for _, ip := range sv.ips[1:] {
			if np != nil && ns.poolOf(ip) != np {
				np = nil
			}
		}
		// Re-allocate, like MetalLB at a configuration change, a service
		// whose addresses no longer lie in one pool, or no longer satisfy its
		// request there (its requested pool lost them in a split, or a
		// Restore gave it addresses other than the requested ones): kept as
		// is, the next Allocate with the same request would move it
		// silently.
		if np == nil || !fits(sv.ips, np, &sv.req) {
			evicted = append(evicted, sv)
			continue
		}
		// Kept services were mutually compatible before; re-attach as is.
		nsv := ns.attach(sv.req, np, slices.Clone(sv.ips))
		if np.cfg.Name != sv.pool.cfg.Name {
			changes = append(changes, Change{Service: name, Kind: ChangeRepooled, Old: sv.assignment(), New: nsv.assignment()})
		}
	}
	// An evicted service keeps those of its addresses that are still in a
	// pool when its request allows (mayKeep). Reserve them all first (out of
	// the free sets), so that a service re-allocated earlier in name order
	// does not take, as the lowest free address, one that a later service
	// could keep; each service gets its own back just before it is
	// re-allocated.
	type evictee struct {
		sv               *svcState
		kept, left, mine []netip.Addr // mine: the kept ones it may keep
	}
	evs := make([]evictee, len(evicted))
	keepers := map[netip.Addr]int{}   // evicted services not yet re-allocated that keep the address
	reserved := map[netip.Addr]bool{} // taken out of the free sets here
	reserve := func(ip netip.Addr) {
		if keepers[ip] > 0 && !reserved[ip] && ns.reserve(ip) {
			reserved[ip] = true
		}
	}
	for i, sv := range evicted {
		e := evictee{sv: sv}
		for _, ip := range sv.ips {
			if ns.poolOf(ip) == nil {
				e.left = append(e.left, ip)
			} else {
				e.kept = append(e.kept, ip)
				if ns.mayKeep(ip, &sv.req) {
					e.mine = append(e.mine, ip)
					keepers[ip]++
				}
			}
		}
		evs[i] = e
	}
	for ip := range keepers {
		reserve(ip)
	}
	reallocate := func(e evictee) (Change, bool) {
		ch := Change{Service: e.sv.req.Service, Old: e.sv.assignment(), Left: e.left}
		p, ips, err := ns.resolve(&e.sv.req, nil, e.kept)
		if err != nil {
			ch.Kind, ch.Err = ChangeRevoked, err
			return ch, false
		}
		ch.Kind, ch.New = ChangeReallocated, ns.attach(e.sv.req, p, ips).assignment()
		return ch, true
	}
	var failed []evictee
	var failedAt []int // index in changes
	for _, e := range evs {
		for _, ip := range e.mine {
			keepers[ip]--
			if reserved[ip] {
				ns.unreserve(ip)
				delete(reserved, ip)
			}
		}
		ch, ok := reallocate(e)
		if !ok {
			failed = append(failed, e)
			failedAt = append(failedAt, len(changes))
		}
		changes = append(changes, ch)
		for _, ip := range e.mine {
			reserve(ip) // still wanted by a later service and not taken by this one
		}
	}
	for ip := range reserved { // none left: every keeper has had its turn
		ns.unreserve(ip)
	}
	// A service that found no room, or whose requested address another
	// re-allocated service was keeping, is tried once more now that every
	// address kept but not used is free again.
	for i, e := range failed {
		changes[failedAt[i]], _ = reallocate(e)
	}
	for _, ch := range changes {
		switch ch.Kind {
		case ChangeRevoked:
			a.log.Info("pool change revoked addresses", "service", ch.Service, "left", ch.Left, "error", ch.Err)
		case ChangeReallocated:
			a.log.Info("pool change re-allocated service", "service", ch.Service, "left", ch.Left, "ips", ch.New.IPs)
		}
	}
	slices.SortFunc(changes, func(x, y Change) int { return strings.Compare(x.Service, y.Service) })
	a.st = ns
	return changes, nil
}

// Restore re-creates assignments that existed before a restart (for
// Kubernetes, read from each service's status) without moving any service:
// each item's IPs are assigned exactly, never replaced by others. Call it
// after New and before allocating for new services. Items are processed in
// the given order; when two items claim the same address incompatibly the
// earlier one wins, so pass them oldest service first.
//
// Item.Request is stored as the service's request (used by later
// re-allocations); Item.Request.Service may be left empty and then defaults
// to Item.Service. When Item.Request has neither Family nor IPs, its Family
// is taken from Item.IPs (an IPv6 or dual-stack service restored with an
// empty request wants what it held, not IPv4). Item.Pool is ignored: the
// pool is the one that owns the addresses now, whatever the request asked
// for. A later Allocate with a request the restored addresses do not
// satisfy moves the service.
//
// An item whose addresses are not all in the configured pools is not
// restored: its result lists them in NotInPool and its Err wraps
// ErrNotInPool, and the service keeps what it held before (nothing after a
// restart). Neither is an item whose
// addresses are all in pools but in two different ones: its Err wraps
// ErrNotInPool too, with NotInPool empty (see RestoreResult.Err). Results
// are returned in item order.
func (a *Allocator) Restore(items []Assignment) []RestoreResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]RestoreResult, len(items))
	for i, it := range items {
		out[i] = a.restoreOne(it)
	}
	return out
}

func (a *Allocator) restoreOne(it Assignment) RestoreResult {
	res := RestoreResult{Service: it.Service}
	req := it.Request
	if req.Service == "" {
		req.Service = it.Service
	}
	if req.Service != it.Service {
		res.Err = &ValidationError{Field: "assignment.request.service", Value: req.Service,
			Reason: "differs from assignment.service " + quote(it.Service)}
		return res
	}
	if req.Family == 0 && len(req.IPs) == 0 {
		// The service wants what it held: defaulting to IPv4 would make an
		// IPv6 or dual-stack service's own addresses not fit its request,
		// and the next SetPools or Allocate would move it.
		req.Family = familiesOf(it.IPs)
	}
	n, err := normalize(req)
	if err != nil {
		res.Err = err
		return res
	}
	if len(it.IPs) == 0 {
		res.Err = &ValidationError{Field: "assignment.ips", Reason: "nothing to restore"}
		return res
	}
	if _, err := checkAddrs("assignment.ips", it.IPs); err != nil {
		res.Err = err
		return res
	}
	exact := slices.Clone(it.IPs)
	sortAddrs(exact)
	for _, ip := range exact {
		if a.st.poolOf(ip) == nil {
			res.NotInPool = append(res.NotInPool, ip)
		}
	}
	if len(res.NotInPool) > 0 {
		ip := res.NotInPool[0]
		res.Err = &AllocationError{Service: n.Service, IP: ip, Err: ErrNotInPool,
			Detail: a.st.notInPoolDetail(ip) + "; the service was not restored"}
		a.log.Info("restore: address outside every pool", "service", n.Service, "ips", res.NotInPool)
		return res
	}
	sv, err := a.st.assign(n, exact)
	if err != nil {
		res.Err = err
		a.log.Info("restore failed", "service", n.Service, "error", err)
		return res
	}
	res.Assignment = sv.assignment()
	return res
}
