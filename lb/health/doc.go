// Package health actively checks the health of load-balancer backends: it
// probes each target on its own schedule and reports when a target goes up
// or down.
//
// # Checks
//
// A Target names one backend and the Check to run against it:
//
//   - TCP: the TCP three-way handshake (RFC 9293) completes. The connection
//     is then aborted with a RST so that no TIME_WAIT socket is left per
//     check.
//   - HTTP: an HTTP/1.1 request (RFC 9112) gets a status in an expected set
//     (RFC 9110 status codes, default 200-399), over TLS for HTTPS, with an
//     optional Host header and certificate verification that can be skipped.
//     Each target keeps one persistent connection between passing checks.
//   - UDP: a datagram (RFC 768) gets a reply that a matcher accepts. An ICMP
//     port unreachable (RFC 792, RFC 4443) fails the check at once with
//     ErrPortUnreachable.
//   - Func: any function of a context.
//
// # State machine
//
// Every target has an Interval, a Timeout, Rise and Fall thresholds and an
// Initial state (StateUnknown, StateUp or StateDown). From StateUnknown the
// first result decides; afterwards Rise consecutive successes move a down
// target up and Fall consecutive failures move an up target down, as in
// HAProxy's rise/fall. Each change is delivered as a Transition (states,
// reason, error, latency) to a callback or a channel, in order, and
// Snapshot returns every target's current Status.
//
// # Scheduling
//
// A Checker does not start a goroutine or a timer per target. One scheduler
// goroutine keeps the targets in a heap ordered by due time and hands due
// checks to a pool of workers that grows on demand up to
// Options.MaxConcurrent; a target between checks costs a heap slot and its
// settings. The first check of each target runs at a uniformly random moment
// within its first Interval, and Target.Jitter randomizes later intervals,
// so that 10k targets added at once are spread over the interval instead of
// firing together. A target never has two checks in flight.
//
// Run(ctx) runs the checks until ctx is done, then cancels running checks,
// waits for every goroutine it started and closes every connection; Add,
// Update, Remove and Sync change the targets at any time.
package health
