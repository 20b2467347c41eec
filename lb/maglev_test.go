package lb

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// paperMaglev is the reference: the population algorithm of the Maglev
// paper (Eisenbud et al., NSDI 2016, Pseudocode 1), unweighted, written
// straightforwardly. The paper precomputes permutation[i][j] for every
// backend and slot; with N = 1000 and M = 65537 that is 65M entries, so this
// computes the same values, (offset + j·skip) mod M, when they are needed.
// It uses the same per-key offset and skip as NewMaglev so both start from
// the same preference lists.
type paperMaglev struct {
	m     uint64
	entry []int32
}

func newPaperMaglev(keys []string, m uint64) *paperMaglev {
	n := len(keys)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	for i, k := range keys {
		p := permOf(k, m)
		offset[i], skip[i] = p.offset, p.skip
	}
	next := make([]uint64, n)
	entry := make([]int32, m)
	for i := range entry {
		entry[i] = -1
	}
	var filled uint64
	for {
		for i := 0; i < n; i++ {
			c := (offset[i] + next[i]*skip[i]) % m
			for entry[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			entry[c] = int32(i)
			next[i]++
			filled++
			if filled == m {
				return &paperMaglev{m: m, entry: entry}
			}
		}
	}
}

// lookup reduces the hash with a 64-bit modulo, as the paper's
// "Entry[hash % M]".
func (p *paperMaglev) lookup(hash uint64) int { return int(p.entry[hash%p.m]) }

func backendKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255)
	}
	slices.Sort(keys)
	return keys
}

func equalBackends(keys []string) []MaglevBackend {
	out := make([]MaglevBackend, len(keys))
	for i, k := range keys {
		out[i] = MaglevBackend{Key: k, Weight: 1}
	}
	return out
}

