package lb

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
)

// Maglev table sizes.
const (
	// DefaultMaglevSize is the default table size M, the prime the Maglev
	// paper uses.
	DefaultMaglevSize = 65537
	// MaxMaglevSize bounds M (a table of 16M entries is 64 MiB).
	MaxMaglevSize = 1 << 24
)

// MaglevBackend is one backend of a Maglev table.
type MaglevBackend struct {
	// Key identifies the backend (for example "10.0.0.1:8080"); it alone
	// decides the backend's preference order over the table slots, so the
	// same key gets the same slots on every node. Keys must be unique and
	// non-empty.
	Key string
	// Weight is the backend's relative share of the table. 0 gives it no
	// slot (drained); at least one backend needs a weight above 0.
	Weight uint32
}

// Maglev is an immutable weighted Maglev consistent-hashing table: M slots
// (M prime), each naming a backend, with each backend owning a share of
// slots proportional to its weight. Look a flow up by its hash with Lookup.
// It is safe for concurrent use.
//
// See the package documentation for the construction.
type Maglev struct {
	m        uint64
	backends []MaglevBackend // sorted by Key
	table    []uint32        // slot -> index into backends
	counts   []uint32        // slots per backend
}

// NewMaglev builds a table of the given size (0 means DefaultMaglevSize)
// from scratch. The result depends only on the set of backends (keys and
// weights) and the size, not on the order of backends, nor on any history:
// every node that builds from the same set gets the same table.
//
// size must be a prime in 2..MaxMaglevSize and at least len(backends).
// Errors match ErrInvalid.
func NewMaglev(backends []MaglevBackend, size int) (*Maglev, error) {
	if size == 0 {
		size = DefaultMaglevSize
	}
	if size < 2 || size > MaxMaglevSize || !isPrime(uint64(size)) {
		return nil, fmt.Errorf("lb: maglev size %d is not a prime in 2..%d: %w", size, MaxMaglevSize, ErrInvalid)
	}
	return build(nil, backends, uint64(size), true)
}

// Update returns a table for a new set of backends that keeps every slot it
// can from m: the same size, and a slot moves only when its backend was
// removed or now owns more slots than its new share. It is deterministic
// given m and the set of backends (in any order), but unlike NewMaglev it
// depends on m: nodes that must agree should apply the same sequence of
// updates from the same start. m is not modified.
func (m *Maglev) Update(backends []MaglevBackend) (*Maglev, error) {
	return build(m, backends, m.m, true)
}

// Size returns the number of slots M.
func (m *Maglev) Size() int { return int(m.m) }

// Len returns the number of backends.
func (m *Maglev) Len() int { return len(m.backends) }

// Backend returns backend i, in the table's order (sorted by Key).
func (m *Maglev) Backend(i int) MaglevBackend { return m.backends[i] }

// Backends returns a copy of the backends, in the table's order (sorted by
// Key); table entries are indices into it.
func (m *Maglev) Backends() []MaglevBackend { return slices.Clone(m.backends) }

// Table returns a copy of the table: for each slot, the index of its backend
// in Backends. An engine can load it into a kernel map keyed by slot.
func (m *Maglev) Table() []uint32 { return slices.Clone(m.table) }

// Entry returns the backend index of slot s (0 <= s < Size).
func (m *Maglev) Entry(s int) int { return int(m.table[s]) }

// Counts returns how many slots each backend owns, in Backends order.
func (m *Maglev) Counts() []int {
	out := make([]int, len(m.counts))
	for i, c := range m.counts {
		out[i] = int(c)
	}
	return out
}

// Slot returns the slot of a 64-bit flow hash: the high 64 bits of
// hash × M (Lemire's multiply-shift range reduction), which maps a hash that
// is uniform over 64 bits uniformly onto 0..M-1 with one multiplication
// instead of a 64-bit division. The hash must be uniform in its HIGH bits: a
// hash that fits in 32 bits must go through Slot32.
func (m *Maglev) Slot(hash uint64) int {
	hi, _ := bits.Mul64(hash, m.m)
	return int(hi)
}

