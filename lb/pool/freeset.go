package pool

import (
	"slices"
	"sort"
)

// interval is an inclusive run of address values.
type interval struct{ lo, hi u128 }

// freeSet holds the free addresses of one family of one pool as a sorted
// sequence of disjoint intervals. Its size is proportional to the number of
// holes that allocations have punched into the pool, never to the number of
// addresses in it: a fresh /8 or /64 is one interval.
//
// The sequence is stored in chunks of at most maxChunk intervals (a
// two-level B-tree, in effect), so that inserting or removing an interval
// in a pool fragmented into millions of holes moves at most one chunk, not
// the whole list.
//
// When avoidBuggy is set (IPv4 only), addresses ending in .0 or .255 are
// never handed out. The set keeps them out of interval ends, and treats two
// intervals separated only by such addresses as one run when merging, so
// the lowest free address is always the first interval's lo and the
// interval count stays bounded by the number of allocations plus the number
// of ranges.
type freeSet struct {
	chunks     [][]interval // each non-empty; concatenated, sorted
	avoidBuggy bool
	limit      int // chunk size that triggers a split
}

// maxChunk is the chunk size limit: 512 intervals of 32 bytes, so one
// insertion moves at most 16 KiB.
const maxChunk = 512

// pos addresses one interval: chunk c, index i within it.
type pos struct{ c, i int }

// isBuggy reports whether the IPv4 address value x ends in .0 or .255.
func isBuggy(x u128) bool {
	b := x.lo & 0xff
	return b == 0 || b == 0xff
}

// newFreeSet returns the set of all addresses of the given sorted,
// non-overlapping, same-family intervals.
func newFreeSet(sorted []interval, avoidBuggy bool) *freeSet {
	return newFreeSetLimit(sorted, avoidBuggy, maxChunk)
}

func newFreeSetLimit(sorted []interval, avoidBuggy bool, limit int) *freeSet {
	f := &freeSet{avoidBuggy: avoidBuggy, limit: limit}
	var ivs []interval
	for _, iv := range sorted {
		iv, ok := f.trim(iv)
		if !ok {
			continue
		}
		if n := len(ivs); n > 0 && f.adjacent(ivs[n-1].hi, iv.lo) {
			ivs[n-1].hi = iv.hi
			continue
		}
		ivs = append(ivs, iv)
	}
	for len(ivs) > 0 {
		n := max(1, min(len(ivs), limit/2))
		f.chunks = append(f.chunks, ivs[:n:n])
		ivs = ivs[n:]
	}
	return f
}

// intervals returns the whole sequence as one slice (for tests and
// counting).
func (f *freeSet) intervals() []interval {
	var out []interval
	for _, ch := range f.chunks {
		out = append(out, ch...)
	}
	return out
}

// trim removes buggy addresses from both ends of iv; ok is false when
// nothing is left.
func (f *freeSet) trim(iv interval) (interval, bool) {
	if f.avoidBuggy {
		for iv.lo.cmp(iv.hi) <= 0 && isBuggy(iv.lo) {
			iv.lo = iv.lo.add1()
		}
		for iv.lo.cmp(iv.hi) <= 0 && isBuggy(iv.hi) {
			iv.hi = iv.hi.sub1()
		}
	}
	return iv, iv.lo.cmp(iv.hi) <= 0
}

// adjacent reports whether nothing allocatable lies strictly between a and
// b (a < b): they are consecutive, or only buggy addresses separate them.
func (f *freeSet) adjacent(a, b u128) bool {
	if a.add1() == b {
		return true
	}
	if !f.avoidBuggy {
		return false
	}
	gap := b.sub(a)
	if gap.hi != 0 || gap.lo > 3 {
		return false
	}
	for x := a.add1(); x.cmp(b) < 0; x = x.add1() {
		if !isBuggy(x) {
			return false
		}
	}
	return true
}

// lowest returns the lowest free address.
func (f *freeSet) lowest() (u128, bool) {
	if len(f.chunks) == 0 {
		return u128{}, false
	}
	return f.chunks[0][0].lo, true
}

func (f *freeSet) at(p pos) *interval { return &f.chunks[p.c][p.i] }

// seek returns the position of the first interval whose hi >= x; ok is
// false when there is none.
func (f *freeSet) seek(x u128) (pos, bool) {
	c := sort.Search(len(f.chunks), func(c int) bool {
		ch := f.chunks[c]
		return ch[len(ch)-1].hi.cmp(x) >= 0
	})
	if c == len(f.chunks) {
		return pos{}, false
	}
	ch := f.chunks[c]
	return pos{c, sort.Search(len(ch), func(i int) bool { return ch[i].hi.cmp(x) >= 0 })}, true
}

// prev returns the position before p, if any.
func (f *freeSet) prev(p pos) (pos, bool) {
	switch {
	case p.i > 0:
		return pos{p.c, p.i - 1}, true
	case p.c > 0:
		return pos{p.c - 1, len(f.chunks[p.c-1]) - 1}, true
	}
	return pos{}, false
}

