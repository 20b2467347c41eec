package pool

import "sort"

// interval is an inclusive run of address values.
type interval struct{ lo, hi u128 }

// freeSet holds the free addresses of one family of one pool as a sorted
// slice of disjoint intervals. Its size is proportional to the number of
// holes that allocations have punched into the pool, never to the number of
// addresses in it: a fresh /8 or /64 is one interval.
//
// When avoidBuggy is set (IPv4 only), addresses ending in .0 or .255 are
// never handed out. The set keeps them out of interval ends, and treats two
// intervals separated only by such addresses as one run when merging, so
// the lowest free address is always ivs[0].lo and the interval count stays
// bounded by the number of allocations plus the number of ranges.
type freeSet struct {
	ivs        []interval
	avoidBuggy bool
}

// isBuggy reports whether the IPv4 address value x ends in .0 or .255.
func isBuggy(x u128) bool {
	b := x.lo & 0xff
	return b == 0 || b == 0xff
}

// newFreeSet returns the set of all addresses of the given sorted,
// non-overlapping, same-family intervals.
func newFreeSet(sorted []interval, avoidBuggy bool) *freeSet {
	f := &freeSet{avoidBuggy: avoidBuggy}
	for _, iv := range sorted {
		iv, ok := f.trim(iv)
		if !ok {
			continue
		}
		if n := len(f.ivs); n > 0 && f.adjacent(f.ivs[n-1].hi, iv.lo) {
			f.ivs[n-1].hi = iv.hi
			continue
		}
		f.ivs = append(f.ivs, iv)
	}
	return f
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
	if len(f.ivs) == 0 {
		return u128{}, false
	}
	return f.ivs[0].lo, true
}

// find returns the index of the interval containing x, or -1.
func (f *freeSet) find(x u128) int {
	i := sort.Search(len(f.ivs), func(i int) bool { return f.ivs[i].hi.cmp(x) >= 0 })
	if i < len(f.ivs) && f.ivs[i].lo.cmp(x) <= 0 {
		return i
	}
	return -1
}

// has reports whether x is free (and allocatable).
func (f *freeSet) has(x u128) bool {
	return !(f.avoidBuggy && isBuggy(x)) && f.find(x) >= 0
}

// take removes x from the set; it reports false when x was not free.
func (f *freeSet) take(x u128) bool {
	if f.avoidBuggy && isBuggy(x) {
		return false
	}
	i := f.find(x)
	if i < 0 {
		return false
	}
	iv := f.ivs[i]
	var parts [2]interval
	n := 0
	if x.cmp(iv.lo) > 0 {
		if p, ok := f.trim(interval{iv.lo, x.sub1()}); ok {
			parts[n] = p
			n++
		}
	}
	if x.cmp(iv.hi) < 0 {
		if p, ok := f.trim(interval{x.add1(), iv.hi}); ok {
			parts[n] = p
			n++
		}
	}
	switch n {
	case 0:
		if i == 0 {
			f.ivs = f.ivs[1:] // the common case when allocating lowest-first
		} else {
			f.ivs = append(f.ivs[:i], f.ivs[i+1:]...)
		}
	case 1:
		f.ivs[i] = parts[0]
	case 2:
		f.ivs[i] = parts[0]
		f.ivs = append(f.ivs, interval{})
		copy(f.ivs[i+2:], f.ivs[i+1:])
		f.ivs[i+1] = parts[1]
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
	// i is the first interval starting after x.
	i := sort.Search(len(f.ivs), func(i int) bool { return f.ivs[i].lo.cmp(x) > 0 })
	if i > 0 && f.ivs[i-1].hi.cmp(x) >= 0 {
		return false // already free
	}
	joinLeft := i > 0 && f.adjacent(f.ivs[i-1].hi, x)
	joinRight := i < len(f.ivs) && f.adjacent(x, f.ivs[i].lo)
	switch {
	case joinLeft && joinRight:
		f.ivs[i-1].hi = f.ivs[i].hi
		f.ivs = append(f.ivs[:i], f.ivs[i+1:]...)
	case joinLeft:
		f.ivs[i-1].hi = x
	case joinRight:
		f.ivs[i].lo = x
	default:
		f.ivs = append(f.ivs, interval{})
		copy(f.ivs[i+1:], f.ivs[i:])
		f.ivs[i] = interval{x, x}
	}
	return true
}

// count returns the number of free allocatable addresses, saturated at
// MaxUint64.
func (f *freeSet) count() uint64 {
	var total uint64
	for _, iv := range f.ivs {
		n := iv.hi.sub(iv.lo).add1Sat()
		if f.avoidBuggy {
			n -= buggyIn(iv)
		}
		if total+n < total {
			return ^uint64(0)
		}
		total += n
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
