package lb

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
)

// SchedulerName names a scheduling algorithm. Each one that IPVS also
// implements is named as IPVS names it, so that code programming IPVS and
// users of ipvsadm can use the same names.
type SchedulerName string

// Schedulers.
const (
	RoundRobin SchedulerName = "rr"
	// WeightedRoundRobin is IPVS wrr (or, with SchedulerOptions.Smooth,
	// nginx's smooth variant). On Update it does what Linux's
	// ip_vs_wrr_dest_changed does: restart at the head of the list and keep
	// the current weight cw if it does not exceed the new maximum (aligned to
	// the new gcd step), else restart from the maximum. (Old kernels'
	// ip_vs_wrr_update_svc set cw to 0 only when it exceeded the maximum and
	// did not align it; lbkit follows current kernels.)
	WeightedRoundRobin      SchedulerName = "wrr"
	LeastConnection         SchedulerName = "lc"
	WeightedLeastConnection SchedulerName = "wlc"
	SourceHashing           SchedulerName = "sh"
	DestinationHashing      SchedulerName = "dh"
	ShortestExpectedDelay   SchedulerName = "sed"
	NeverQueue              SchedulerName = "nq"
	// MaglevHashing is lbkit's weighted Maglev (see Maglev); IPVS calls its
	// Maglev scheduler "mh".
	MaglevHashing SchedulerName = "mh"
	// Random picks in proportion to weight; IPVS has no such scheduler.
	Random SchedulerName = "random"
)

var schedulerNames = []SchedulerName{
	RoundRobin, WeightedRoundRobin, LeastConnection, WeightedLeastConnection,
	SourceHashing, DestinationHashing, ShortestExpectedDelay, NeverQueue, MaglevHashing, Random,
}

// SchedulerNames returns every scheduler name lb implements.
func SchedulerNames() []SchedulerName { return slices.Clone(schedulerNames) }

// Valid reports whether n names a scheduler lb implements.
func (n SchedulerName) Valid() bool { return slices.Contains(schedulerNames, n) }

// IPVSName returns the name of the IPVS scheduler module with the same
// algorithm ("rr", "wrr", ..., "mh"), or "" for Random, which IPVS lacks.
func (n SchedulerName) IPVSName() string {
	if !n.Valid() || n == Random {
		return ""
	}
	return string(n)
}

// ParseSchedulerName looks a scheduler up by name: an IPVS scheduler name
// or "random". Unknown names give an error matching ErrInvalid.
func ParseSchedulerName(s string) (SchedulerName, error) {
	if n := SchedulerName(s); n.Valid() {
		return n, nil
	}
	return "", fmt.Errorf("lb: unknown scheduler %q (want one of rr, wrr, lc, wlc, sh, dh, sed, nq, mh, random): %w", s, ErrInvalid)
}

// ErrNoBackend is returned by Pick when no backend can take the flow (none,
// all with weight 0, or the hashed one is unavailable without fallback).
var ErrNoBackend = errors.New("lb: no backend available")

// Backend is a destination a Scheduler chooses among.
type Backend struct {
	// Addr identifies the backend; it must be valid and unique.
	Addr netip.AddrPort
	// Weight is the backend's relative capacity, 0..MaxWeight. As in IPVS,
	// weight 0 means quiesced: no new flows.
	Weight uint32
}

// Load is a backend's current connection counts, which the caller tracks.
// The connection-based schedulers (lc, wlc, sed, nq) read them.
type Load struct {
	// Active counts established connections.
	Active uint32
	// Inactive counts connections in other states (closing, TIME_WAIT);
	// lc and wlc weigh one active connection as 256 inactive ones, as IPVS
	// does.
	Inactive uint32
}

// Flow is what a Scheduler may look at to place a new connection.
type Flow struct {
	Src netip.AddrPort
	Dst netip.AddrPort
}