func mustMaglev(t testing.TB, b []MaglevBackend, size int) *Maglev {
	t.Helper()
	m, err := NewMaglev(b, size)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkMaglev asserts the invariants every table must hold: each entry
// names a backend, the counts match the entries, and each backend's count is
// its exact weighted share rounded down or up.
func checkMaglev(t testing.TB, m *Maglev) {
	t.Helper()
	counts := make([]int, m.Len())
	tab := m.Table()
	if len(tab) != m.Size() {
		t.Fatalf("table has %d entries, size %d", len(tab), m.Size())
	}
	for s, i := range tab {
		if int(i) >= m.Len() {
			t.Fatalf("slot %d names backend %d of %d", s, i, m.Len())
		}
		counts[i]++
	}
	if !slices.Equal(counts, m.Counts()) {
		t.Fatalf("Counts() = %v, table holds %v", m.Counts(), counts)
	}
	var total float64
	for _, b := range m.Backends() {
		total += float64(b.Weight)
	}
	for i, b := range m.Backends() {
		exact := float64(m.Size()) * float64(b.Weight) / total
		if c := float64(counts[i]); c < math.Floor(exact) || c > math.Ceil(exact) {
			t.Fatalf("backend %q weight %d owns %v slots, exact share %.3f", b.Key, b.Weight, c, exact)
		}
	}
}

func TestMaglevSizes(t *testing.T) {
	for _, size := range []int{2, 3, 251, 1021, 4093, 65537} {
		n := min(size, 7)
		m := mustMaglev(t, equalBackends(backendKeys(n)), size)
		if m.Size() != size {
			t.Errorf("Size() = %d, want %d", m.Size(), size)
		}
		checkMaglev(t, m)
	}
	m := mustMaglev(t, equalBackends(backendKeys(3)), 0)
	if m.Size() != DefaultMaglevSize {
		t.Errorf("size 0 gave %d, want the default %d", m.Size(), DefaultMaglevSize)
	}
}

func TestMaglevRejects(t *testing.T) {
	b := equalBackends(backendKeys(3))
	for name, tc := range map[string]struct {
		b    []MaglevBackend
		size int
	}{
		"not prime":    {b, 65536},
		"one":          {b, 1},
		"negative":     {b, -7},
		"too big":      {b, 16777259}, // a prime above MaxMaglevSize
		"no backends":  {nil, 251},
		"fewer slots":  {equalBackends(backendKeys(12)), 11},
		"empty key":    {[]MaglevBackend{{Key: "", Weight: 1}}, 251},
		"duplicate":    {[]MaglevBackend{{Key: "a", Weight: 1}, {Key: "a", Weight: 2}}, 251},
		"all drained":  {[]MaglevBackend{{Key: "a"}, {Key: "b"}}, 251},
		"zero weights": {[]MaglevBackend{{Key: "a", Weight: 0}}, 251},
	} {
		if _, err := NewMaglev(tc.b, tc.size); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestMaglevOrderIndependent(t *testing.T) {
	b := []MaglevBackend{{"c", 1}, {"a", 3}, {"b", 2}, {"d", 0}}
	m1 := mustMaglev(t, b, 1021)
	r := slices.Clone(b)
	slices.Reverse(r)
	m2 := mustMaglev(t, r, 1021)
	if !slices.Equal(m1.Table(), m2.Table()) || !slices.Equal(m1.Backends(), m2.Backends()) {
		t.Fatal("the same backends in another order built another table")
	}
	if got := m1.Counts(); got[3] != 0 {
		t.Errorf("drained backend d owns %d slots", got[3])
	}
	checkMaglev(t, m1)
}

func TestMaglevWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]MaglevBackend, 100)
	for i, k := range backendKeys(100) {
		b[i] = MaglevBackend{Key: k, Weight: uint32(1 + rng.IntN(10))}
	}
	m := mustMaglev(t, b, DefaultMaglevSize)
	checkMaglev(t, m)
	if r := maxOverAvg(m); r > 1.01 {
		t.Errorf("weighted max/avg load %.4f > 1.01", r)
	}
	// Flows follow weights: hash many random flows.
	hits := make([]int, m.Len())
	const flows = 1 << 20
	for range flows {
		hits[m.Lookup(rng.Uint64())]++
	}
	var total float64
	for _, x := range m.Backends() {
		total += float64(x.Weight)
	}
	var chi2 float64
	for i, x := range m.Backends() {
		exp := flows * float64(m.Counts()[i]) / float64(m.Size())
		chi2 += (float64(hits[i]) - exp) * (float64(hits[i]) - exp) / exp
		if share := float64(hits[i]) / flows; math.Abs(share-float64(x.Weight)/total) > 0.25*float64(x.Weight)/total {
			t.Errorf("backend %d weight %d got share %.5f, want %.5f", i, x.Weight, share, float64(x.Weight)/total)
		}
	}
	// 99 degrees of freedom: the 0.001 critical value is 148.2.
	if chi2 > 148.2 {
		t.Errorf("lookup distribution chi² = %.1f over 99 dof, above the p=0.001 bound", chi2)
	}
}

// maxOverAvg is the most loaded backend's load relative to its exact
// weighted share (1.0 is perfect).
func maxOverAvg(m *Maglev) float64 {
	var total float64
	for _, b := range m.Backends() {
		total += float64(b.Weight)
	}
	var worst float64
	for i, b := range m.Backends() {
		if b.Weight == 0 {
			continue
		}
		exact := float64(m.Size()) * float64(b.Weight) / total
		worst = max(worst, float64(m.Counts()[i])/exact)
	}
	return worst
}

func paperMaxOverAvg(p *paperMaglev, n int) float64 {
	counts := make([]int, n)
	for _, e := range p.entry {
		counts[e]++
	}
	return float64(slices.Max(counts)) / (float64(p.m) / float64(n))
}

func paperChanged(a, b *paperMaglev, aKeys, bKeys []string) int {
	n := 0
	for s := range a.entry {
		if aKeys[a.entry[s]] != bKeys[b.entry[s]] {
			n++
		}
	}
	return n
}

