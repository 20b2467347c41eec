package health

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// StatusRange is an inclusive range of HTTP status codes (RFC 9110,
// section 15); Lo == Hi for a single code.
type StatusRange struct {
	Lo, Hi int
}

// StatusSet is a set of HTTP status codes that an HTTP check accepts, as
// inclusive ranges. The nil set means the default, 200-399: the success and
// redirection classes, as Kubernetes' HTTP probes and HAProxy's http-check
// accept. An empty non-nil set would accept nothing, so that a target could
// never go up: validation rejects it.
type StatusSet []StatusRange

// defaultStatusSet is what the nil StatusSet stands for. Never modified.
var defaultStatusSet = StatusSet{{200, 399}}

// ErrStatusSet is wrapped by ParseStatusSet's errors.
var ErrStatusSet = errors.New("health: invalid status set")

// Statuses returns the set of exactly the given codes. It takes at least
// one code, because a set of none would accept no response; codes outside
// 100..599 are rejected when the check is validated.
func Statuses(code int, more ...int) StatusSet {
	s := make(StatusSet, 0, 1+len(more))
	s = append(s, StatusRange{code, code})
	for _, c := range more {
		s = append(s, StatusRange{c, c})
	}
	return s.normalize()
}

// ParseStatusSet parses a comma-separated list of codes and inclusive
// ranges, such as "200", "200-299,304" or "200 - 204, 301". Every code
// must be in 100..599. The result is sorted with overlapping and adjacent
// ranges merged, so that its String is canonical.
func ParseStatusSet(s string) (StatusSet, error) {
	bad := func(reason string) (StatusSet, error) {
		return nil, fmt.Errorf("%w %q: %s", ErrStatusSet, s, reason)
	}
	if strings.TrimSpace(s) == "" {
		return bad("empty")
	}
	var set StatusSet
	for item := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(item, "-")
		a, err := parseCode(lo)
		if err != nil {
			return bad(err.Error())
		}
		b := a
		if isRange {
			if b, err = parseCode(hi); err != nil {
				return bad(err.Error())
			}
		}
		if a > b {
			return bad(fmt.Sprintf("range %d-%d is reversed", a, b))
		}
		set = append(set, StatusRange{a, b})
	}
	return set.normalize(), nil
}

func parseCode(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 3 {
		return 0, fmt.Errorf("%q is not a three-digit status code", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("%q is not a three-digit status code", s)
	}
	if n < 100 || n > 599 {
		return 0, fmt.Errorf("%d is outside 100..599", n)
	}
	return n, nil
}

// validate checks that s is nil or holds well-formed ranges.
func (s StatusSet) validate() error {
	if s != nil && len(s) == 0 {
		return &ValidationError{Field: "Expect", Reason: "is empty, so no response could pass (nil means the default 200-399)"}
	}
	for _, r := range s {
		if r.Lo < 100 || r.Hi > 599 || r.Lo > r.Hi {
			return &ValidationError{Field: "Expect", Reason: fmt.Sprintf("range %d-%d is not within 100..599 in order", r.Lo, r.Hi)}
		}
	}
	return nil
}

// normalize sorts s and merges overlapping and adjacent ranges. It does
// not modify s.
func (s StatusSet) normalize() StatusSet {
	if len(s) == 0 {
		return s
	}
	out := slices.Clone(s)
	slices.SortFunc(out, func(a, b StatusRange) int { return a.Lo - b.Lo })
	n := 0
	for _, r := range out[1:] {
		if r.Lo <= out[n].Hi+1 {
			out[n].Hi = max(out[n].Hi, r.Hi)
			continue
		}
		n++
		out[n] = r
	}
	return out[:n+1]
}

// Contains reports whether code is in s. The nil set is 200-399.
func (s StatusSet) Contains(code int) bool {
	if s == nil {
		s = defaultStatusSet
	}
	for _, r := range s {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// String formats s as ParseStatusSet reads it ("200-299,304"). The nil set
// formats as the default set it stands for.
func (s StatusSet) String() string {
	if s == nil {
		s = defaultStatusSet
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(r.Lo))
		if r.Hi != r.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(r.Hi))
		}
	}
	return b.String()
}

// StatusError is the error of an HTTP check whose response status is not
// in the expected set.
type StatusError struct {
	// Code is the status code the target answered with.
	Code int
	// Expect is the set it had to be in.
	Expect StatusSet
}

// Error gives the status received and the set expected.
func (e *StatusError) Error() string {
	return fmt.Sprintf("health: HTTP status %d not in %s", e.Code, e.Expect)
}