// Slot32 returns the slot of a 32-bit flow hash: (hash × M) >> 32. This is
// exactly the kernel's reciprocal_scale, which nftables' "jhash ... mod M"
// uses, so a table loaded into a kernel map keyed by that expression picks
// the slot Slot32 picks for the same jhash value. Slot32(h) equals
// Slot(uint64(h) << 32).
func (m *Maglev) Slot32(hash uint32) int { return int((uint64(hash) * m.m) >> 32) }

// Lookup returns the backend index for a 64-bit flow hash (see Slot).
func (m *Maglev) Lookup(hash uint64) int {
	hi, _ := bits.Mul64(hash, m.m)
	return int(m.table[hi])
}

// Lookup32 returns the backend index for a 32-bit flow hash (see Slot32).
func (m *Maglev) Lookup32(hash uint32) int { return int(m.table[(uint64(hash)*m.m)>>32]) }

// Changed returns how many slots map to a different backend key in m and
// other (all slots when the sizes differ): the number of table entries, and
// so the share of flows, a change from one to the other moves.
func (m *Maglev) Changed(other *Maglev) int {
	if m.m != other.m {
		return int(m.m)
	}
	n := 0
	for s, i := range m.table {
		if m.backends[i].Key != other.backends[other.table[s]].Key {
			n++
		}
	}
	return n
}

// maglevPerm is a backend's preference order over the slots: slot
// (offset + j*skip) mod M for j = 0, 1, ..., a permutation since M is prime.
type maglevPerm struct{ offset, skip uint64 }

// permOf derives the permutation from the key alone: FNV-1a 64 of the key,
// finalised into two independent values with SplitMix64. This choice is
// part of the table's stable format.
func permOf(key string, m uint64) maglevPerm {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return maglevPerm{offset: splitmix64(h) % m, skip: splitmix64(h+0x9e3779b97f4a7c15)%(m-1) + 1}
}

func splitmix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// build makes a table for backends of size m, keeping what it can of prev
// (nil for a build from scratch). tailScan enables the tail scanner (see
// maglevFill); tests turn it off to check that it changes nothing.
func build(prev *Maglev, in []MaglevBackend, m uint64, tailScan bool) (*Maglev, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("lb: maglev needs at least one backend: %w", ErrInvalid)
	}
	if uint64(len(in)) > m {
		return nil, fmt.Errorf("lb: maglev size %d is smaller than the %d backends: %w", m, len(in), ErrInvalid)
	}
	backends := slices.Clone(in)
	slices.SortFunc(backends, func(a, b MaglevBackend) int { return cmp.Compare(a.Key, b.Key) })
	var total uint64
	for i, b := range backends {
		if b.Key == "" {
			return nil, fmt.Errorf("lb: maglev backend with an empty key: %w", ErrInvalid)
		}
		if i > 0 && backends[i-1].Key == b.Key {
			return nil, fmt.Errorf("lb: maglev backend %q given twice: %w", b.Key, ErrInvalid)
		}
		total += uint64(b.Weight)
	}
	if total == 0 {
		return nil, fmt.Errorf("lb: maglev needs a backend with a weight above 0: %w", ErrInvalid)
	}

	n := len(backends)
	perms := make([]maglevPerm, n)
	for i, b := range backends {
		perms[i] = permOf(b.Key, m)
	}
	t := &Maglev{m: m, backends: backends, table: make([]uint32, m), counts: make([]uint32, n)}
	free := make([]uint64, (m+63)/64) // bit set = slot free

	// Map prev's backends to the new indices (-1: removed), and count what
	// each surviving backend owned.
	var remap []int32
	prevCount := make([]uint32, n)
	if prev != nil {
		remap = make([]int32, len(prev.backends))
		j := 0
		for i, b := range prev.backends {
			for j < n && backends[j].Key < b.Key {
				j++
			}
			remap[i] = -1
			if j < n && backends[j].Key == b.Key {
				remap[i] = int32(j)
				prevCount[j] = prev.counts[i]
			}
		}
	}
	quota := maglevQuotas(backends, perms, prevCount, m, total)

	need := make([]uint32, n)
	if prev == nil {
		for i := range free {
			free[i] = ^uint64(0)
		}
		if tail := m % 64; tail != 0 {
			free[len(free)-1] = 1<<tail - 1 // no bits past the last slot
		}
		copy(need, quota)
	} else {
		// Keep each slot whose backend survives, up to the backend's new
		// quota; free the rest.
		for s, pi := range prev.table {
			if j := remap[pi]; j >= 0 && t.counts[j] < quota[j] {
				t.table[s] = uint32(j)
				t.counts[j]++
			} else {
				free[s>>6] |= 1 << (s & 63)
			}
		}
		for i := range need {
			need[i] = quota[i] - t.counts[i]
		}
	}
	maglevFill(t, free, need, perms, tailScan)
	return t, nil
}

