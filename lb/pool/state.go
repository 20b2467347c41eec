package pool

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/lbkit/lbkit/lb"
)

// state is everything an Allocator knows; SetPools builds a new one and
// swaps it in, so a configuration change is all or nothing.
type state struct {
	pools  []*addrPool // configuration order = auto-assignment order
	byName map[string]*addrPool
	svcs   map[string]*svcState
	ips    map[netip.Addr]*ipState
	// byKey indexes the addresses held under each non-empty sharing key, so
	// a service with that key can find an address to share without a scan.
	byKey map[string]map[netip.Addr]struct{}
}

type addrPool struct {
	cfg    AddressPool
	ranges [2][]Range // per family, sorted
	free   [2]*freeSet
	size   [2]uint64
	inUse  [2]int
}

type svcState struct {
	req  Request // normalized
	pool *addrPool
	ips  []netip.Addr // sorted, one per family
}

type ipState struct {
	pool    *addrPool
	holders []*svcState // sorted by service; all mutually shareable
}

func (sv *svcState) assignment() Assignment {
	return Assignment{
		Service: sv.req.Service,
		Pool:    sv.pool.cfg.Name,
		IPs:     slices.Clone(sv.ips),
		Request: sv.req.clone(),
	}
}

// fits reports whether the service's current addresses satisfy req, so that
// an Allocate with req keeps them.
func (sv *svcState) fits(req *Request) bool { return fits(sv.ips, sv.pool, req) }

// fits reports whether addresses ips, all in pool p, satisfy req: the
// families it wants, its pool if it names one, its requested addresses.
func fits(ips []netip.Addr, p *addrPool, req *Request) bool {
	if familiesOf(ips) != req.Family {
		return false
	}
	if req.Pool != "" && req.Pool != p.cfg.Name {
		return false
	}
	for _, ip := range req.IPs {
		if !slices.Contains(ips, ip) {
			return false
		}
	}
	return true
}

func (st *ipState) addHolder(sv *svcState) {
	i, _ := slices.BinarySearchFunc(st.holders, sv.req.Service, func(h *svcState, s string) int {
		return strings.Compare(h.req.Service, s)
	})
	st.holders = slices.Insert(st.holders, i, sv)
}

func (st *ipState) removeHolder(sv *svcState) {
	st.holders = slices.DeleteFunc(st.holders, func(h *svcState) bool { return h == sv })
}

func newState(cfgs []AddressPool) (*state, error) {
	s := &state{
		byName: make(map[string]*addrPool, len(cfgs)),
		svcs:   map[string]*svcState{},
		ips:    map[netip.Addr]*ipState{},
		byKey:  map[string]map[netip.Addr]struct{}{},
	}
	type tagged struct {
		r         Range
		pool, idx int
	}
	var all []tagged
	for i, c := range cfgs {
		field := fmt.Sprintf("pools[%d]", i)
		if c.Name == "" {
			return nil, &ValidationError{Field: field + ".name", Reason: "must not be empty"}
		}
		if _, dup := s.byName[c.Name]; dup {
			k := slices.IndexFunc(cfgs, func(o AddressPool) bool { return o.Name == c.Name })
			return nil, &ValidationError{Field: field + ".name", Value: c.Name,
				Reason: fmt.Sprintf("duplicate pool name (also pools[%d])", k)}
		}
		if len(c.Ranges) == 0 {
			return nil, &ValidationError{Field: field + ".ranges", Reason: "a pool needs at least one range"}
		}
		for j, r := range c.Ranges {
			if reason := r.check(); reason != "" {
				return nil, &ValidationError{Field: fmt.Sprintf("%s.ranges[%d]", field, j),
					Value: r.First.String() + "-" + r.Last.String(), Reason: reason}
			}
			all = append(all, tagged{r, i, j})
		}
		p := &addrPool{cfg: c.clone()}
		s.byName[c.Name] = p
		s.pools = append(s.pools, p)
	}
	// Overlap check: sorted by First (IPv4 before IPv6), a range overlaps an
	// earlier one exactly when it starts at or before the furthest end seen
	// so far in its family.
	slices.SortFunc(all, func(a, b tagged) int { return a.r.First.Compare(b.r.First) })
	var reach tagged
	for k, t := range all {
		if k > 0 && reach.r.Is4() == t.r.Is4() && t.r.First.Compare(reach.r.Last) <= 0 {
			a, b := reach, t
			if b.pool < a.pool || (b.pool == a.pool && b.idx < a.idx) {
				a, b = b, a
			}
			return nil, &ValidationError{
				Field:  fmt.Sprintf("pools[%d].ranges[%d]", b.pool, b.idx),
				Value:  b.r.String(),
				Reason: fmt.Sprintf("overlaps %s of pool %q (pools[%d].ranges[%d])", a.r, cfgs[a.pool].Name, a.pool, a.idx),
			}
		}
		if k == 0 || reach.r.Is4() != t.r.Is4() || reach.r.Last.Less(t.r.Last) {
			reach = t
		}
	}
	for _, p := range s.pools {
		for _, r := range p.cfg.Ranges {
			fi := famIdx(r.First)
			p.ranges[fi] = append(p.ranges[fi], r)
		}
		for fi := range p.ranges {
			slices.SortFunc(p.ranges[fi], func(a, b Range) int { return a.First.Compare(b.First) })
			ivs := make([]interval, len(p.ranges[fi]))
			for k, r := range p.ranges[fi] {
				ivs[k] = interval{toU128(r.First), toU128(r.Last)}
			}
			p.free[fi] = newFreeSet(ivs, p.cfg.AvoidBuggyIPs && fi == 0)
			p.size[fi] = p.free[fi].count()
		}
	}
	return s, nil
}

