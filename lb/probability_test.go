package lb

import (
	"errors"
	"math"
	"strconv"
	"testing"
)

func TestProbabilityChainKubeProxy(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []string
	}{
		{1, []string{}},
		{2, []string{"0.50000000000"}},
		{3, []string{"0.33333333349", "0.50000000000"}},
		{4, []string{"0.25000000000", "0.33333333349", "0.50000000000"}},
		{7, []string{"0.14285714272", "0.16666666651", "0.20000000019", "0.25000000000", "0.33333333349", "0.50000000000"}},
	} {
		w := make([]uint32, tc.n)
		for i := range w {
			w[i] = 1
		}
		chain, err := ProbabilityChain(w)
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != tc.n-1 {
			t.Fatalf("n=%d: %d steps, want %d", tc.n, len(chain), tc.n-1)
		}
		for i, p := range chain {
			if p.String() != tc.want[i] {
				t.Errorf("n=%d step %d: %s, want %s", tc.n, i, p, tc.want[i])
			}
			// kube-proxy's own string: 1/(n-i) with %0.10f.
			if want := strconvF(1/float64(tc.n-i), 10); p.KubeProxyString() != want {
				t.Errorf("n=%d step %d: kube-proxy string %s, want %s", tc.n, i, p.KubeProxyString(), want)
			}
		}
	}
}

func strconvF(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }

// TestProbabilityRoundTrip checks that the string, written back into
// iptables-restore, stores the same 31-bit value (as libxt_statistic does:
// lround(p × 2^31)), so rendered rules equal iptables-save output.
func TestProbabilityRoundTrip(t *testing.T) {
	for n := 2; n <= 2000; n++ {
		p := Probability(1 / float64(n))
		v, err := strconv.ParseFloat(p.String(), 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := uint32(math.Round(v * (1 << 31))); got != p.Fixed() {
			t.Fatalf("1/%d: %s reads back as %d, stored %d", n, p, got, p.Fixed())
		}
	}
}

// TestProbabilityChainShares checks that the chain gives endpoint i the
// share w_i / total: the product of "not taken before" and "taken here".
func TestProbabilityChainShares(t *testing.T) {
	for _, w := range [][]uint32{
		{1, 1, 1},
		{1, 2, 3},
		{5, 1, 1, 1, 10},
		{MaxWeight, 1, MaxWeight},
		{7},
		{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
	} {
		chain, err := ProbabilityChain(w)
		if err != nil {
			t.Fatal(err)
		}
		var total float64
		for _, x := range w {
			total += float64(x)
		}
		checkShares(t, w, total, func(i int) float64 { return float64(chain[i]) }, 1e-9)
		// What the kernel applies is quantised to 2^-31 (after kube-proxy's
		// ten digits): within n·3e-10 of the exact shares.
		checkShares(t, w, total, func(i int) float64 { return chain[i].Effective() }, float64(len(w))*3e-10)
	}
}

func checkShares(t *testing.T, w []uint32, total float64, p func(int) float64, tol float64) {
	t.Helper()
	notYet := 1.0
	for i, x := range w {
		taken := 1.0
		if i < len(w)-1 {
			taken = p(i)
		}
		share := notYet * taken
		if want := float64(x) / total; math.Abs(share-want) > tol {
			t.Errorf("weights %v: endpoint %d share %.12f, want %.12f", w, i, share, want)
		}
		notYet *= 1 - taken
	}
}

func TestProbabilityChainRejects(t *testing.T) {
	if _, err := ProbabilityChain(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty: %v", err)
	}
	if _, err := ProbabilityChain([]uint32{1, 0, 2}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero weight: %v", err)
	}
}
