package lb

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func backendsW(weights ...uint32) []Backend {
	out := make([]Backend, len(weights))
	for i, w := range weights {
		out[i] = Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 80), Weight: w}
	}
	return out
}

func newSched(t *testing.T, name SchedulerName, opts SchedulerOptions, b []Backend) Scheduler {
	t.Helper()
	s, err := NewScheduler(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(b); err != nil {
		t.Fatal(err)
	}
	return s
}

// sequence picks n times with no load and returns the picks as letters.
func sequence(t *testing.T, s Scheduler, n int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		i, err := s.Pick(Flow{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteByte(byte('a' + i))
	}
	return b.String()
}

// randomFlow is a flow from a random IPv4 or IPv6 client.
func randomFlow(rng *rand.Rand) Flow {
	var src netip.Addr
	if rng.IntN(2) == 0 {
		src = netip.AddrFrom4([4]byte{198, 51, byte(rng.IntN(256)), byte(rng.IntN(256))})
	} else {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 8; i < 16; i++ {
			b[i] = byte(rng.IntN(256))
		}
		src = netip.AddrFrom16(b)
	}
	dst := netip.AddrFrom4([4]byte{203, 0, 113, byte(rng.IntN(256))})
	return Flow{Src: netip.AddrPortFrom(src, uint16(1024+rng.IntN(60000))), Dst: netip.AddrPortFrom(dst, 80)}
}

// chiSquare returns the chi-square statistic of counts against shares
// proportional to weights.
func chiSquare(counts []int, weights []uint32) float64 {
	var n, total float64
	for i, c := range counts {
		n += float64(c)
		total += float64(weights[i])
	}
	var chi float64
	for i, c := range counts {
		exp := n * float64(weights[i]) / total
		if exp == 0 {
			continue
		}
		chi += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	return chi
}

// chi2Critical001 is the chi-square critical value at p = 0.001 for 1..9
// degrees of freedom.
var chi2Critical001 = []float64{0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88}

func TestSchedulerNames(t *testing.T) {
	want := map[SchedulerName]string{
		RoundRobin: "rr", WeightedRoundRobin: "wrr", LeastConnection: "lc", WeightedLeastConnection: "wlc",
		SourceHashing: "sh", DestinationHashing: "dh", ShortestExpectedDelay: "sed", NeverQueue: "nq",
		MaglevHashing: "mh", Random: "",
	}
	if len(SchedulerNames()) != len(want) {
		t.Fatalf("%d names, want %d", len(SchedulerNames()), len(want))
	}
	for _, n := range SchedulerNames() {
		if got := n.IPVSName(); got != want[n] {
			t.Errorf("%s.IPVSName() = %q, want %q", n, got, want[n])
		}
		p, err := ParseSchedulerName(string(n))
		if err != nil || p != n {
			t.Errorf("ParseSchedulerName(%q) = %q, %v", n, p, err)
		}
		s, err := NewScheduler(n, SchedulerOptions{MaglevSize: 251})
		if err != nil || s.Name() != n {
			t.Errorf("NewScheduler(%s): %v", n, err)
		}
	}
	for _, bad := range []string{"", "RR", "lblc", "fo", "ovf", "mh "} {
		if _, err := ParseSchedulerName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSchedulerName(%q) = %v", bad, err)
		}
		if _, err := NewScheduler(SchedulerName(bad), SchedulerOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewScheduler(%q) = %v", bad, err)
		}
	}
	if _, err := NewScheduler(MaglevHashing, SchedulerOptions{MaglevSize: 1000}); !errors.Is(err, ErrInvalid) {
		t.Errorf("mh with a composite size: %v", err)
	}
}

func TestSchedulerUpdateRejects(t *testing.T) {
	for _, n := range SchedulerNames() {
		s, _ := NewScheduler(n, SchedulerOptions{MaglevSize: 251})
		if err := s.Update(backendsW(1, 2)); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]Backend{
			"no address": {{Weight: 1}},
			"duplicate":  {backendsW(1)[0], backendsW(1)[0]},
			"weight":     {{Addr: backendsW(1)[0].Addr, Weight: MaxWeight + 1}},
		} {
			if err := s.Update(b); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %s: %v", n, name, err)
			}
		}
		// The previous set stays in place.
		if i, err := s.Pick(randomFlow(rand.New(rand.NewPCG(1, 1))), make([]Load, 2)); err != nil || i > 1 {
			t.Errorf("%s after a rejected update: %d, %v", n, i, err)
		}
	}
}