// Scheduler picks a backend for each new flow. Implementations are safe for
// concurrent use.
type Scheduler interface {
	// Name returns the scheduler's name.
	Name() SchedulerName
	// Update replaces the set of backends. Invalid backends (an invalid or
	// repeated address, a weight above MaxWeight) give an error matching
	// ErrInvalid and leave the previous set in place.
	Update(backends []Backend) error
	// Pick returns the index, in the slice given to the last Update, of the
	// backend for a new flow, or ErrNoBackend. load is indexed like the
	// backends; the connection-based schedulers need it (len(load) must
	// match) and the others ignore it (it may be nil).
	Pick(f Flow, load []Load) (int, error)
}

// SchedulerOptions tunes schedulers; each field applies to the schedulers
// it names and is ignored by the others.
type SchedulerOptions struct {
	// Smooth makes wrr use the smooth weighted round robin of nginx (the
	// largest running credit wins) instead of IPVS's gcd-stepped
	// interleaving. Both give each backend exactly its weight per cycle;
	// smooth spreads a heavy backend's turns more evenly (weights 5,1,1:
	// a a b a c a a, where IPVS gives a a a a a b c).
	Smooth bool
	// HashPort makes sh and mh hash the source port too (IPVS sh-port,
	// mh-port).
	HashPort bool
	// Fallback makes sh pick another backend when the hashed one has
	// weight 0 (IPVS sh-fallback), instead of failing. mh never needs it:
	// backends of weight 0 own no slot.
	Fallback bool
	// MaglevSize is the mh table size; 0 means DefaultMaglevSize.
	MaglevSize int
	// Rand is the random source of the random scheduler; nil means a
	// ChaCha8 source seeded from crypto/rand.
	Rand rand.Source
}

// NewScheduler returns a scheduler by name. Errors match ErrInvalid.
func NewScheduler(name SchedulerName, opts SchedulerOptions) (Scheduler, error) {
	var impl schedImpl
	switch name {
	case RoundRobin:
		impl = &rrSched{}
	case WeightedRoundRobin:
		if opts.Smooth {
			impl = &smoothSched{}
		} else {
			impl = &wrrSched{}
		}
	case LeastConnection, WeightedLeastConnection, ShortestExpectedDelay, NeverQueue:
		impl = &connSched{name: name}
	case SourceHashing:
		impl = &hashSched{source: true, port: opts.HashPort, fallback: opts.Fallback}
	case DestinationHashing:
		impl = &hashSched{}
	case MaglevHashing:
		size := opts.MaglevSize
		if size == 0 {
			size = DefaultMaglevSize
		}
		if size < 2 || size > MaxMaglevSize || !isPrime(uint64(size)) {
			return nil, fmt.Errorf("lb: mh table size %d is not a prime in 2..%d: %w", size, MaxMaglevSize, ErrInvalid)
		}
		impl = &maglevSched{size: size, port: opts.HashPort}
	case Random:
		src := opts.Rand
		if src == nil {
			var seed [32]byte
			_, _ = crand.Read(seed[:]) // never fails (Go 1.24+)
			src = rand.NewChaCha8(seed)
		}
		impl = &randomSched{rng: rand.New(src)}
	default:
		_, err := ParseSchedulerName(string(name))
		return nil, err
	}
	return &scheduler{name: name, impl: impl}, nil
}

// schedImpl is one algorithm; scheduler serialises calls to it.
type schedImpl interface {
	update(b []Backend) error
	pick(b []Backend, f Flow, load []Load) int // -1: none
	usesLoad() bool
}

type scheduler struct {
	name     SchedulerName
	mu       sync.Mutex
	backends []Backend
	impl     schedImpl
}

func (s *scheduler) Name() SchedulerName { return s.name }

