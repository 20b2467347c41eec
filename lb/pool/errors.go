package pool

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Sentinel errors. Errors returned by this package wrap or match one of them,
// so callers can test with errors.Is.
var (
	// ErrInvalid matches every *ValidationError: the configuration or the
	// request itself is malformed, and nothing was changed.
	ErrInvalid = errors.New("invalid input")

	// ErrPoolExhausted means no eligible pool has a free (or shareable)
	// address of the needed family.
	ErrPoolExhausted = errors.New("no free address")

	// ErrNotInPool means a requested or restored address is in no pool, is
	// in a different pool than requested or than the service's other
	// address (one assignment's addresses come from one pool), or is
	// excluded by avoidBuggyIPs.
	ErrNotInPool = errors.New("address not in any eligible pool")

	// ErrUnknownPool means a request named a pool that is not configured.
	ErrUnknownPool = errors.New("unknown pool")

	// ErrAddressInUse matches every *SharingError: the address is held by
	// another service and the sharing rules forbid using it too.
	ErrAddressInUse = errors.New("address in use")
)

// ValidationError reports malformed input: a pool configuration, a range or
// a request. It matches ErrInvalid.
//
// Unlike lb's *ValidationError, which lists every problem of a Service, it
// reports the first problem found, with its field path: pool inputs are
// small (one request, one pool list), each call checks one of them, and
// nothing is applied when it fails, so fixing and retrying is cheap.
// Callers that handle both packages' errors can test errors.Is(err,
// lb.ErrInvalid) or errors.Is(err, pool.ErrInvalid); the two sentinels are
// distinct.
type ValidationError struct {
	// Field is the path of the offending field, e.g. "pools[1].ranges[0]",
	// "request.ports[2]" or "range".
	Field string
	// Value is the offending value as text.
	Value string
	// Reason says what is wrong with it.
	Reason string
}

// Error formats the error as "pool: invalid <field> <value>: <reason>".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("pool: invalid ")
	if e.Field != "" {
		b.WriteString(e.Field)
	} else {
		b.WriteString("input")
	}
	if e.Value != "" {
		b.WriteString(" ")
		b.WriteString(quote(e.Value))
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// AllocationError reports why a service could not get (or keep) an address.
// Err is ErrPoolExhausted, ErrNotInPool, ErrUnknownPool or a *SharingError;
// use errors.Is / errors.As on the AllocationError itself.
type AllocationError struct {
	// Service is the service the request was for.
	Service string
	// Pool is the pool involved, when one is known.
	Pool string
	// Family is the address family that could not be served, when the
	// failure is about a family (exhaustion); zero otherwise.
	Family Family
	// IP is the requested or restored address involved, when there is one.
	IP netip.Addr
	// Detail is a human-readable explanation.
	Detail string
	// Err is the cause.
	Err error
}

// Error formats the service, the address, pool and family involved, the
// cause and the detail.
func (e *AllocationError) Error() string {
	var b strings.Builder
	b.WriteString("pool: service ")
	b.WriteString(quote(e.Service))
	if e.IP.IsValid() {
		b.WriteString(": ")
		b.WriteString(e.IP.String())
	}
	if e.Pool != "" {
		b.WriteString(": pool ")
		b.WriteString(quote(e.Pool))
	}
	if e.Family != 0 {
		b.WriteString(": ")
		b.WriteString(e.Family.String())
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *AllocationError) Unwrap() error { return e.Err }

// SharingRule names one of the rules that decide whether a service may use
// an address another service already holds. They are checked in the order
// the constants are declared; the first one that fails is reported.
type SharingRule string

const (
	// RuleHolderNotShared: the service holding the address has no sharing
	// key, so it does not share.
	RuleHolderNotShared SharingRule = "holder-not-shared"
	// RuleRequesterNotShared: the requesting service has no sharing key.
	RuleRequesterNotShared SharingRule = "requester-not-shared"
	// RuleKeyMismatch: both have sharing keys, but different ones.
	RuleKeyMismatch SharingRule = "key-mismatch"
	// RuleTrafficPolicy: one service uses traffic policy Cluster and the
	// other Local. Cluster services share freely among themselves; a Local
	// service attracts traffic only where its endpoints run, so it can only
	// share with Local services that have the same endpoints.
	RuleTrafficPolicy SharingRule = "traffic-policy"
	// RuleEndpointsSelector: both use traffic policy Local but their
	// endpoints selector identities differ (or are empty, which never
	// matches: a deliberate difference from MetalLB, see the package doc).
	RuleEndpointsSelector SharingRule = "endpoints-selector"
	// RulePortCollision: both services use the same protocol and port.
	RulePortCollision SharingRule = "port-collision"
)

// SharingError reports that a service may not use an address because of
// the sharing rules. It matches ErrAddressInUse.
type SharingError struct {
	// IP is the contested address.
	IP netip.Addr
	// Rule is the first rule that blocked the sharing.
	Rule SharingRule
	// Holder is the service already using IP that the rule was checked
	// against.
	Holder string
	// Port is the colliding port, for RulePortCollision.
	Port Port
	// Have and Want are the holder's and the requester's values for the
	// rule (sharing keys, traffic policies or selectors); empty for rules
	// where that is not meaningful.
	Have, Want string
}

// Error names the address, the holder, the rule and the values that clashed.
func (e *SharingError) Error() string {
	var b strings.Builder
	b.WriteString("pool: ")
	if e.IP.IsValid() {
		b.WriteString(e.IP.String())
	} else {
		b.WriteString("the address")
	}
	b.WriteString(" is held by ")
	b.WriteString(quote(e.Holder))
	b.WriteString(" and cannot be shared (rule ")
	b.WriteString(string(e.Rule))
	b.WriteString("): ")
	switch e.Rule {
	case RuleHolderNotShared:
		b.WriteString("the holder has no sharing key")
	case RuleRequesterNotShared:
		b.WriteString("the requesting service has no sharing key")
	case RuleKeyMismatch:
		b.WriteString("sharing key " + quote(e.Want) + " differs from " + quote(e.Have))
	case RuleTrafficPolicy:
		b.WriteString("traffic policy " + e.Want + " cannot share with " + e.Have)
	case RuleEndpointsSelector:
		if e.Have == "" || e.Want == "" {
			b.WriteString("traffic policy Local needs a non-empty endpoints selector on both services to share")
		} else {
			b.WriteString("endpoints selector " + quote(e.Want) + " differs from " + quote(e.Have))
		}
	case RulePortCollision:
		b.WriteString("port " + e.Port.String() + " is already used")
	}
	return b.String()
}

// Is reports whether target is ErrAddressInUse.
func (e *SharingError) Is(target error) bool { return target == ErrAddressInUse }

func quote(s string) string { return strconv.Quote(s) }