// TestMaglevMatchesPaperShape checks that NewMaglev with equal weights is
// the paper's algorithm in substance: every backend owns floor or ceil of
// M/N slots in both, and both give each backend mostly the same slots
// (NewMaglev's turn order and extra-slot choice differ slightly).
func TestMaglevMatchesPaperShape(t *testing.T) {
	keys := backendKeys(100)
	m := mustMaglev(t, equalBackends(keys), 4093)
	p := newPaperMaglev(keys, 4093)
	same := 0
	for s := range p.entry {
		if int(p.entry[s]) == m.Entry(s) {
			same++
		}
	}
	if share := float64(same) / 4093; share < 0.9 {
		t.Errorf("only %.1f%% of slots agree with the paper's population", 100*share)
	}
	if r := paperMaxOverAvg(p, 100); r > 41.0/40.93 {
		t.Errorf("reference max/avg %.4f: the reference is broken", r)
	}
}

// TestMaglevTargets asserts the quality targets at N = 1000,
// M = 65537: max/avg load ≤ 1.01 and at most 0.2% of the entries remapped
// when one backend is removed.
func TestMaglevTargets(t *testing.T) {
	keys := backendKeys(1000)
	m := mustMaglev(t, equalBackends(keys), DefaultMaglevSize)
	if r := maxOverAvg(m); r > 1.01 {
		t.Errorf("max/avg = %.4f > 1.01", r)
	}
	for _, gone := range []int{0, 1, 499, 999} {
		rest := slices.Delete(slices.Clone(keys), gone, gone+1)
		u, err := m.Update(equalBackends(rest))
		if err != nil {
			t.Fatal(err)
		}
		checkMaglev(t, u)
		moved := m.Changed(u)
		owned := m.Counts()[gone]
		if moved != owned {
			t.Errorf("removing backend %d (%d slots) moved %d slots; only its own should move", gone, owned, moved)
		}
		if share := float64(moved) / float64(m.Size()); share > 0.002 {
			t.Errorf("removing backend %d remapped %.3f%% > 0.2%%", gone, 100*share)
		}
		if r := maxOverAvg(u); r > 1.01 {
			t.Errorf("after removal max/avg = %.4f", r)
		}
	}
}

func TestMaglevUpdate(t *testing.T) {
	keys := backendKeys(50)
	m := mustMaglev(t, equalBackends(keys), 4093)

	same, err := m.Update(equalBackends(keys))
	if err != nil {
		t.Fatal(err)
	}
	if m.Changed(same) != 0 {
		t.Errorf("an update with the same backends moved %d slots", m.Changed(same))
	}

	// Adding a backend moves only the slots it takes.
	added, err := m.Update(equalBackends(append(slices.Clone(keys), "new:80")))
	if err != nil {
		t.Fatal(err)
	}
	checkMaglev(t, added)
	newIdx := slices.IndexFunc(added.Backends(), func(b MaglevBackend) bool { return b.Key == "new:80" })
	if moved, got := m.Changed(added), added.Counts()[newIdx]; moved != got {
		t.Errorf("adding a backend moved %d slots but it owns %d", moved, got)
	}

	// Doubling one weight moves exactly the slots it gains.
	b := equalBackends(keys)
	b[7].Weight = 2
	heavier, err := m.Update(b)
	if err != nil {
		t.Fatal(err)
	}
	checkMaglev(t, heavier)
	i7 := slices.IndexFunc(heavier.Backends(), func(x MaglevBackend) bool { return x.Key == keys[7] })
	gain := heavier.Counts()[i7] - m.Counts()[i7]
	if moved := m.Changed(heavier); moved != gain {
		t.Errorf("doubling a weight moved %d slots, the backend gained %d", moved, gain)
	}

	// An update never touches the original.
	before := m.Table()
	if _, err := m.Update(equalBackends(keys[:10])); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, m.Table()) {
		t.Error("Update modified its receiver")
	}

	// Update is order independent too.
	r := equalBackends(keys[5:])
	slices.Reverse(r)
	u1, _ := m.Update(equalBackends(keys[5:]))
	u2, _ := m.Update(r)
	if !slices.Equal(u1.Table(), u2.Table()) {
		t.Error("Update depends on the order of backends")
	}
}