func TestSchedulersWithoutBackends(t *testing.T) {
	for _, n := range SchedulerNames() {
		for _, b := range [][]Backend{nil, backendsW(0, 0)} {
			s := newSched(t, n, SchedulerOptions{MaglevSize: 251, Fallback: true}, b)
			if _, err := s.Pick(randomFlow(rand.New(rand.NewPCG(2, 2))), make([]Load, len(b))); !errors.Is(err, ErrNoBackend) {
				t.Errorf("%s with %d drained backends: %v", n, len(b), err)
			}
		}
	}
}

func TestLoadSchedulersNeedLoad(t *testing.T) {
	for _, n := range []SchedulerName{LeastConnection, WeightedLeastConnection, ShortestExpectedDelay, NeverQueue} {
		s := newSched(t, n, SchedulerOptions{}, backendsW(1, 1))
		if _, err := s.Pick(Flow{}, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s without load: %v", n, err)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	s := newSched(t, RoundRobin, SchedulerOptions{}, backendsW(1, 0, 5, 1))
	if got := sequence(t, s, 7); got != "acdacda" {
		t.Errorf("rr = %s, want acdacda (weight ignored, 0 skipped)", got)
	}
}

func TestWeightedRoundRobinIPVS(t *testing.T) {
	for _, tc := range []struct {
		weights []uint32
		want    string
	}{
		// cw = 5: a; 4: a; 3: a b; 2: a b c; 1: a b c.
		{[]uint32{5, 3, 2}, "aaababcabc" + "aaababcabc"},
		{[]uint32{5, 1, 1}, "aaaaabc"},
		// gcd 2: cw = 3 (= 4-(2-1)), 1.
		{[]uint32{4, 2}, "aabaab"},
		{[]uint32{1, 1, 1}, "abcabc"},
		{[]uint32{0, 2, 1}, "bbcbbc"},
	} {
		s := newSched(t, WeightedRoundRobin, SchedulerOptions{}, backendsW(tc.weights...))
		if got := sequence(t, s, len(tc.want)); got != tc.want {
			t.Errorf("wrr %v = %s, want %s", tc.weights, got, tc.want)
		}
	}
}

// TestWeightedRoundRobinUpdate pins what Update does to a running wrr, as
// ip_vs_wrr_dest_changed does it in Linux: restart at the head of the list
// and keep the current weight cw when it still fits the new maximum (aligned
// to the new gcd step), else start again from the maximum.
func TestWeightedRoundRobinUpdate(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after []uint32
		picks         int // picks before the update
		want          string
	}{
		// 4,3,2: a a b | cw 3 kept: a b, then cw 2: a b c, cw 1: a b c, cw 4: a.
		{"cw kept", []uint32{4, 3, 2}, []uint32{4, 3, 2}, 3, "ababcabca"},
		// 5,1,1 after one pick has cw 5; 2,2 (gcd 2) has maximum 1.
		{"cw above the new maximum", []uint32{5, 1, 1}, []uint32{2, 2}, 1, "abab"},
		// 4,2 after one pick has cw 3; 9,6,3 has step 3: cw (3/3)·3+1 = 4.
		{"cw aligned to the new step", []uint32{4, 2}, []uint32{9, 6, 3}, 1, "ababcaab"},
	} {
		s := newSched(t, WeightedRoundRobin, SchedulerOptions{}, backendsW(tc.before...))
		sequence(t, s, tc.picks)
		if err := s.Update(backendsW(tc.after...)); err != nil {
			t.Fatal(err)
		}
		if got := sequence(t, s, len(tc.want)); got != tc.want {
			t.Errorf("%s: %s after the update, want %s", tc.name, got, tc.want)
		}
	}
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	s := newSched(t, WeightedRoundRobin, SchedulerOptions{Smooth: true}, backendsW(5, 1, 1))
	if got := sequence(t, s, 14); got != "aabacaa"+"aabacaa" {
		t.Errorf("smooth wrr = %s, want aabacaa twice", got)
	}
}

func TestWeightedRoundRobinShares(t *testing.T) {
	for _, smooth := range []bool{false, true} {
		w := []uint32{1, 2, 3, 7}
		s := newSched(t, WeightedRoundRobin, SchedulerOptions{Smooth: smooth}, backendsW(w...))
		counts := make([]int, len(w))
		for range 13 * 100 {
			i, _ := s.Pick(Flow{}, nil)
			counts[i]++
		}
		for i := range w {
			if counts[i] != 100*int(w[i]) {
				t.Errorf("smooth=%v: backend %d weight %d got %d of 1300, want exactly %d", smooth, i, w[i], counts[i], 100*w[i])
			}
		}
		// An update to new weights restarts cleanly.
		if err := s.Update(backendsW(2, 2)); err != nil {
			t.Fatal(err)
		}
		if got := sequence(t, s, 4); got != "abab" {
			t.Errorf("smooth=%v after update: %s", smooth, got)
		}
	}
}

// runLoaded picks n new connections that never close and returns the
// connection count of each backend.
func runLoaded(t *testing.T, s Scheduler, nb, n int) []int {
	t.Helper()
	load := make([]Load, nb)
	counts := make([]int, nb)
	for range n {
		i, err := s.Pick(Flow{}, load)
		if err != nil {
			t.Fatal(err)
		}
		load[i].Active++
		counts[i]++
	}
	return counts
}

func TestConnectionSchedulersShares(t *testing.T) {
	w := []uint32{1, 2, 3, 0}
	for _, tc := range []struct {
		name SchedulerName
		want []int // connections after 600 picks, never closed
	}{
		{LeastConnection, []int{200, 200, 200, 0}},
		{WeightedLeastConnection, []int{100, 200, 300, 0}},
		{ShortestExpectedDelay, []int{100, 200, 300, 0}},
		{NeverQueue, []int{100, 200, 300, 0}},
	} {
		s := newSched(t, tc.name, SchedulerOptions{}, backendsW(w...))
		counts := runLoaded(t, s, len(w), 600)
		for i := range w {
			if d := counts[i] - tc.want[i]; d < -1 || d > 1 {
				t.Errorf("%s: counts %v, want %v ±1", tc.name, counts, tc.want)
				break
			}
		}
	}
}

func TestConnectionSchedulersDiffer(t *testing.T) {
	// Backend a: weight 1, idle. Backend b: weight 10, 5 active.
	b := backendsW(1, 10)
	load := []Load{{}, {Active: 5}}
	for _, tc := range []struct {
		name SchedulerName
		want int
	}{
		{LeastConnection, 0},         // 0 < 5·256
		{WeightedLeastConnection, 0}, // 0/1 < 1280/10
		{ShortestExpectedDelay, 1},   // (0+1)/1 > (5+1)/10
		{NeverQueue, 0},              // a is idle
	} {
		s := newSched(t, tc.name, SchedulerOptions{}, b)
		if got, _ := s.Pick(Flow{}, load); got != tc.want {
			t.Errorf("%s picked %d, want %d", tc.name, got, tc.want)
		}
	}
	// lc and wlc weigh inactive connections 1/256 of active ones.
	lc := newSched(t, LeastConnection, SchedulerOptions{}, backendsW(1, 1))
	if got, _ := lc.Pick(Flow{}, []Load{{Active: 1}, {Inactive: 255}}); got != 1 {
		t.Errorf("lc: 255 inactive should weigh less than 1 active")
	}
	if got, _ := lc.Pick(Flow{}, []Load{{Active: 1}, {Inactive: 257}}); got != 0 {
		t.Errorf("lc: 257 inactive should weigh more than 1 active")
	}
	// nq still picks by expected delay once nobody is idle.
	nq := newSched(t, NeverQueue, SchedulerOptions{}, backendsW(1, 10))
	if got, _ := nq.Pick(Flow{}, []Load{{Active: 1}, {Active: 5}}); got != 1 {
		t.Errorf("nq with no idle backend: %d, want 1 (2/1 > 6/10)", got)
	}
}

// TestConnectionSchedulersHugeCounts: the load comparison is exact for any
// connection counts and weights; overhead·weight exceeds 64 bits here.
func TestConnectionSchedulersHugeCounts(t *testing.T) {
	const maxU = math.MaxUint32
	for _, tc := range []struct {
		name    SchedulerName
		weights []uint32
		load    []Load
		want    int
	}{
		// 256·(2^24+1)·(2^31-1) passes 2^63, 256·2^24·(2^31-1) does not.
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight}, []Load{{Active: 1<<24 + 1}, {Active: 1 << 24}}, 1},
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight}, []Load{{Active: 1 << 24}, {Active: 1<<24 + 1}}, 0},
		// Same weight, one connection fewer.
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight}, []Load{{Active: maxU}, {Active: maxU - 1}}, 1},
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight}, []Load{{Active: maxU - 1}, {Active: maxU}}, 0},
		// 257·(2^32-1)/(2^31-1) ≈ 514 against 256·(2^32-2)/(2^31-2) ≈ 512.
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight - 1}, []Load{{Active: maxU, Inactive: maxU}, {Active: maxU - 1}}, 1},
		// Inactive connections still break a tie of active ones.
		{WeightedLeastConnection, []uint32{MaxWeight, MaxWeight}, []Load{{Active: maxU, Inactive: 1}, {Active: maxU}}, 1},
		{LeastConnection, []uint32{1, 1}, []Load{{Active: maxU, Inactive: maxU}, {Active: maxU, Inactive: maxU - 1}}, 1},
		// 2^32/(2^31-1) ≈ 2 against (2^31+1)/1.
		{ShortestExpectedDelay, []uint32{MaxWeight, 1}, []Load{{Active: maxU}, {Active: 1 << 31}}, 0},
		{NeverQueue, []uint32{MaxWeight, MaxWeight}, []Load{{Active: maxU}, {Active: maxU - 1}}, 1},
	} {
		s := newSched(t, tc.name, SchedulerOptions{}, backendsW(tc.weights...))
		if got, err := s.Pick(Flow{}, tc.load); err != nil || got != tc.want {
			t.Errorf("%s %v %+v: picked %d (%v), want %d", tc.name, tc.weights, tc.load, got, err, tc.want)
		}
	}
}