// maglevQuotas apportions the m slots by weight with the largest-remainder
// method: each backend gets floor(m·w/total) or one more, so no backend is
// ever more than one slot away from its exact share. The extra slots go to
// backends with a fractional share, preferring those that already owned
// more than the floor in the previous table (so an update need not take a
// slot away), then the largest remainders, then a key-derived order.
func maglevQuotas(backends []MaglevBackend, perms []maglevPerm, prevCount []uint32, m, total uint64) []uint32 {
	n := len(backends)
	quota := make([]uint32, n)
	rem := make([]uint64, n)
	var given uint64
	for i, b := range backends {
		// m ≤ 2^24 and w < 2^32, so m·w fits in 64 bits.
		q, r := bits.Div64(0, m*uint64(b.Weight), total)
		quota[i], rem[i] = uint32(q), r
		given += q
	}
	extra := int(m - given)
	if extra == 0 {
		return quota
	}
	cand := make([]int, 0, n)
	for i := range backends {
		if rem[i] > 0 {
			cand = append(cand, i)
		}
	}
	slices.SortFunc(cand, func(a, b int) int {
		pa, pb := prevCount[a] > quota[a], prevCount[b] > quota[b]
		if pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(rem[b], rem[a]); c != 0 {
			return c
		}
		if c := cmp.Compare(perms[a].offset, perms[b].offset); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, i := range cand[:extra] {
		quota[i]++
	}
	return quota
}

// maglevFill gives each backend need[i] free slots, walking its
// permutation from the start and taking the free slots it meets, in rounds
// so that backends take turns as in the paper's population loop. A backend
// with need q takes about q/R slots per round over R rounds (R = the mean
// need), spread with an integer accumulator, so the loop costs O(M + N)
// besides the walks. free has a bit set per free slot; the total need
// equals the number of free slots, so every walk ends.
//
// Walking is cheap while the table is mostly free, but filling the last F
// slots costs about M/F probes each: most of a build's probes fill its last
// few hundred slots. So once F is below about sqrt(M) the fill switches to
// a scanner that finds the same slot a walk would find (the free slot that
// comes first in the backend's permutation from its position) by computing
// each free slot's rank in the permutation, F operations instead of M/F
// probes. The table is identical either way.
func maglevFill(t *Maglev, free []uint64, need []uint32, perms []maglevPerm, tailScan bool) {
	var totalNeed uint64
	active := make([]int, 0, len(need))
	for i, q := range need {
		if q > 0 {
			active = append(active, i)
			totalNeed += uint64(q)
		}
	}
	if totalNeed == 0 {
		return
	}
	m := t.m
	sc := newTailScanner(m, free, totalNeed, len(need))
	if !tailScan {
		sc.threshold = 0
	}
	rounds := (totalNeed + uint64(len(active)) - 1) / uint64(len(active))
	next := make([]uint64, len(need))
	acc := make([]uint64, len(need))
	for _, i := range active {
		next[i] = perms[i].offset
		acc[i] = rounds - 1 // so a backend takes its first slot in round 1
	}
	table := t.table
	left := totalNeed
	for r := uint64(0); r < rounds; r++ {
		for _, i := range active {
			acc[i] += uint64(need[i])
			if acc[i] < rounds {
				continue
			}
			pos, skip := next[i], perms[i].skip
			for acc[i] >= rounds {
				acc[i] -= rounds
				var slot uint64
				if left > sc.threshold {
					slot, pos = claimSlot(free, pos, skip, m)
				} else {
					slot, pos = sc.claim(i, pos, skip)
				}
				table[slot] = uint32(i)
				if left--; left == sc.threshold {
					sc.start(free)
				}
			}
			next[i] = pos
		}
	}
	for _, i := range active {
		t.counts[i] += need[i]
	}
}

// claimSlot walks a permutation from pos (step skip, modulo m) to the first
// free slot, marks it taken and returns it with the walk's next position.
// The modulo is branch-free (whether pos+skip wraps is a coin toss the
// branch predictor cannot learn), and each iteration makes two probes whose
// positions are both computed from pos, halving the loop-carried chain.
func claimSlot(free []uint64, pos, skip, m uint64) (slot, next uint64) {
	skip2 := skip + skip - m // 2·skip mod m; pos, skip < m < 2^63
	skip2 += m & uint64(int64(skip2)>>63)
	for {
		p1 := pos + skip - m
		p1 += m & uint64(int64(p1)>>63)
		p2 := pos + skip2 - m
		p2 += m & uint64(int64(p2)>>63)
		if w, bit := pos>>6, uint64(1)<<(pos&63); free[w]&bit != 0 {
			free[w] &^= bit
			return pos, p1
		}
		if w, bit := p1>>6, uint64(1)<<(p1&63); free[w]&bit != 0 {
			free[w] &^= bit
			return p1, p2
		}
		pos = p2
	}
}

// tailScanner claims slots once few are free, from a list of the free slots.
type tailScanner struct {
	m, magic  uint64 // magic = floor((2^64-1)/m), for Barrett reduction
	threshold uint64
	slots     []uint64 // the free slots, once started
	inv       []uint64 // skip⁻¹ mod m per backend, 0 until needed
}

func newTailScanner(m uint64, free []uint64, totalNeed uint64, backends int) *tailScanner {
	th := uint64(2)
	for th*th < m {
		th++
	}
	sc := &tailScanner{m: m, magic: ^uint64(0) / m, threshold: th, inv: make([]uint64, backends)}
	if totalNeed <= th {
		sc.threshold = totalNeed
		sc.start(free)
	}
	return sc
}

// start collects the free slots.
func (sc *tailScanner) start(free []uint64) {
	sc.slots = sc.slots[:0]
	for w, f := range free {
		for f != 0 {
			sc.slots = append(sc.slots, uint64(w)*64+uint64(bits.TrailingZeros64(f)))
			f &= f - 1
		}
	}
}

// claim returns the free slot backend i's walk from pos would reach first,
// removes it, and returns the walk's position after it. A slot s is reached
// after ((s - pos) · skip⁻¹) mod m steps.
func (sc *tailScanner) claim(i int, pos, skip uint64) (slot, next uint64) {
	inv := sc.inv[i]
	if inv == 0 {
		inv = modInverse(skip, sc.m)
		sc.inv[i] = inv
	}
	m := sc.m
	best, bestSteps := 0, m
	for k, s := range sc.slots {
		d := s - pos
		d += m & uint64(int64(d)>>63)
		x := d * inv // < m^2 ≤ 2^48
		q, _ := bits.Mul64(x, sc.magic)
		steps := x - q*m
		if steps >= m {
			steps -= m
		}
		if steps < bestSteps {
			best, bestSteps = k, steps
		}
	}
	slot = sc.slots[best]
	sc.slots[best] = sc.slots[len(sc.slots)-1]
	sc.slots = sc.slots[:len(sc.slots)-1]
	next = slot + skip
	if next >= m {
		next -= m
	}
	return slot, next
}

// modInverse returns a⁻¹ mod m for m prime and 0 < a < m.
func modInverse(a, m uint64) uint64 {
	t, newT := int64(0), int64(1)
	r, newR := int64(m), int64(a)
	for newR != 0 {
		q := r / newR
		t, newT = newT, t-q*newT
		r, newR = newR, r-q*newR
	}
	if t < 0 {
		t += int64(m)
	}
	return uint64(t)
}