func TestMaglevUpdateBeatsRebuild(t *testing.T) {
	keys := backendKeys(1000)
	m := mustMaglev(t, equalBackends(keys), DefaultMaglevSize)
	rest := equalBackends(slices.Delete(slices.Clone(keys), 500, 501))
	u, _ := m.Update(rest)
	fresh := mustMaglev(t, rest, DefaultMaglevSize)
	if u.Changed(m) >= fresh.Changed(m) {
		t.Errorf("update moved %d slots, a rebuild %d: the update should move fewer", u.Changed(m), fresh.Changed(m))
	}
	t.Logf("remove 1 of 1000: update moved %d, rebuild moved %d of %d", u.Changed(m), fresh.Changed(m), m.Size())
}

func TestMaglevSlots(t *testing.T) {
	m := mustMaglev(t, equalBackends(backendKeys(5)), 251)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		h := rng.Uint32()
		if m.Slot32(h) != m.Slot(uint64(h)<<32) {
			t.Fatalf("Slot32(%d) = %d, Slot(h<<32) = %d", h, m.Slot32(h), m.Slot(uint64(h)<<32))
		}
		// reciprocal_scale as the kernel computes it.
		if want := int((uint64(h) * 251) >> 32); m.Slot32(h) != want {
			t.Fatalf("Slot32(%d) = %d, want %d", h, m.Slot32(h), want)
		}
		if m.Lookup32(h) != m.Entry(m.Slot32(h)) {
			t.Fatal("Lookup32 disagrees with Entry(Slot32)")
		}
		x := rng.Uint64()
		if s := m.Slot(x); s < 0 || s >= 251 || m.Lookup(x) != m.Entry(s) {
			t.Fatalf("Slot(%d) = %d", x, s)
		}
	}
	if m.Slot(0) != 0 || m.Slot(math.MaxUint64) != 250 {
		t.Errorf("Slot range ends: %d, %d", m.Slot(0), m.Slot(math.MaxUint64))
	}
}

// The benchmarks below compare NewMaglev with the paper's population
// algorithm in one run, interleaving the two so that a noisy machine slows
// both alike, and report the ratio.

func BenchmarkMaglevBuild(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			keys := backendKeys(n)
			backends := equalBackends(keys)
			var ours, paper time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := NewMaglev(backends, DefaultMaglevSize); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				newPaperMaglev(keys, DefaultMaglevSize)
				paper += time.Since(t1)
				ours += t1.Sub(t0)
			}
			b.ReportMetric(float64(ours.Nanoseconds())/float64(b.N)/1e6, "ms/build")
			b.ReportMetric(float64(paper.Nanoseconds())/float64(b.N)/1e6, "paper-ms/build")
			b.ReportMetric(float64(paper)/float64(ours), "paper/lbkit")
		})
	}
}

// BenchmarkMaglevLookup times lookups of random 64-bit hashes in an
// N = 1000, M = 65537 table, ours (Lemire's multiply-shift) against the
// paper's hash % M, in blocks of 4096 alternating between the two.
// "independent" lookups can overlap in the CPU (throughput, as a packet
// loop sees them); "chained" makes each hash depend on the previous result
// (latency, including the cache miss on the 256 KiB table).
func BenchmarkMaglevLookup(b *testing.B) {
	keys := backendKeys(1000)
	m := mustMaglev(b, equalBackends(keys), DefaultMaglevSize)
	p := newPaperMaglev(keys, DefaultMaglevSize)
	rng := rand.New(rand.NewPCG(5, 6))
	hashes := make([]uint64, 4096)
	for i := range hashes {
		hashes[i] = rng.Uint64()
	}
	for _, chained := range []bool{false, true} {
		name := "independent"
		if chained {
			name = "chained"
		}
		b.Run(name, func(b *testing.B) {
			var ours, paper time.Duration
			var sink int
			lookups := 0
			for b.Loop() {
				t0 := time.Now()
				if chained {
					x := 0
					for _, h := range hashes {
						x = m.Lookup(h ^ uint64(x))
					}
					sink += x
				} else {
					for _, h := range hashes {
						sink += m.Lookup(h)
					}
				}
				t1 := time.Now()
				if chained {
					x := 0
					for _, h := range hashes {
						x = p.lookup(h ^ uint64(x))
					}
					sink += x
				} else {
					for _, h := range hashes {
						sink += p.lookup(h)
					}
				}
				paper += time.Since(t1)
				ours += t1.Sub(t0)
				lookups += len(hashes)
			}
			if sink == -1 {
				b.Log(sink)
			}
			b.ReportMetric(float64(ours.Nanoseconds())/float64(lookups), "ns/lookup")
			b.ReportMetric(float64(paper.Nanoseconds())/float64(lookups), "paper-ns/lookup")
			b.ReportMetric(float64(paper)/float64(ours), "paper/lbkit")
		})
	}
}

