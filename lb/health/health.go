package health

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
)

// State is the health of a target as the checker sees it.
type State uint8

// The states a target can be in. A target starts in the State its
// Target.Initial names (StateUnknown unless set).
const (
	// StateUnknown means no check has decided yet. The first result moves
	// the target out of it: one success makes it up, one failure down.
	StateUnknown State = iota
	// StateUp means the target passed Rise consecutive checks (or the
	// first check from StateUnknown) and has not failed Fall in a row since.
	StateUp
	// StateDown means the target failed Fall consecutive checks (or the
	// first check from StateUnknown) and has not passed Rise in a row since.
	StateDown
)

// String returns "unknown", "up" or "down".
func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

func (s State) valid() bool { return s <= StateDown }

// Defaults used for the zero value of the corresponding Target field. They
// follow HAProxy's defaults (inter 2s, rise 2, fall 3).
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = time.Second
	DefaultRise     = 2
	DefaultFall     = 3
)

// MinInterval is the shortest Interval a Target may ask for.
const MinInterval = time.Millisecond

// Target is one thing to check, and how often and how strictly.
//
// The zero value of every field except ID and Check means "use the
// default". Targets are plain values: the checker copies them.
type Target struct {
	// ID names the target; it is unique within a Checker and is how
	// Update, Remove, Status and transitions refer to it.
	ID string
	// Check is the probe to run: TCP, HTTP, UDP or Func.
	Check Check
	// Interval is the mean time between the starts of two checks
	// (default DefaultInterval, at least MinInterval). A check never
	// overlaps the previous check of the same target: when a check runs
	// longer than Interval the next one starts when it ends.
	Interval time.Duration
	// Timeout bounds one check (default the smaller of DefaultTimeout and
	// Interval), counted from when a worker starts it. A check that has not
	// succeeded by then fails with ErrTimeout, even if it reports success
	// afterwards.
	Timeout time.Duration
	// Rise is how many consecutive successes move a down target up
	// (default DefaultRise).
	Rise int
	// Fall is how many consecutive failures move an up target down
	// (default DefaultFall).
	Fall int
	// Initial is the state the target starts in. StateUnknown (the zero
	// value) lets the first check decide; StateUp assumes the target is
	// serving until Fall checks fail; StateDown keeps it out until Rise
	// checks pass.
	Initial State
	// Jitter spreads later checks: each delay after the first check is
	// Interval scaled by a random factor in [1-Jitter, 1+Jitter), so that
	// targets added together drift apart instead of staying in step. It
	// must be in [0, 1); zero keeps the period exact. Independently of
	// Jitter, the first check of every target runs at a random moment
	// within its first Interval, which is what spreads 10k targets added
	// at once evenly over the interval.
	Jitter float64
}

// normalize returns t with defaults filled in, or a *ValidationError.
func (t Target) normalize() (Target, error) {
	bad := func(field, reason string) (Target, error) {
		return Target{}, &ValidationError{ID: t.ID, Field: field, Reason: reason}
	}
	if t.ID == "" {
		return bad("ID", "must not be empty")
	}
	if t.Check == nil {
		return bad("Check", "must be set")
	}
	if v := reflect.ValueOf(t.Check); v.Kind() == reflect.Pointer && v.IsNil() {
		return bad("Check", fmt.Sprintf("is a nil %T", t.Check))
	}
	// Validated as given (cloning normalizes a status set, which could
	// merge a reversed range away), then copied for the Checker to keep.
	if err := t.Check.validate(); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.ID = t.ID
			ve.Field = strings.TrimSuffix("Check."+ve.Field, ".")
		}
		return Target{}, err
	}
	t.Check = t.Check.clone()
	switch {
	case t.Interval == 0:
		t.Interval = DefaultInterval
	case t.Interval < MinInterval:
		return bad("Interval", fmt.Sprintf("%v is shorter than %v", t.Interval, MinInterval))
	}
	switch {
	case t.Timeout == 0:
		t.Timeout = min(DefaultTimeout, t.Interval)
	case t.Timeout < 0:
		return bad("Timeout", "must not be negative")
	}
	switch {
	case t.Rise == 0:
		t.Rise = DefaultRise
	case t.Rise < 0:
		return bad("Rise", "must not be negative")
	}
	switch {
	case t.Fall == 0:
		t.Fall = DefaultFall
	case t.Fall < 0:
		return bad("Fall", "must not be negative")
	}
	if !t.Initial.valid() {
		return bad("Initial", fmt.Sprintf("unknown state %d", t.Initial))
	}
	if math.IsNaN(t.Jitter) || t.Jitter < 0 || t.Jitter >= 1 {
		return bad("Jitter", fmt.Sprintf("%v is not in [0, 1)", t.Jitter))
	}
	return t, nil
}

// Validate reports whether t is acceptable to a Checker, as a
// *ValidationError naming the offending field.
func (t Target) Validate() error {
	_, err := t.normalize()
	return err
}