// contains reports whether a is an allocatable address of p.
func (p *addrPool) contains(a netip.Addr) bool {
	if p.cfg.AvoidBuggyIPs && a.Is4() && isBuggy(toU128(a)) {
		return false
	}
	rs := p.ranges[famIdx(a)]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Last.Compare(a) >= 0 })
	return i < len(rs) && rs[i].First.Compare(a) <= 0
}

// poolOf returns the pool that owns a, or nil.
func (s *state) poolOf(a netip.Addr) *addrPool {
	for _, p := range s.pools {
		if p.contains(a) {
			return p
		}
	}
	return nil
}

// notInPoolDetail explains why a is in no pool.
func (s *state) notInPoolDetail(a netip.Addr) string {
	for _, p := range s.pools {
		if p.cfg.AvoidBuggyIPs && a.Is4() && isBuggy(toU128(a)) {
			rs := p.ranges[0]
			i := sort.Search(len(rs), func(i int) bool { return rs[i].Last.Compare(a) >= 0 })
			if i < len(rs) && rs[i].First.Compare(a) <= 0 {
				return "pool " + quote(p.cfg.Name) + " excludes it with AvoidBuggyIPs"
			}
		}
	}
	return "no configured pool contains it"
}

// sharingBlock returns why req may not use ip, or nil when ip is unheld or
// shareable. Holders that are req's own service are ignored.
func (s *state) sharingBlock(ip netip.Addr, req *Request) *SharingError {
	st := s.ips[ip]
	if st == nil {
		return nil
	}
	for _, h := range st.holders {
		if h.req.Service == req.Service {
			continue
		}
		if e := shareRule(&h.req, req); e != nil {
			e.IP = ip
			return e
		}
	}
	return nil
}

func (s *state) keyAdd(key string, ip netip.Addr) {
	m := s.byKey[key]
	if m == nil {
		m = map[netip.Addr]struct{}{}
		s.byKey[key] = m
	}
	m[ip] = struct{}{}
}

func (s *state) keyDel(key string, ip netip.Addr) {
	if m := s.byKey[key]; m != nil {
		delete(m, ip)
		if len(m) == 0 {
			delete(s.byKey, key)
		}
	}
}

// attach records that req's service holds ips from p. The caller has
// checked that this is allowed.
func (s *state) attach(req Request, p *addrPool, ips []netip.Addr) *svcState {
	sv := &svcState{req: req, pool: p, ips: ips}
	for _, ip := range ips {
		st := s.ips[ip]
		if st == nil {
			fi := famIdx(ip)
			if !p.free[fi].take(toU128(ip)) {
				panic(fmt.Sprintf("pool: internal error: %s is neither held nor free in pool %q", ip, p.cfg.Name))
			}
			st = &ipState{pool: p}
			s.ips[ip] = st
			p.inUse[fi]++
			if req.SharingKey != "" {
				s.keyAdd(req.SharingKey, ip)
			}
		}
		st.addHolder(sv)
	}
	s.svcs[req.Service] = sv
	return sv
}