// BenchmarkMaglevRemoveOne reports quality, not time: max/avg load of
// N = 1000 tables, and the share of entries remapped when one backend is
// removed, for Update, for a rebuild with NewMaglev, and for the paper's
// rebuild. The timed part is Update itself.
func BenchmarkMaglevRemoveOne(b *testing.B) {
	keys := backendKeys(1000)
	m := mustMaglev(b, equalBackends(keys), DefaultMaglevSize)
	restKeys := slices.Delete(slices.Clone(keys), 500, 501)
	rest := equalBackends(restKeys)
	var u *Maglev
	for b.Loop() {
		var err error
		if u, err = m.Update(rest); err != nil {
			b.Fatal(err)
		}
	}
	fresh := mustMaglev(b, rest, DefaultMaglevSize)
	p := newPaperMaglev(keys, DefaultMaglevSize)
	pr := newPaperMaglev(restKeys, DefaultMaglevSize)
	size := float64(m.Size())
	b.ReportMetric(100*float64(m.Changed(u))/size, "update-remap-%")
	b.ReportMetric(100*float64(m.Changed(fresh))/size, "rebuild-remap-%")
	b.ReportMetric(100*float64(paperChanged(p, pr, keys, restKeys))/size, "paper-remap-%")
	b.ReportMetric(maxOverAvg(m), "max/avg")
	b.ReportMetric(paperMaxOverAvg(p, len(keys)), "paper-max/avg")
}

// TestMaglevTailScanSameTable checks that the tail scanner is only a faster
// way to the table plain permutation walks give, for builds and updates.
func TestMaglevTailScanSameTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, size := range []uint64{2, 3, 251, 1021, 65537} {
		for _, n := range []int{1, 2, 10, 100} {
			if uint64(n) > size {
				continue
			}
			b := make([]MaglevBackend, n)
			for i, k := range backendKeys(n) {
				b[i] = MaglevBackend{Key: k, Weight: uint32(rng.IntN(5))}
			}
			b[0].Weight = 1
			fast, err := build(nil, b, size, true)
			if err != nil {
				t.Fatal(err)
			}
			slow, _ := build(nil, b, size, false)
			if !slices.Equal(fast.Table(), slow.Table()) {
				t.Fatalf("M=%d N=%d: the tail scanner built another table", size, n)
			}
			b2 := slices.Clone(b[n/2:])
			b2 = append(b2, MaglevBackend{Key: "extra", Weight: 3})
			fu, _ := build(fast, b2, size, true)
			su, _ := build(fast, b2, size, false)
			if !slices.Equal(fu.Table(), su.Table()) {
				t.Fatalf("M=%d N=%d: the tail scanner updated to another table", size, n)
			}
		}
	}
}

// BenchmarkMaglevWeighted builds N = 1000 backends with weights 1..10
// (seeded) at M = 65537 and reports the build time and the worst load
// relative to each backend's weighted share.
func BenchmarkMaglevWeighted(b *testing.B) {
	rng := rand.New(rand.NewPCG(10, 10))
	backends := equalBackends(backendKeys(1000))
	for i := range backends {
		backends[i].Weight = uint32(1 + rng.IntN(10))
	}
	var m *Maglev
	for b.Loop() {
		m = mustMaglev(b, backends, DefaultMaglevSize)
	}
	b.ReportMetric(maxOverAvg(m), "max/avg")
}
