package pool

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// model is the obvious implementation the interval set must agree with: a
// map of every free address.
type model map[uint64]bool

func checkAgainstModel(t *testing.T, f *freeSet, m model, lo, hi uint64) {
	t.Helper()
	var lowest uint64
	found := false
	for x := lo; x <= hi; x++ {
		if m[x] && !found {
			lowest, found = x, true
		}
		if got := f.has(u128{0, x}); got != m[x] {
			t.Fatalf("has(%d) = %v, model %v; set %v", x, got, m[x], f.intervals())
		}
	}
	got, ok := f.lowest()
	if ok != found || (ok && got.lo != lowest) {
		t.Fatalf("lowest() = %d,%v, model %d,%v; set %v", got.lo, ok, lowest, found, f.intervals())
	}
	n := uint64(0)
	for _, v := range m {
		if v {
			n++
		}
	}
	if c := f.count(); c != n {
		t.Fatalf("count() = %d, model %d; set %v", c, n, f.intervals())
	}
	// Structural invariants: chunks non-empty and within the limit; sorted,
	// disjoint, not mergeable, ends allocatable.
	for _, ch := range f.chunks {
		if len(ch) == 0 || len(ch) > f.limit {
			t.Fatalf("chunk of %d intervals (limit %d)", len(ch), f.limit)
		}
	}
	ivs := f.intervals()
	for i, iv := range ivs {
		if iv.lo.cmp(iv.hi) > 0 {
			t.Fatalf("interval %d inverted: %v", i, f.intervals())
		}
		if f.avoidBuggy && (isBuggy(iv.lo) || isBuggy(iv.hi)) {
			t.Fatalf("interval %d has a buggy end: %v", i, f.intervals())
		}
		if i > 0 && (ivs[i-1].hi.cmp(iv.lo) >= 0 || f.adjacent(ivs[i-1].hi, iv.lo)) {
			t.Fatalf("intervals %d and %d overlap or should be merged: %v", i-1, i, f.intervals())
		}
	}
}

// runOps drives a set over [lo, hi] (two ranges split at mid when split is
// set) with ops, checking it against the model after each step.
func runOps(t *testing.T, avoidBuggy, split bool, lo, hi uint64, ops []byte) {
	for _, limit := range []int{2, 3, maxChunk} {
		runOpsLimit(t, avoidBuggy, split, lo, hi, ops, limit)
	}
}

// runOpsLimit is runOps with a given chunk size limit; tiny limits make
// every operation cross chunk boundaries.
func runOpsLimit(t *testing.T, avoidBuggy, split bool, lo, hi uint64, ops []byte, limit int) {
	t.Helper()
	m := model{}
	inPool := func(x uint64) bool {
		if x < lo || x > hi {
			return false
		}
		if split && x == (lo+hi)/2 {
			return false // a hole between the two ranges
		}
		return !(avoidBuggy && isBuggy(u128{0, x}))
	}
	var ivs []interval
	if split {
		mid := (lo + hi) / 2
		if mid > lo {
			ivs = append(ivs, interval{u128{0, lo}, u128{0, mid - 1}})
		}
		if mid < hi {
			ivs = append(ivs, interval{u128{0, mid + 1}, u128{0, hi}})
		}
	} else {
		ivs = []interval{{u128{0, lo}, u128{0, hi}}}
	}
	f := newFreeSetLimit(ivs, avoidBuggy, limit)
	for x := lo; x <= hi; x++ {
		m[x] = inPool(x)
	}
	checkAgainstModel(t, f, m, lo, hi)
	span := hi - lo + 1
	for i := 0; i+1 < len(ops); i += 2 {
		x := lo + uint64(ops[i+1])%span
		switch ops[i] % 3 {
		case 0: // take a specific address
			if got := f.take(u128{0, x}); got != m[x] {
				t.Fatalf("take(%d) = %v, model %v", x, got, m[x])
			}
			m[x] = false
		case 1: // put back an address of the pool (contract: never others)
			if !inPool(x) {
				continue
			}
			want := !m[x] // false when it is already free
			if got := f.put(u128{0, x}); got != want {
				t.Fatalf("put(%d) = %v, want %v (set %v)", x, got, want, f.intervals())
			}
			if want {
				m[x] = true
			}
		case 2: // take the lowest
			if l, ok := f.lowest(); ok {
				if !f.take(l) {
					t.Fatalf("take(lowest %d) failed", l.lo)
				}
				m[l.lo] = false
			}
		}
		checkAgainstModel(t, f, m, lo, hi)
	}
}

func TestFreeSetAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, avoid := range []bool{false, true} {
		for _, split := range []bool{false, true} {
			for _, bounds := range [][2]uint64{{0, 20}, {250, 520}, {0xfffffff0, 0xffffffff}, {255, 256}} {
				for round := 0; round < 20; round++ {
					ops := make([]byte, 400)
					for i := range ops {
						ops[i] = byte(rng.Uint32())
					}
					runOps(t, avoid, split, bounds[0], bounds[1], ops)
				}
			}
		}
	}
}

func FuzzFreeSet(f *testing.F) {
	f.Add(true, false, uint32(250), uint16(300), []byte{0, 5, 0, 6, 1, 5, 2, 0, 2, 0})
	f.Add(false, true, uint32(0), uint16(40), []byte{2, 0, 2, 0, 1, 0, 0, 20})
	f.Fuzz(func(t *testing.T, avoid, split bool, lo uint32, span uint16, ops []byte) {
		if span > 2000 || len(ops) > 2000 {
			return
		}
		hi := uint64(lo) + uint64(span)
		if hi > 0xffffffff {
			hi = 0xffffffff
		}
		runOps(t, avoid, split, uint64(lo), hi, ops)
	})
}

func TestFreeSetIPv6Extremes(t *testing.T) {
	maxv := u128{^uint64(0), ^uint64(0)}
	f := newFreeSet([]interval{{u128{}, maxv}}, false) // ::/0
	require.Equal(t, ^uint64(0), f.count(), "count of ::/0, want saturated")
	require.True(t, f.take(maxv), "take of the last address of ::/0 failed")
	require.True(t, f.take(u128{}), "take of the first address of ::/0 failed")
	require.False(t, f.take(maxv), "second take of the last address of ::/0 succeeded")
	l, _ := f.lowest()
	require.Equal(t, u128{0, 1}, l, "lowest, want ::1")
	require.True(t, f.put(maxv), "put back of the last address failed")
	require.True(t, f.put(u128{}), "put back of the first address failed")
	require.Len(t, f.intervals(), 1, "put back did not re-merge")
	// A hole in the middle of a /64 splits it in two intervals, no more.
	g := newFreeSet([]interval{{u128{1, 0}, u128{1, ^uint64(0)}}}, false)
	require.True(t, g.take(u128{1, 1 << 40}), "take in the middle of a /64 failed")
	require.Len(t, g.intervals(), 2, "split")
}
