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
//     ErrPortUnreachable; targets rate-limit those (Linux: about one a
//     second per peer), so beyond loopback a closed port often fails only
//     at the timeout.
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
// Snapshot returns every target's current Status. A receiver that falls
// behind does not make the checker queue without bound: at most one
// transition per target waits, later changes of the same target are
// coalesced into it (Options.OnTransition says how) and counted in
// Stats.Coalesced.
//
// # Scheduling
//
// A Checker does not start a goroutine or a timer per target. One scheduler
// goroutine keeps the targets in a heap ordered by due time and hands due
// checks to a pool of worker goroutines. The pool starts empty and adds a
// worker only when a due check has found none free for a millisecond, up to
// Options.MaxConcurrent, and workers idle for five seconds exit: checks that
// complete quickly run on a handful of workers, checks that hang until their
// timeout get one each (at up to one new worker a millisecond, also when the
// process is busy with other work). How late each check started is reported
// in Status.LastStartDelay, Stats.StartDelay and Stats.Late. A target between checks costs a heap slot and its
// settings. The first check of each target runs at a uniformly random moment
// within its first Interval, and Target.Jitter randomizes later intervals,
// so that 10k targets added at once are spread over the interval instead of
// firing together. A target never has two checks in flight. Scheduling reads
// an injectable Clock, so tests can step through schedules without sleeping.
//
// # Connections
//
// TCP checks abort their connection with a RST once the handshake is done,
// so the checker keeps no TIME_WAIT socket per check (TCP.Graceful closes
// with a FIN instead). HTTP and HTTPS targets reuse one persistent
// connection between passing checks, because a connection per check at 10k
// checks a second costs as many handshakes (TLS handshakes for HTTPS) and
// TIME_WAIT sockets; the connection is held without a goroutine, dropped
// after any failure so that a recovery is proven on a new connection, and
// closed when the target is removed or the checker stops (HTTP.DisableKeepAlive
// opens one per check instead). UDP checks use a new connected socket per
// check, so that a late reply to an earlier check is never taken for this
// one and ICMP errors reach the check.
//
// # Lifecycle
//
// Run(ctx) runs the checks until ctx is done, then cancels running checks,
// waits for every goroutine it started and closes every connection; Add,
// Update, Remove and Sync change the targets at any time, before or during
// Run. Checks are ordinary sockets: no root is needed.
//
// # Errors
//
// A target that cannot be checked as described is refused with a
// *ValidationError matching ErrInvalid; ParseStatusSet's errors match
// ErrStatusSet. Add, Update and Remove report ErrExists, ErrNotFound and
// ErrClosed; Run while another Run runs, ErrRunning. A failed
// check's error, in a Transition's Err, matches ErrTimeout,
// ErrPortUnreachable or ErrUnexpectedReply where one of those is the
// cause; an HTTP answer with a status outside the set is a *StatusError.
package health