func (s *scheduler) Update(backends []Backend) error {
	seen := make(map[netip.AddrPort]int, len(backends))
	for i, b := range backends {
		if !b.Addr.IsValid() {
			return fmt.Errorf("lb: %s backend %d has no valid address: %w", s.name, i, ErrInvalid)
		}
		if j, dup := seen[b.Addr]; dup {
			return fmt.Errorf("lb: %s backends %d and %d are both %s: %w", s.name, j, i, b.Addr, ErrInvalid)
		}
		seen[b.Addr] = i
		if b.Weight > MaxWeight {
			return fmt.Errorf("lb: %s backend %s weight %d is above %d: %w", s.name, b.Addr, b.Weight, MaxWeight, ErrInvalid)
		}
	}
	b := slices.Clone(backends)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.impl.update(b); err != nil {
		return err
	}
	s.backends = b
	return nil
}

func (s *scheduler) Pick(f Flow, load []Load) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impl.usesLoad() && len(load) != len(s.backends) {
		return -1, fmt.Errorf("lb: %s needs the load of each of the %d backends, got %d: %w", s.name, len(s.backends), len(load), ErrInvalid)
	}
	if i := s.impl.pick(s.backends, f, load); i >= 0 {
		return i, nil
	}
	return -1, ErrNoBackend
}

// rrSched is IPVS rr: the next backend after the last one picked, skipping
// weight 0.
type rrSched struct{ last int }

func (r *rrSched) usesLoad() bool { return false }

func (r *rrSched) update([]Backend) error { r.last = -1; return nil }

func (r *rrSched) pick(b []Backend, _ Flow, _ []Load) int {
	for k := 1; k <= len(b); k++ {
		i := (r.last + k) % len(b)
		if b[i].Weight > 0 {
			r.last = i
			return i
		}
	}
	return -1
}

// wrrSched is IPVS wrr (ip_vs_wrr.c): a current weight cw steps down from
// the largest weight by the gcd of the weights; each pass over the list
// takes the backends whose weight is at least cw.
type wrrSched struct {
	cur        int   // last picked, -1 at the head of the list
	cw, mw, di int64 // current weight, start weight, step
}

func (w *wrrSched) usesLoad() bool { return false }

func (w *wrrSched) update(b []Backend) error {
	var g, maxW int64
	for _, x := range b {
		wt := int64(x.Weight)
		if wt > 0 {
			g = gcd(g, wt)
		}
		maxW = max(maxW, wt)
	}
	if g == 0 {
		g = 1
	}
	// As ip_vs_wrr_dest_changed in current Linux: restart at the head, keep
	// cw if it still fits, aligned to the new step, else start from mw.
	// TestWeightedRoundRobinUpdate pins the three cases.
	w.cur, w.di, w.mw = -1, g, maxW-(g-1)
	switch {
	case w.cw > w.mw || w.cw == 0:
		w.cw = w.mw
	case w.di > 1:
		w.cw = (w.cw/w.di)*w.di + 1
	}
	return nil
}