func TestRandomDistribution(t *testing.T) {
	w := []uint32{1, 2, 3, 0, 4}
	s := newSched(t, Random, SchedulerOptions{Rand: rand.NewPCG(9, 9)}, backendsW(w...))
	counts := make([]int, len(w))
	for range 50000 {
		i, _ := s.Pick(Flow{}, nil)
		counts[i]++
	}
	if counts[3] != 0 {
		t.Errorf("drained backend got %d picks", counts[3])
	}
	if chi := chiSquare(counts, w); chi > chi2Critical001[3] {
		t.Errorf("random: counts %v, chi² %.1f over 3 dof", counts, chi)
	}
	// Unseeded: still a valid pick.
	u := newSched(t, Random, SchedulerOptions{}, backendsW(1))
	if i, err := u.Pick(Flow{}, nil); i != 0 || err != nil {
		t.Errorf("unseeded random: %d %v", i, err)
	}
}

// hashDistribution places many random flows and checks consistency and
// shares.
func hashDistribution(t *testing.T, s Scheduler, w []uint32, key func(Flow) netip.Addr) []int {
	t.Helper()
	rng := rand.New(rand.NewPCG(4, 4))
	counts := make([]int, len(w))
	for range 20000 {
		f := randomFlow(rng)
		i, err := s.Pick(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Same key, other everything else: same backend.
		g := randomFlow(rng)
		if key(f) == f.Src.Addr() {
			g.Src = netip.AddrPortFrom(f.Src.Addr(), g.Src.Port())
		} else {
			g.Dst = netip.AddrPortFrom(f.Dst.Addr(), g.Dst.Port())
		}
		if j, _ := s.Pick(g, nil); j != i {
			t.Fatalf("%s: %v and %v share %s but got %d and %d", s.Name(), f, g, key(f), i, j)
		}
		counts[i]++
	}
	return counts
}

func TestSourceHashing(t *testing.T) {
	w := []uint32{1, 2, 3, 2}
	s := newSched(t, SourceHashing, SchedulerOptions{}, backendsW(w...))
	counts := hashDistribution(t, s, w, func(f Flow) netip.Addr { return f.Src.Addr() })
	// 256 buckets with weights 1,2,3,2 repeating: 32, 64, 96, 64.
	if chi := chiSquare(counts, w); chi > chi2Critical001[3] {
		t.Errorf("sh: counts %v, chi² %.1f", counts, chi)
	}
	hs := s.(*scheduler).impl.(*hashSched)
	if hs.buckets[0] != 0 || hs.buckets[1] != 1 || hs.buckets[2] != 1 || hs.buckets[3] != 2 || hs.buckets[6] != 3 || hs.buckets[8] != 0 {
		t.Errorf("bucket layout %v, want weights filling consecutive buckets", hs.buckets[:10])
	}

	// As in the kernel, a weight-0 backend keeps one bucket (the table is
	// rebuilt on every change); flows hashing to it fail without fallback,
	// and with fallback probe on to an available backend.
	drained := backendsW(w...)
	drained[1].Weight = 0
	plain := newSched(t, SourceHashing, SchedulerOptions{}, drained)
	fb := newSched(t, SourceHashing, SchedulerOptions{Fallback: true}, drained)
	ps := plain.(*scheduler).impl.(*hashSched)
	if ps.buckets[1] != 1 || ps.buckets[2] != 2 {
		t.Errorf("drained layout %v, want the weight-0 backend in one bucket", ps.buckets[:6])
	}
	rng := rand.New(rand.NewPCG(5, 5))
	failed := 0
	for range 3000 {
		f := randomFlow(rng)
		i, err := plain.Pick(f, nil)
		switch {
		case errors.Is(err, ErrNoBackend):
			failed++
			if j := mustPick(t, fb, f); j == 1 {
				t.Fatal("sh fallback picked the drained backend")
			}
		case err != nil || i == 1:
			t.Fatalf("sh picked %d, %v", i, err)
		case mustPick(t, fb, f) != i:
			t.Fatal("sh fallback changed a flow whose bucket is available")
		}
	}
	if failed == 0 {
		t.Error("no flow hashed to the drained backend's bucket")
	}

	// With HashPort, one client spreads over backends by source port.
	sp := newSched(t, SourceHashing, SchedulerOptions{HashPort: true}, backendsW(1, 1, 1, 1))
	seen := map[int]bool{}
	for p := range 64 {
		seen[mustPick(t, sp, Flow{Src: netip.AddrPortFrom(a4("198.51.100.7"), uint16(40000+p))})] = true
	}
	if len(seen) < 3 {
		t.Errorf("sh-port: one client reached only %d backends over 64 ports", len(seen))
	}
}

func mustPick(t *testing.T, s Scheduler, f Flow) int {
	t.Helper()
	i, err := s.Pick(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestDestinationHashing(t *testing.T) {
	w := []uint32{1, 5, 1}
	s := newSched(t, DestinationHashing, SchedulerOptions{}, backendsW(w...))
	counts := hashDistribution(t, s, w, func(f Flow) netip.Addr { return f.Dst.Addr() })
	// dh ignores weights: 256 buckets dealt round robin.
	if chi := chiSquare(counts, []uint32{1, 1, 1}); chi > chi2Critical001[2] {
		t.Errorf("dh: counts %v, chi² %.1f", counts, chi)
	}
	drained := newSched(t, DestinationHashing, SchedulerOptions{}, backendsW(1, 0, 1))
	rng := rand.New(rand.NewPCG(6, 6))
	failed := 0
	for range 300 {
		f := randomFlow(rng)
		want := mustPick(t, s, f)
		i, err := drained.Pick(f, nil)
		switch {
		case want == 1 && !errors.Is(err, ErrNoBackend):
			t.Fatalf("dh: a flow of the drained backend got %d, %v", i, err)
		case want == 1:
			failed++
		case i != want:
			t.Fatal("dh: draining one backend moved another's flow")
		}
	}
	if failed == 0 {
		t.Error("no flow hashed to the drained backend")
	}
}

func TestMaglevScheduler(t *testing.T) {
	w := []uint32{1, 2, 3, 2, 1}
	s := newSched(t, MaglevHashing, SchedulerOptions{MaglevSize: 4093}, backendsW(w...))
	counts := hashDistribution(t, s, w, func(f Flow) netip.Addr { return f.Src.Addr() })
	if chi := chiSquare(counts, w); chi > chi2Critical001[4] {
		t.Errorf("mh: counts %v, chi² %.1f", counts, chi)
	}
	// Removing backend 2 moves only its flows; the indices shift to the new
	// slice.
	rng := rand.New(rand.NewPCG(8, 8))
	flows := make([]Flow, 3000)
	before := make([]netip.AddrPort, len(flows))
	b := backendsW(w...)
	for i := range flows {
		flows[i] = randomFlow(rng)
		before[i] = b[mustPick(t, s, flows[i])].Addr
	}
	rest := append(append([]Backend{}, b[:2]...), b[3:]...)
	if err := s.Update(rest); err != nil {
		t.Fatal(err)
	}
	for i, f := range flows {
		after := rest[mustPick(t, s, f)].Addr
		if before[i] != b[2].Addr && after != before[i] {
			t.Fatalf("flow %d moved from %s to %s though its backend stayed", i, before[i], after)
		}
	}
	// Draining everything fails picks; weights coming back restore them.
	if err := s.Update(backendsW(0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pick(flows[0], nil); !errors.Is(err, ErrNoBackend) {
		t.Errorf("all drained: %v", err)
	}
	if err := s.Update(backendsW(1)); err != nil {
		t.Fatal(err)
	}
	if i := mustPick(t, s, flows[0]); i != 0 {
		t.Errorf("single backend: %d", i)
	}
	// FlowHash uses the port only when asked.
	a := a4("198.51.100.9")
	if FlowHash(a, 1, false) != FlowHash(a, 2, false) || FlowHash(a, 1, true) == FlowHash(a, 2, true) {
		t.Error("FlowHash port handling")
	}
}

func TestSchedulersConcurrent(t *testing.T) {
	for _, n := range SchedulerNames() {
		s := newSched(t, n, SchedulerOptions{MaglevSize: 251}, backendsW(1, 2, 3))
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 0))
				for k := range 500 {
					if k%100 == 0 && g == 0 {
						if err := s.Update(backendsW(uint32(1+k%3), 2, 3)); err != nil {
							t.Errorf("%s: Update: %v", n, err)
							return
						}
					}
					if i, err := s.Pick(randomFlow(rng), make([]Load, 3)); err != nil || i < 0 || i > 2 {
						t.Errorf("%s: Pick = %d, %v", n, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}
