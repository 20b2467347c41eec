package pool

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

// heapBytes returns the fewest bytes f allocated over a few runs (the
// minimum filters out unrelated runtime allocations).
func heapBytes(f func()) uint64 {
	best := ^uint64(0)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d < best {
			best = d
		}
	}
	return best
}

// TestHugePoolsUseConstantMemory proves that the memory of a pool does not
// grow with its size: an allocator over a /8 or an IPv6 /64 (or ::/0)
// costs what one over a /24 costs, before and after handing out the same
// number of addresses.
func TestHugePoolsUseConstantMemory(t *testing.T) {
	sizes := []string{"192.0.2.0/24", "10.0.0.0/20", "10.0.0.0/16", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/64", "2001:db8::/32", "::/0"}
	newBytes := map[string]uint64{}
	for _, cidr := range sizes {
		p := mkPool(t, "p", cidr)
		newBytes[cidr] = heapBytes(func() {
			if _, err := New([]AddressPool{p}); err != nil {
				t.Fatal(err)
			}
		})
	}
	base := newBytes["192.0.2.0/24"]
	for _, cidr := range sizes {
		t.Logf("New(%s): %d bytes", cidr, newBytes[cidr])
		// A few hundred bytes of slack absorb stray runtime allocations
		// (the race detector makes some); a /8 is 65536 times a /24, so
		// any per-address cost would be far beyond it.
		msg := []any{"New(%s) allocated %d bytes, /24 %d: pool memory grows with size", cidr, newBytes[cidr], base}
		assert.LessOrEqual(t, newBytes[cidr], base+512, msg...)
		assert.LessOrEqual(t, newBytes[cidr], uint64(4096), msg...)
	}

	// Handing out the same 1000 addresses costs the same in a /20 and a /8
	// or /64: memory follows the allocations, not the pool.
	const n = 1000
	names := make([]string, n)
	for i := range names {
		names[i] = "ns/svc-" + strconv.Itoa(i)
	}
	fill := func(cidr string, fam Family) uint64 {
		p := mkPool(t, "p", cidr)
		return heapBytes(func() {
			a, _ := New([]AddressPool{p})
			for _, s := range names {
				if _, err := a.Allocate(Request{Service: s, Family: fam}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	small := fill("10.0.0.0/20", IPv4)
	for _, c := range []struct {
		cidr string
		fam  Family
	}{{"10.0.0.0/8", IPv4}, {"0.0.0.0/0", IPv4}, {"2001:db8::/64", IPv6}} {
		big := fill(c.cidr, c.fam)
		t.Logf("%d allocations: /20 %d bytes, %s %d bytes", n, small, c.cidr, big)
		assert.LessOrEqual(t, float64(big), 1.1*float64(small), "%d allocations from %s took %d bytes vs %d from a /20", n, c.cidr, big, small)
	}
}