func (w *wrrSched) pick(b []Backend, _ Flow, _ []Load) int {
	if w.mw <= 0 {
		return -1
	}
	// Ends: the backend of the largest weight matches every cw ≤ mw.
	for {
		for i := w.cur + 1; i < len(b); i++ {
			if int64(b[i].Weight) >= w.cw {
				w.cur = i
				return i
			}
		}
		w.cur = -1
		if w.cw -= w.di; w.cw <= 0 {
			w.cw = w.mw
		}
	}
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothSched is nginx's smooth weighted round robin: every pick adds each
// weight to its backend's credit and takes the largest credit, which then
// pays the total weight back.
type smoothSched struct{ credit []int64 }

func (s *smoothSched) usesLoad() bool { return false }

func (s *smoothSched) update(b []Backend) error { s.credit = make([]int64, len(b)); return nil }

func (s *smoothSched) pick(b []Backend, _ Flow, _ []Load) int {
	best, total := -1, int64(0)
	for i, x := range b {
		if x.Weight == 0 {
			continue
		}
		s.credit[i] += int64(x.Weight)
		total += int64(x.Weight)
		if best < 0 || s.credit[i] > s.credit[best] {
			best = i
		}
	}
	if best >= 0 {
		s.credit[best] -= total
	}
	return best
}

// connSched implements the connection-based IPVS schedulers:
//
//   - lc (ip_vs_lc.c): least overhead, overhead = active·256 + inactive.
//   - wlc (ip_vs_wlc.c): least overhead per weight, compared by
//     cross-multiplication.
//   - sed (ip_vs_sed.c): least (active+1)/weight.
//   - nq (ip_vs_nq.c): an idle backend (no active connection) at once, else
//     as sed.
//
// Backends of weight 0 are never picked; ties go to the first in the list.
// Comparisons are exact for any counts: IPVS's int overhead would wrap from
// 2^23 active connections, and a 64-bit product of overhead and weight at
// about 2^24 with the largest weight; lbkit compares 128-bit products.
type connSched struct{ name SchedulerName }

func (c *connSched) usesLoad() bool { return true }

func (c *connSched) update([]Backend) error { return nil }

func (c *connSched) pick(b []Backend, _ Flow, load []Load) int {
	// Overheads fit in 41 bits (active < 2^32), weights in 31, so their
	// products need up to 72 bits: compared exactly in 128 bits below.
	// (IPVS computes the overhead in an int, which wraps from 2^23 active
	// connections on; lbkit does not reproduce that.)
	overhead := func(l Load) uint64 { return uint64(l.Active)<<8 + uint64(l.Inactive) }
	if c.name == ShortestExpectedDelay || c.name == NeverQueue {
		overhead = func(l Load) uint64 { return uint64(l.Active) + 1 }
	}
	best, bestOH := -1, uint64(0)
	for i, x := range b {
		if x.Weight == 0 {
			continue
		}
		oh := overhead(load[i])
		if c.name == NeverQueue && load[i].Active == 0 {
			return i
		}
		var better bool
		if c.name == LeastConnection {
			better = best < 0 || oh < bestOH
		} else {
			// oh/w < bestOH/bestW, without division.
			better = best < 0 || mulLess(oh, uint64(b[best].Weight), bestOH, uint64(x.Weight))
		}
		if better {
			best, bestOH = i, oh
		}
	}
	return best
}

// mulLess reports whether a·b < c·d, exactly (128-bit products).
func mulLess(a, b, c, d uint64) bool {
	hi1, lo1 := bits.Mul64(a, b)
	hi2, lo2 := bits.Mul64(c, d)
	return hi1 < hi2 || hi1 == hi2 && lo1 < lo2
}

// randomSched picks in proportion to weight.
type randomSched struct {
	rng *rand.Rand
	cum []uint64 // cumulative weights
}

func (r *randomSched) usesLoad() bool { return false }

func (r *randomSched) update(b []Backend) error {
	r.cum = make([]uint64, len(b))
	var sum uint64
	for i, x := range b {
		sum += uint64(x.Weight)
		r.cum[i] = sum
	}
	return nil
}

func (r *randomSched) pick(b []Backend, _ Flow, _ []Load) int {
	if len(r.cum) == 0 || r.cum[len(r.cum)-1] == 0 {
		return -1
	}
	x := r.rng.Uint64N(r.cum[len(r.cum)-1])
	return sort.Search(len(r.cum), func(i int) bool { return r.cum[i] > x })
}

// hashSched is IPVS sh (source hashing, ip_vs_sh.c) or dh (destination
// hashing, ip_vs_dh.c): a 256-bucket table filled with the backends in list
// order, and the bucket chosen by the kernel's hash of the address. sh gives
// a backend as many consecutive buckets as its weight (cycling through the
// list until the table is full); dh gives each backend one bucket in turn.
// A bucket whose backend has weight 0 fails the pick, unless sh's fallback
// probes on as the kernel does.
type hashSched struct {
	source, port, fallback bool
	buckets                [256]int32 // -1: no backend
}

func (h *hashSched) usesLoad() bool { return false }

func (h *hashSched) update(b []Backend) error {
	n, count := 0, uint32(0)
	for i := range h.buckets {
		if len(b) == 0 {
			h.buckets[i] = -1
			continue
		}
		h.buckets[i] = int32(n)
		count++
		if !h.source || count >= b[n].Weight {
			n, count = (n+1)%len(b), 0
		}
	}
	return nil
}

// hash32 is the kernel's hash_32(val, 8): the top 8 bits of
// val × GOLDEN_RATIO_32.
func hash32(val uint32) uint32 { return (val * 0x61C88647) >> 24 }

// addrFold is the kernel's 32-bit fold of an address: the IPv4 address, or
// the XOR of the four 32-bit words of an IPv6 address, in host order.
func addrFold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return binary.BigEndian.Uint32(b[:])
	}
	b := a.As16()
	return binary.BigEndian.Uint32(b[0:]) ^ binary.BigEndian.Uint32(b[4:]) ^
		binary.BigEndian.Uint32(b[8:]) ^ binary.BigEndian.Uint32(b[12:])
}

