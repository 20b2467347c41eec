package lb

import (
	"fmt"
	"math"
	"strconv"
)

// Probability is one step of an iptables "statistic --mode random" chain:
// the probability that a rule matches, given that no earlier rule of the
// chain matched.
//
// How kube-proxy's numbers come about: kube-proxy computes 1/n as a float64
// and writes it with "%0.10f" (1/3 → "0.3333333333") into iptables-restore.
// iptables (libxt_statistic) stores lround(p × 2^31) in the rule
// (0.3333333333 × 2^31 = 715827882.6 → 715827883), the kernel matches when
// (random & 0x7FFFFFFF) < that value, and iptables-save prints value / 2^31
// with "%.11f" → "0.33333333349". That is why a kube-proxy node shows
// 0.33333333349 rather than 0.33333333333: the 11th digit comes from the
// kernel's 31-bit fixed point, not from the formatting.
type Probability float64

// String returns p as iptables-save prints it on a kube-proxy node: the
// value kube-proxy writes ("%0.10f"), stored in the kernel's 31-bit fixed
// point, printed with "%.11f". Writing this string into iptables-restore
// stores the same kernel value again, so rendered rules compare equal to
// iptables-save output.
func (p Probability) String() string {
	return strconv.FormatFloat(float64(p.Fixed())/(1<<31), 'f', 11, 64)
}

// KubeProxyString returns p as kube-proxy writes it into iptables-restore:
// "%0.10f".
func (p Probability) KubeProxyString() string {
	return strconv.FormatFloat(float64(p), 'f', 10, 64)
}

// Fixed returns the value the kernel's xt_statistic match stores for p: the
// kube-proxy string parsed back and scaled to 31 bits with C's lround
// (halves away from zero). The kernel takes the rule when
// (random & 0x7FFFFFFF) < Fixed.
func (p Probability) Fixed() uint32 {
	v, err := strconv.ParseFloat(p.KubeProxyString(), 64)
	if err != nil || v <= 0 {
		return 0
	}
	return uint32(math.Round(v * (1 << 31)))
}

// Effective returns the probability the kernel really applies,
// Fixed / 2^31.
func (p Probability) Effective() float64 { return float64(p.Fixed()) / (1 << 31) }

// ProbabilityChain returns the conditional probabilities of an iptables
// statistic chain that spreads new connections over endpoints in proportion
// to weights: endpoint i is taken with p_i = w_i / (w_i + ... + w_n-1),
// given that no earlier one was, so that its overall share is w_i / sum.
// The chain has len(weights)-1 entries: the last endpoint's rule is
// unconditional. With equal weights p_i = 1/(n-i), exactly kube-proxy's
// numbers (three endpoints: 0.33333333349, 0.50000000000).
//
// Every weight must be at least 1 (use Target.Weight or
// Endpoint.EffectiveWeight); an empty list or a zero weight is an error
// matching ErrInvalid.
func ProbabilityChain(weights []uint32) ([]Probability, error) {
	if len(weights) == 0 {
		return nil, fmt.Errorf("lb: probability chain of no endpoints: %w", ErrInvalid)
	}
	var rest uint64
	for i, w := range weights {
		if w == 0 {
			return nil, fmt.Errorf("lb: probability chain: weight %d is 0: %w", i, ErrInvalid)
		}
		rest += uint64(w)
	}
	out := make([]Probability, 0, len(weights)-1)
	for _, w := range weights[:len(weights)-1] {
		// float64 division is correctly rounded, so equal weights give
		// exactly kube-proxy's 1.0/float64(n).
		out = append(out, Probability(float64(w)/float64(rest)))
		rest -= uint64(w)
	}
	return out, nil
}