// detach forgets sv, returning addresses nobody else holds to the pool.
func (s *state) detach(sv *svcState) {
	for _, ip := range sv.ips {
		st := s.ips[ip]
		st.removeHolder(sv)
		if len(st.holders) > 0 {
			continue
		}
		delete(s.ips, ip)
		fi := famIdx(ip)
		st.pool.free[fi].put(toU128(ip))
		st.pool.inUse[fi]--
		if sv.req.SharingKey != "" {
			s.keyDel(sv.req.SharingKey, ip)
		}
	}
	delete(s.svcs, sv.req.Service)
}

// reserve takes ip, an address of a pool that nobody holds, out of its
// pool's free set without giving it to anyone (SetPools keeps it for the
// service that may keep it); it reports false when ip was not free.
func (s *state) reserve(ip netip.Addr) bool {
	if s.ips[ip] != nil {
		return false
	}
	p := s.poolOf(ip)
	return p != nil && p.free[famIdx(ip)].take(toU128(ip))
}

// mayKeep reports whether a re-allocation of req could keep ip: ip is in a
// pool that resolve tries for req, of a family req wants, and req does not
// request another address of that family.
func (s *state) mayKeep(ip netip.Addr, req *Request) bool {
	p := s.poolOf(ip)
	if p == nil || familyOf(ip)&req.Family == 0 || req.Pool != "" && req.Pool != p.cfg.Name {
		return false
	}
	if len(req.IPs) > 0 {
		if pin, ok := addrOfFamily(req.IPs, familyOf(ip)); ok && pin != ip {
			return false
		}
		return s.poolOf(req.IPs[0]) == p
	}
	return req.Pool != "" || !p.cfg.DisableAutoAssign
}

// unreserve returns an address taken by reserve to its pool's free set.
func (s *state) unreserve(ip netip.Addr) {
	s.poolOf(ip).free[famIdx(ip)].put(toU128(ip))
}

// update replaces the request of a service that keeps its addresses, after
// checking the new ports, key and policy against the other holders.
func (s *state) update(sv *svcState, req Request) error {
	for _, ip := range sv.ips {
		if e := s.sharingBlock(ip, &req); e != nil {
			return &AllocationError{Service: req.Service, Pool: sv.pool.cfg.Name, IP: ip, Err: e,
				Detail: "the service keeps its current assignment"}
		}
	}
	if old := sv.req.SharingKey; old != req.SharingKey {
		// Only reachable when sv is the sole holder of each address
		// (otherwise RuleKeyMismatch fired), so the index moves wholesale.
		for _, ip := range sv.ips {
			if old != "" {
				s.keyDel(old, ip)
			}
			if req.SharingKey != "" {
				s.keyAdd(req.SharingKey, ip)
			}
		}
	}
	sv.req = req
	return nil
}

// assign gives req's service addresses: exactly `exact` when non-nil
// (restore), else per the request. An existing assignment that still fits
// is kept; otherwise the service is moved, and on failure it keeps what it
// had.
func (s *state) assign(req Request, exact []netip.Addr) (*svcState, error) {
	old := s.svcs[req.Service]
	if old != nil {
		if (exact == nil && old.fits(&req)) || (exact != nil && slices.Equal(old.ips, exact)) {
			if err := s.update(old, req); err != nil {
				return nil, err
			}
			return old, nil
		}
		s.detach(old)
	}
	var preferred []netip.Addr
	if old != nil {
		preferred = old.ips
	}
	p, ips, err := s.resolve(&req, exact, preferred)
	if err != nil {
		if old != nil {
			s.attach(old.req, old.pool, old.ips)
		}
		return nil, err
	}
	return s.attach(req, p, ips), nil
}