func (h *hashSched) pick(b []Backend, f Flow, _ []Load) int {
	if !h.source {
		i := h.buckets[hash32(addrFold(f.Dst.Addr()))]
		if i < 0 || b[i].Weight == 0 {
			return -1
		}
		return int(i)
	}
	var port uint32
	if h.port {
		port = uint32(f.Src.Port())
	}
	key := port + addrFold(f.Src.Addr())
	ihash := hash32(key)
	i := h.buckets[ihash]
	if i < 0 {
		return -1
	}
	if b[i].Weight > 0 {
		return int(i)
	}
	if !h.fallback {
		return -1
	}
	for offset := uint32(0); offset < 256; offset++ {
		roffset := (offset + ihash) % 256
		if i := h.buckets[(roffset+hash32(key))%256]; b[i].Weight > 0 {
			return int(i)
		}
	}
	return -1
}

// maglevSched is weighted Maglev over a hash of the source address (and
// port with HashPort). Updates go through Maglev.Update, so a change moves
// only the flows it must.
type maglevSched struct {
	size  int
	port  bool
	table *Maglev
	index []int // table backend index -> index in the Update slice
}

func (m *maglevSched) usesLoad() bool { return false }

func (m *maglevSched) update(b []Backend) error {
	if len(b) == 0 {
		m.table, m.index = nil, nil
		return nil
	}
	mb := make([]MaglevBackend, len(b))
	pos := make(map[string]int, len(b))
	for i, x := range b {
		k := x.Addr.String()
		mb[i] = MaglevBackend{Key: k, Weight: x.Weight}
		pos[k] = i
	}
	var t *Maglev
	var err error
	if m.table != nil {
		t, err = m.table.Update(mb)
	} else {
		t, err = NewMaglev(mb, m.size)
	}
	if errors.Is(err, ErrInvalid) && !slices.ContainsFunc(b, func(x Backend) bool { return x.Weight > 0 }) {
		// All drained: keep no table; picks fail until weights return.
		m.table, m.index = nil, nil
		return nil
	}
	if err != nil {
		return err
	}
	m.index = make([]int, t.Len())
	for i := range m.index {
		m.index[i] = pos[t.Backend(i).Key]
	}
	m.table = t
	return nil
}

func (m *maglevSched) pick(_ []Backend, f Flow, _ []Load) int {
	if m.table == nil {
		return -1
	}
	return m.index[m.table.Lookup(FlowHash(f.Src.Addr(), f.Src.Port(), m.port))]
}

// FlowHash is the 64-bit hash the mh scheduler looks flows up with: FNV-1a
// over the 16-byte form of addr (and the port when withPort is set),
// finalised with SplitMix64 so that all 64 bits are uniform, as Maglev.Lookup
// needs.
func FlowHash(addr netip.Addr, port uint16, withPort bool) uint64 {
	h := uint64(14695981039346656037)
	b := addr.As16()
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	if withPort {
		h ^= uint64(port)
		h *= 1099511628211
	}
	return splitmix64(h)
}