// Transition reports that a target changed state.
type Transition struct {
	// ID is the target's ID.
	ID string
	// From and To are the states before and after.
	From, To State
	// Reason says why, in words: the error of the deciding check when To
	// is StateDown, how many checks passed when it is StateUp.
	Reason string
	// Err is the error of the check that decided a move to StateDown (nil
	// for StateUp). Test it with errors.Is against ErrTimeout,
	// ErrPortUnreachable, syscall.ECONNREFUSED and friends, or errors.As
	// against *StatusError.
	Err error
	// Latency is how long the deciding check took.
	Latency time.Duration
	// At is when the deciding check finished, on the checker's clock.
	At time.Time
}

// String formats t as "id: from -> to (reason)".
func (t Transition) String() string {
	return fmt.Sprintf("%s: %s -> %s (%s)", t.ID, t.From, t.To, t.Reason)
}

// Status is a target's health at one moment, as Snapshot returns it.
type Status struct {
	// ID is the target's ID.
	ID string
	// State is the current state.
	State State
	// Since is when State was entered (when the target was added, for the
	// initial state).
	Since time.Time
	// Checks counts the checks completed since the target was added.
	Checks uint64
	// Successes and Failures count the consecutive passing or failing
	// checks that ended with the last one; at most one of them is
	// non-zero.
	Successes, Failures int
	// LastCheck is when the last check finished (zero before the first).
	LastCheck time.Time
	// LastLatency is how long the last check took.
	LastLatency time.Duration
	// LastStartDelay is how long after it was due the last check started
	// to run on a worker: time spent waiting for the scheduler, for a free
	// worker (Options.MaxConcurrent) and for the CPU. Measured on the
	// Checker's clock.
	LastStartDelay time.Duration
	// LastErr is the last check's error, nil when it passed.
	LastErr error
}

// Stats describes the checker's own load.
type Stats struct {
	// Targets is how many targets are registered.
	Targets int
	// InFlight is how many checks are running now or waiting for a free
	// worker (taken from the schedule, not finished).
	InFlight int
	// Workers is how many worker goroutines exist. They are started while
	// due checks wait for one, up to Options.MaxConcurrent, and exit after
	// five seconds without work.
	Workers int
	// Checks counts checks completed since Run started.
	Checks uint64
	// Late counts the checks, completed since Run started, that a worker
	// started more than a tenth of their Interval (and more than a
	// millisecond) after they were due: because MaxConcurrent checks were
	// already running, or because the process was short of CPU.
	Late uint64
	// StartDelay is the sum, over the checks counted in Checks, of how
	// late each started (see Status.LastStartDelay), so that the change in
	// StartDelay over the change in Checks is the mean delay over any
	// period.
	StartDelay time.Duration
	// Transitions counts the state transitions since Run started.
	Transitions uint64
	// Coalesced counts the transitions that were not delivered on their
	// own (see Options.OnTransition): merged into a later transition of
	// the same target, not reported because the target went back to the
	// state last delivered, or discarded with a removed target. While Run
	// runs, Transitions - Coalesced transitions are delivered in the end.
	Coalesced uint64
}

// Errors returned by the Checker. Compare with errors.Is.
var (
	// ErrNotFound: no target has the given ID.
	ErrNotFound = errors.New("health: target not found")
	// ErrExists: Add was given an ID that is already registered.
	ErrExists = errors.New("health: target already exists")
	// ErrClosed: the Checker's Run has returned; it takes no more targets
	// and cannot be run again.
	ErrClosed = errors.New("health: checker closed")
	// ErrRunning: Run was called while it is already running.
	ErrRunning = errors.New("health: checker already running")
)

// Errors that checks fail with, wrapped with detail. Compare with errors.Is.
var (
	// ErrTimeout: the check did not complete within Target.Timeout.
	ErrTimeout = errors.New("health: check timed out")
	// ErrPortUnreachable: a UDP check got an ICMP port-unreachable (or
	// ICMPv6 equivalent) back, so nothing listens on the port. The error
	// also matches syscall.ECONNREFUSED.
	ErrPortUnreachable = errors.New("health: port unreachable")
	// ErrUnexpectedReply: a UDP check got a reply its matcher rejected.
	ErrUnexpectedReply = errors.New("health: unexpected reply")
)

// ErrInvalid is matched (errors.Is) by every *ValidationError.
var ErrInvalid = errors.New("health: invalid target")

// ValidationError says which field of a Target (or of its Check) is not
// acceptable and why. Nothing is applied when one is returned.
type ValidationError struct {
	// ID is the target's ID (empty when the ID itself is the problem).
	ID string
	// Field is the field path within Target, such as "Interval" or
	// "Check.Addr".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error says which target and field are wrong, and why.
func (e *ValidationError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("health: invalid target: %s %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("health: invalid target %q: %s %s", e.ID, e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) hold for every *ValidationError.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }
