package nettest

import (
	"fmt"
	"math"
	"sort"
)

// ChiSquareResult is the outcome of a chi-square goodness-of-fit test.
type ChiSquareResult struct {
	Stat float64 // the chi-square statistic
	DF   int     // degrees of freedom: categories - 1
	P    float64 // probability of a statistic at least this large by chance
}

// ChiSquare tests observed counts per backend against the shares the
// weights predict (a backend's expected share is its weight over the sum of
// weights). A test accepts the distribution when P is above its
// significance level, e.g. 0.01. A count for a backend that has no weight,
// or a weight that is not positive, is an error: traffic went where it must
// not.
func ChiSquare(observed map[string]int, weights map[string]float64) (ChiSquareResult, error) {
	if len(weights) < 2 {
		return ChiSquareResult{}, fmt.Errorf("nettest: chi-square needs at least two categories, got %d", len(weights))
	}
	total, sumW := 0, 0.0
	for name, n := range observed {
		if _, ok := weights[name]; !ok && n > 0 {
			return ChiSquareResult{}, fmt.Errorf("nettest: %d observations for %q, which has no weight", n, name)
		}
		total += n
	}
	names := make([]string, 0, len(weights))
	for name, w := range weights {
		if !(w > 0) {
			return ChiSquareResult{}, fmt.Errorf("nettest: weight of %q is %v, want > 0", name, w)
		}
		sumW += w
		names = append(names, name)
	}
	if total == 0 {
		return ChiSquareResult{}, fmt.Errorf("nettest: chi-square of no observations")
	}
	sort.Strings(names) // a fixed summation order makes the result repeatable
	stat := 0.0
	for _, name := range names {
		exp := float64(total) * weights[name] / sumW
		d := float64(observed[name]) - exp
		stat += d * d / exp
	}
	df := len(names) - 1
	return ChiSquareResult{Stat: stat, DF: df, P: gammaQ(float64(df)/2, stat/2)}, nil
}

// gammaQ is the regularized upper incomplete gamma function Q(a, x), the
// chi-square survival function at 2x with 2a degrees of freedom. It uses
// the power series of P below x = a+1 and a continued fraction (modified
// Lentz) above, both accurate to about 1e-14.
func gammaQ(a, x float64) float64 {
	switch {
	case x <= 0:
		return 1
	case math.IsInf(x, 1):
		return 0
	}
	lg, _ := math.Lgamma(a)
	prefix := math.Exp(-x + a*math.Log(x) - lg)
	if x < a+1 {
		// P(a,x) = prefix * sum_{n>=0} x^n / (a (a+1) ... (a+n))
		term := 1 / a
		sum := term
		for n := 1; n < 1000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if term < sum*1e-16 {
				break
			}
		}
		return math.Max(0, 1-prefix*sum)
	}
	// Q(a,x) = prefix / (x+1-a- 1*(1-a)/(x+3-a- 2*(2-a)/(x+5-a- ...)))
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return prefix * h
}