// resolve chooses a pool and addresses for req without changing anything.
// exact (restore) pins the addresses and ignores req.IPs and req.Pool;
// preferred addresses (the service's previous ones) are reused when they
// are eligible.
func (s *state) resolve(req *Request, exact, preferred []netip.Addr) (*addrPool, []netip.Addr, error) {
	fams, pinned := req.Family, req.IPs
	if exact != nil {
		fams, pinned = familiesOf(exact), exact
	}
	var cands []*addrPool
	switch {
	case len(pinned) > 0:
		var p *addrPool
		for _, ip := range pinned {
			q := s.poolOf(ip)
			if q == nil {
				return nil, nil, &AllocationError{Service: req.Service, IP: ip, Err: ErrNotInPool, Detail: s.notInPoolDetail(ip)}
			}
			if p != nil && q != p {
				return nil, nil, &AllocationError{Service: req.Service, IP: ip, Pool: q.cfg.Name, Err: ErrNotInPool,
					Detail: fmt.Sprintf("the addresses of one service come from one pool, and %s is in pool %q", pinned[0], p.cfg.Name)}
			}
			p = q
		}
		if exact == nil && req.Pool != "" && req.Pool != p.cfg.Name {
			if s.byName[req.Pool] == nil {
				return nil, nil, &AllocationError{Service: req.Service, Pool: req.Pool, Err: ErrUnknownPool}
			}
			return nil, nil, &AllocationError{Service: req.Service, IP: pinned[0], Pool: req.Pool, Err: ErrNotInPool,
				Detail: fmt.Sprintf("the address is in pool %q", p.cfg.Name)}
		}
		cands = []*addrPool{p}
	case req.Pool != "":
		p := s.byName[req.Pool]
		if p == nil {
			return nil, nil, &AllocationError{Service: req.Service, Pool: req.Pool, Err: ErrUnknownPool}
		}
		cands = []*addrPool{p}
	default:
		for _, p := range s.pools {
			if !p.cfg.DisableAutoAssign {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			return nil, nil, &AllocationError{Service: req.Service, Family: fams, Err: ErrPoolExhausted,
				Detail: "no pool allows automatic assignment"}
		}
		// Pools that hold one of the service's previous addresses first, so a
		// re-allocation keeps what it can; otherwise configuration order.
		slices.SortStableFunc(cands, func(a, b *addrPool) int {
			return cmp.Compare(holdsNone(a, preferred), holdsNone(b, preferred))
		})
	}
	var missing Family
	for _, p := range cands {
		ips, err := s.pickIn(p, req, fams, pinned, preferred)
		if err == nil {
			return p, ips, nil
		}
		if len(cands) == 1 {
			return nil, nil, err
		}
		var ae *AllocationError
		if errors.As(err, &ae) {
			missing |= ae.Family
		}
	}
	return nil, nil, &AllocationError{Service: req.Service, Family: missing, Err: ErrPoolExhausted,
		Detail: fmt.Sprintf("none of the %d pools that allow automatic assignment has room", len(cands))}
}

// holdsNone is 0 when p contains one of the preferred addresses, else 1.
func holdsNone(p *addrPool, preferred []netip.Addr) int {
	for _, ip := range preferred {
		if p.contains(ip) {
			return 0
		}
	}
	return 1
}

// pickIn chooses one address per wanted family in p.
func (s *state) pickIn(p *addrPool, req *Request, fams Family, pinned, preferred []netip.Addr) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, 2)
	for _, f := range [...]Family{IPv4, IPv6} {
		if fams&f == 0 {
			continue
		}
		if ip, ok := addrOfFamily(pinned, f); ok {
			if e := s.sharingBlock(ip, req); e != nil {
				return nil, &AllocationError{Service: req.Service, Pool: p.cfg.Name, IP: ip, Err: e}
			}
			if s.ips[ip] == nil && !p.free[famIdx(ip)].has(toU128(ip)) {
				return nil, &AllocationError{Service: req.Service, Pool: p.cfg.Name, IP: ip, Err: ErrAddressInUse,
					Detail: "another service that a pool change re-allocates may keep it"}
			}
			out = append(out, ip)
			continue
		}
		ip, ok := s.autoPick(p, f, req, preferred)
		if !ok {
			return nil, &AllocationError{Service: req.Service, Pool: p.cfg.Name, Family: f, Err: ErrPoolExhausted}
		}
		out = append(out, ip)
	}
	return out, nil
}

func addrOfFamily(ips []netip.Addr, f Family) (netip.Addr, bool) {
	for _, ip := range ips {
		if familyOf(ip) == f {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// autoPick picks an address of family f in p for req: a previous address of
// the service if still usable, else the lowest address already shared under
// req's sharing key that req may join, else the lowest free address.
func (s *state) autoPick(p *addrPool, f Family, req *Request, preferred []netip.Addr) (netip.Addr, bool) {
	fi := 0
	if f == IPv6 {
		fi = 1
	}
	for _, ip := range preferred {
		if familyOf(ip) != f || !p.contains(ip) {
			continue
		}
		if st := s.ips[ip]; st != nil && s.sharingBlock(ip, req) == nil || st == nil && p.free[fi].has(toU128(ip)) {
			return ip, true
		}
	}
	if req.SharingKey != "" {
		var best netip.Addr
		for ip := range s.byKey[req.SharingKey] {
			if familyOf(ip) != f || s.ips[ip].pool != p || (best.IsValid() && !ip.Less(best)) {
				continue
			}
			if s.sharingBlock(ip, req) == nil {
				best = ip
			}
		}
		if best.IsValid() {
			return best, true
		}
	}
	x, ok := p.free[fi].lowest()
	if !ok {
		return netip.Addr{}, false
	}
	return fromU128(x, f == IPv4), true
}

// normalize validates req and returns a private copy with defaults filled
// in and lists sorted.
func normalize(req Request) (Request, error) {
	n := req.clone()
	if n.Service == "" {
		return Request{}, &ValidationError{Field: "request.service", Reason: "must not be empty"}
	}
	if n.Family > DualStack {
		return Request{}, &ValidationError{Field: "request.family", Value: n.Family.String(), Reason: "must be IPv4, IPv6 or DualStack"}
	}
	seen, err := checkAddrs("request.ips", n.IPs)
	if err != nil {
		return Request{}, err
	}
	if n.Family == 0 {
		n.Family = seen
		if n.Family == 0 {
			n.Family = IPv4
		}
	}
	if extra := seen &^ n.Family; extra != 0 {
		return Request{}, &ValidationError{Field: "request.ips", Value: fmt.Sprint(n.IPs),
			Reason: fmt.Sprintf("an %s address is requested but the family is %s", extra, n.Family)}
	}
	sortAddrs(n.IPs)
	for i := range n.Ports {
		n.Ports[i].Protocol = n.Ports[i].Protocol.OrTCP()
		p := n.Ports[i]
		field := fmt.Sprintf("request.ports[%d]", i)
		if !p.Protocol.Valid() {
			return Request{}, &ValidationError{Field: field + ".protocol", Value: string(p.Protocol), Reason: "must be TCP, UDP or SCTP"}
		}
		if p.Port == 0 {
			return Request{}, &ValidationError{Field: field + ".port", Value: "0", Reason: "must be 1-65535"}
		}
		for _, q := range n.Ports[:i] {
			if q == p {
				return Request{}, &ValidationError{Field: field, Value: p.String(), Reason: "duplicate port"}
			}
		}
	}
	slices.SortFunc(n.Ports, comparePorts)
	switch n.TrafficPolicy {
	case "":
		n.TrafficPolicy = lb.TrafficPolicyCluster
	case lb.TrafficPolicyCluster, lb.TrafficPolicyLocal:
	default:
		return Request{}, &ValidationError{Field: "request.trafficPolicy", Value: string(n.TrafficPolicy), Reason: "must be Cluster or Local"}
	}
	return n, nil
}

// checkAddrs validates a list of service addresses (at most one per family)
// and returns the families present.
func checkAddrs(field string, ips []netip.Addr) (Family, error) {
	var seen Family
	for i, ip := range ips {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !ip.IsValid():
			return 0, &ValidationError{Field: f, Reason: "missing address"}
		case ip.Zone() != "":
			return 0, &ValidationError{Field: f, Value: ip.String(), Reason: "zoned address not allowed"}
		case ip.Is4In6():
			return 0, &ValidationError{Field: f, Value: ip.String(), Reason: "IPv4-mapped IPv6 address; use the IPv4 form"}
		case seen&familyOf(ip) != 0:
			return 0, &ValidationError{Field: f, Value: ip.String(),
				Reason: "more than one " + familyOf(ip).String() + " address; a service gets at most one per family"}
		}
		seen |= familyOf(ip)
	}
	return seen, nil
}
