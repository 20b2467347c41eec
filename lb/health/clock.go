package health

import "time"

// Clock is the time source the Checker schedules checks with. The default
// is the system clock; tests inject a controllable one to step through
// schedules without sleeping. The clock only decides when checks start and
// stamps Status and Transition times: Target.Timeout and Latency are always
// measured on the system's monotonic clock, because the network I/O they
// bound runs in real time.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, like
	// time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the handle AfterFunc returns; *time.Timer implements it.
type Timer interface {
	// Stop prevents the call if it has not happened yet, reporting
	// whether it did.
	Stop() bool
	// Reset arranges for the call to happen after d (again).
	Reset(d time.Duration) bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