// remove deletes the interval at p.
func (f *freeSet) remove(p pos) {
	ch := f.chunks[p.c]
	switch {
	case len(ch) == 1:
		f.chunks = slices.Delete(f.chunks, p.c, p.c+1)
	case p.i == 0:
		f.chunks[p.c] = ch[1:] // the common case when allocating lowest-first
	default:
		f.chunks[p.c] = slices.Delete(ch, p.i, p.i+1)
	}
}

// insert puts iv before position p; p.i may be len(chunk) to append to
// chunk p.c. With no chunks at all, iv becomes the only interval.
func (f *freeSet) insert(p pos, iv interval) {
	if len(f.chunks) == 0 {
		f.chunks = [][]interval{{iv}}
		return
	}
	ch := slices.Insert(f.chunks[p.c], p.i, iv)
	if len(ch) <= f.limit {
		f.chunks[p.c] = ch
		return
	}
	half := len(ch) / 2
	upper := slices.Clone(ch[half:])
	f.chunks[p.c] = ch[:half]
	f.chunks = slices.Insert(f.chunks, p.c+1, upper)
}

// find returns the position of the interval containing x.
func (f *freeSet) find(x u128) (pos, bool) {
	p, ok := f.seek(x)
	if !ok || f.at(p).lo.cmp(x) > 0 {
		return pos{}, false
	}
	return p, true
}

// has reports whether x is free (and allocatable).
func (f *freeSet) has(x u128) bool {
	if f.avoidBuggy && isBuggy(x) {
		return false
	}
	_, ok := f.find(x)
	return ok
}

// take removes x from the set; it reports false when x was not free.
func (f *freeSet) take(x u128) bool {
	if f.avoidBuggy && isBuggy(x) {
		return false
	}
	p, ok := f.find(x)
	if !ok {
		return false
	}
	iv := *f.at(p)
	var parts [2]interval
	n := 0
	if x.cmp(iv.lo) > 0 {
		if q, ok := f.trim(interval{iv.lo, x.sub1()}); ok {
			parts[n] = q
			n++
		}
	}
	if x.cmp(iv.hi) < 0 {
		if q, ok := f.trim(interval{x.add1(), iv.hi}); ok {
			parts[n] = q
			n++
		}
	}
	switch n {
	case 0:
		f.remove(p)
	case 1:
		*f.at(p) = parts[0]
	case 2:
		*f.at(p) = parts[0]
		f.insert(pos{p.c, p.i + 1}, parts[1])
	}
	return true
}

// put returns x to the set. x must be an allocatable address of the pool
// that is not currently free; put reports false (and changes nothing) when
// it already is free or is a buggy address of an avoidBuggy set.
func (f *freeSet) put(x u128) bool {
	if f.avoidBuggy && isBuggy(x) {
		return false
	}
	r, hasRight := f.seek(x) // first interval ending at or after x
	if hasRight && f.at(r).lo.cmp(x) <= 0 {
		return false // already free
	}
	var l pos
	hasLeft := false
	if hasRight {
		l, hasLeft = f.prev(r)
	} else if len(f.chunks) > 0 {
		l, hasLeft = pos{len(f.chunks) - 1, len(f.chunks[len(f.chunks)-1]) - 1}, true
	}
	joinLeft := hasLeft && f.adjacent(f.at(l).hi, x)
	joinRight := hasRight && f.adjacent(x, f.at(r).lo)
	switch {
	case joinLeft && joinRight:
		f.at(l).hi = f.at(r).hi
		f.remove(r)
	case joinLeft:
		f.at(l).hi = x
	case joinRight:
		f.at(r).lo = x
	case hasRight:
		f.insert(r, interval{x, x})
	case hasLeft:
		f.insert(pos{l.c, l.i + 1}, interval{x, x})
	default:
		f.insert(pos{}, interval{x, x})
	}
	return true
}

// count returns the number of free allocatable addresses, saturated at
// MaxUint64.
func (f *freeSet) count() uint64 {
	var total uint64
	for _, ch := range f.chunks {
		for _, iv := range ch {
			n := iv.hi.sub(iv.lo).add1Sat()
			if f.avoidBuggy {
				n -= buggyIn(iv)
			}
			if total+n < total {
				return ^uint64(0)
			}
			total += n
		}
	}
	return total
}

// buggyIn counts IPv4 addresses ending in .0 or .255 in iv.
func buggyIn(iv interval) uint64 {
	lo, hi := iv.lo.lo, iv.hi.lo // IPv4 values fit in 32 bits
	return congruent(lo, hi, 0) + congruent(lo, hi, 255)
}

// congruent counts x in [lo, hi] with x%256 == r.
func congruent(lo, hi, r uint64) uint64 {
	upTo := func(n uint64) uint64 { // count in [0, n]
		if n < r {
			return 0
		}
		return (n-r)/256 + 1
	}
	c := upTo(hi)
	if lo > 0 {
		c -= upTo(lo - 1)
	}
	return c
}
