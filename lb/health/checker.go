package health

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConcurrent is the default bound on checks running at once.
const DefaultMaxConcurrent = 1024

// batchWindow is how far ahead of its due time a check may be started
// when the scheduler is awake anyway. Starting everything due within the
// next millisecond in one pass bounds the scheduler to about a thousand
// wake-ups a second however many targets there are.
const batchWindow = time.Millisecond

// Options configures a Checker. The zero value is usable.
type Options struct {
	// OnTransition, when set, is called for the state transitions, in
	// the order they happened, from a single goroutine (never
	// concurrently). A slow callback delays later deliveries, not checks.
	//
	// Transitions wait for delivery in a queue that holds at most one per
	// target: when a target changes state again before its previous
	// transition was delivered (the receiver is slow or not reading), the
	// two are coalesced into one that goes From the first's state To the
	// second's, with the second's Reason, Err, Latency and At, in the first
	// one's place in the queue. A target that went back to the state last
	// delivered for it is then not reported at all. So the memory held is
	// bounded by the number of targets however far behind the receiver is,
	// each target's deliveries chain (each From is the previous To), and
	// the last transition delivered for a target names its current state.
	// Stats.Coalesced counts the transitions not delivered on their own;
	// a receiver that needs every intermediate state must keep up, and one
	// that only needs current states can always resync from Snapshot.
	OnTransition func(Transition)
	// Transitions, when set, receives the state transitions, in order and
	// coalesced as described for OnTransition, after OnTransition has been
	// called for each. Sends block (delaying later deliveries, never
	// checks) until the receiver takes them or Run's context is done.
	//
	// Delivery stops when Run's context is done; transitions not yet
	// delivered then are dropped (Snapshot still tells the final states),
	// and so are those of a target removed before they were delivered.
	// Transitions is never closed by the Checker.
	Transitions chan<- Transition
	// MaxConcurrent bounds how many checks run at once, and so how many
	// worker goroutines exist (default DefaultMaxConcurrent). Workers are
	// started only when needed. When checks mostly time out, keeping every
	// target on schedule takes about targets × Timeout / Interval workers;
	// below that, checks start late (see Stats.Late and StartDelay) but
	// never pile up.
	MaxConcurrent int
	// Clock, when set, replaces the system clock for scheduling.
	Clock Clock
	// Logger, when set, receives debug records of transitions and
	// warnings when checks run late. The Checker is silent without one.
	Logger *slog.Logger
}

// Checker runs health checks against a changing set of targets.
//
// Checks are scheduled from one timer heap by one goroutine and run by a
// pool of worker goroutines that grows on demand up to
// Options.MaxConcurrent; an idle target costs a heap slot and its settings,
// not a goroutine or a timer. Targets may be added, updated and removed
// before and while Run runs. All methods are safe for concurrent use.
type Checker struct {
	clock  Clock
	log    *slog.Logger
	max    int
	notify bool
	onTr   func(Transition)
	trCh   chan<- Transition
	sh     shared

	wake   chan struct{}  // to the scheduler: the heap or inflight changed
	evWake chan struct{}  // to the notifier: events is not empty
	wg     sync.WaitGroup // the notifier

	mu        sync.Mutex
	state     runState
	pool      *pool // while running
	targets   map[string]*entry
	queue     dueHeap
	rng       *rand.Rand
	inflight  int
	checks    uint64
	late      uint64
	delay     time.Duration // sum of start delays
	changes   uint64
	coalesced uint64
	events    trQueue // transitions to deliver, at most one per target
}

type runState uint8

const (
	notStarted runState = iota
	running
	closed
)

// entry is one target's settings and state. All fields but the atomics are
// guarded by Checker.mu.
type entry struct {
	t   Target // normalized
	p   prober // current prober
	idx int    // index in the heap, -1 when not queued
	due time.Time

	running bool
	inUse   prober // the prober of the running check
	removed bool

	// Remove sets aborted and calls stop, the running probe's cancel,
	// which the worker publishes while the probe runs. Between them they
	// cancel a check whichever of Remove and the worker comes first.
	aborted atomic.Bool
	stop    atomic.Pointer[context.CancelFunc]

	st Status
}

// job is one check handed to a worker.
type job struct {
	e       *entry
	p       prober
	timeout time.Duration
	due     time.Time // when it was due, on the Checker's clock
	start   time.Time // when it left the heap, on the Checker's clock
}

// New returns a Checker configured by opts. It checks nothing until Run is
// called.
func New(opts Options) *Checker {
	c := &Checker{
		clock:   opts.Clock,
		log:     opts.Logger,
		max:     opts.MaxConcurrent,
		onTr:    opts.OnTransition,
		trCh:    opts.Transitions,
		wake:    make(chan struct{}, 1),
		evWake:  make(chan struct{}, 1),
		targets: make(map[string]*entry),
		rng:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		events:  trQueue{byID: make(map[string]*pendingTr)},
	}
	if c.clock == nil {
		c.clock = systemClock{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.max <= 0 {
		c.max = DefaultMaxConcurrent
	}
	c.notify = c.onTr != nil || c.trCh != nil
	return c
}

// Add registers a target. Its first check runs at a random moment within
// its first Interval after Run starts (or after Add, if Run is running).
// It returns a *ValidationError for a bad target, an error wrapping
// ErrExists when the ID is taken, and ErrClosed after Run has returned.
func (c *Checker) Add(t Target) error {
	nt, err := t.normalize()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == closed {
		return ErrClosed
	}
	if _, ok := c.targets[nt.ID]; ok {
		return fmt.Errorf("%w: %q", ErrExists, nt.ID)
	}
	c.addLocked(nt)
	c.poke()
	return nil
}

// Update replaces the settings of the target with t's ID. The target keeps
// its state and its consecutive-result counts (Initial is ignored); a
// check already running finishes and counts, and later checks use the new
// settings. If the next check was due later than the new settings could
// have scheduled it (one Interval from now, stretched by Jitter), it is
// moved to a random moment within the new Interval. When the check itself
// is the same (see Check for how checks are compared), the target keeps
// its probe state, such as an HTTP target's open connection, even if the
// schedule changes; an Update that changes nothing changes nothing. It
// returns a *ValidationError, an error wrapping ErrNotFound, or ErrClosed.
func (c *Checker) Update(t Target) error {
	nt, err := t.normalize()
	if err != nil {
		return err
	}
	return c.change(nt.ID, func(e *entry) prober { return c.updateLocked(e, nt) })
}

// Remove unregisters the target with the given ID. A check of it that is
// running is cancelled and its result discarded; its connections are
// closed. It returns an error wrapping ErrNotFound, or ErrClosed.
func (c *Checker) Remove(id string) error {
	return c.change(id, c.removeLocked)
}

// change applies f to the entry with the given ID under the lock, then
// closes the prober f returns.
func (c *Checker) change(id string, f func(*entry) prober) error {
	unused, err := c.changeLocked(id, f)
	if err != nil {
		return err
	}
	closeProber(unused)
	c.poke()
	return nil
}

func (c *Checker) changeLocked(id string, f func(*entry) prober) (prober, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == closed {
		return nil, ErrClosed
	}
	e, ok := c.targets[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return f(e), nil
}

// Sync makes the registered targets exactly targets, in one step: targets
// with new IDs are added, those whose ID is no longer listed are removed,
// and the others are updated as Update does. All targets are validated
// first; on a *ValidationError (including a duplicate ID) nothing changes.
// It returns ErrClosed after Run has returned.
func (c *Checker) Sync(targets []Target) error {
	want := make(map[string]Target, len(targets))
	for _, t := range targets {
		nt, err := t.normalize()
		if err != nil {
			return err
		}
		if _, dup := want[nt.ID]; dup {
			return &ValidationError{ID: nt.ID, Field: "ID", Reason: "is listed twice"}
		}
		want[nt.ID] = nt
	}
	unused, err := c.syncLocked(want)
	if err != nil {
		return err
	}
	for _, p := range unused {
		closeProber(p)
	}
	c.poke()
	return nil
}

func (c *Checker) syncLocked(want map[string]Target) ([]prober, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == closed {
		return nil, ErrClosed
	}
	var unused []prober
	for id, e := range c.targets {
		if _, keep := want[id]; !keep {
			unused = append(unused, c.removeLocked(e))
		}
	}
	for id, nt := range want {
		if e, ok := c.targets[id]; ok {
			unused = append(unused, c.updateLocked(e, nt))
		} else {
			c.addLocked(nt)
		}
	}
	return unused, nil
}

// Status returns the status of the target with the given ID, or an error
// wrapping ErrNotFound.
func (c *Checker) Status(id string) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.targets[id]
	if !ok {
		return Status{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e.st, nil
}

// Snapshot returns the status of every registered target, sorted by ID.
// It keeps working after Run has returned.
func (c *Checker) Snapshot() []Status {
	c.mu.Lock()
	out := make([]Status, 0, len(c.targets))
	for _, e := range c.targets {
		out = append(out, e.st)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Stats returns counters describing the Checker's own load.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	workers := 0
	if c.pool != nil {
		workers = c.pool.workers()
	}
	return Stats{
		Targets:    len(c.targets),
		InFlight:   c.inflight,
		Workers:    workers,
		Checks:     c.checks,
		Late:       c.late,
		StartDelay: c.delay,

		Transitions: c.changes,
		Coalesced:   c.coalesced,
	}
}

// Run checks the registered targets until ctx is done, then cancels the
// running checks, waits for them and for every goroutine it started, closes
// all connections and returns nil. A Checker runs once: Run returns
// ErrRunning while another Run is running and ErrClosed after one has
// returned; Add, Update, Remove and Sync return ErrClosed from then on,
// while Status and Snapshot keep reporting the last known states.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	switch c.state {
	case running:
		c.mu.Unlock()
		return ErrRunning
	case closed:
		c.mu.Unlock()
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.state = running
	// Targets added before Run get their first check spread over their
	// first interval from now, not from when they were added.
	now := c.clock.Now()
	for _, e := range c.queue {
		e.due = c.firstDue(now, e.t.Interval)
	}
	heap.Init(&c.queue)
	c.pool = newPool(c.max, func(j job) { c.runJob(ctx, j) })
	pool := c.pool
	c.mu.Unlock()

	if c.notify {
		c.wg.Add(1)
		go c.notifier(ctx)
	}
	c.schedule(ctx, pool)
	cancel()
	pool.stop()
	c.wg.Wait()

	c.mu.Lock()
	c.state = closed
	c.pool = nil
	var ps []prober
	for _, e := range c.targets {
		ps = append(ps, e.p)
	}
	c.mu.Unlock()
	for _, p := range ps {
		closeProber(p)
	}
	return nil
}

func (c *Checker) addLocked(t Target) {
	now := c.clock.Now()
	e := &entry{
		t:   t,
		p:   t.Check.newProber(&c.sh),
		idx: -1,
		st:  Status{ID: t.ID, State: t.Initial, Since: now},
	}
	c.targets[t.ID] = e
	e.due = c.firstDue(now, t.Interval)
	heap.Push(&c.queue, e)
}

// updateLocked applies nt to e and returns the prober that nobody uses any
// more (nil if none).
func (c *Checker) updateLocked(e *entry, nt Target) prober {
	nt.Initial = e.t.Initial
	sameCheck := e.t.Check.same(nt.Check)
	e.t = nt
	// e is queued unless its check is running or Run is stopping (a check
	// that ended after Run's context was done is not queued again).
	if e.idx >= 0 {
		now := c.clock.Now()
		if e.due.After(now.Add(maxDelay(nt))) {
			e.due = c.firstDue(now, nt.Interval)
			heap.Fix(&c.queue, e.idx)
		}
	}
	if sameCheck {
		return nil
	}
	old := e.p
	e.p = nt.Check.newProber(&c.sh)
	if old == e.inUse {
		return nil // the worker running it closes it when done
	}
	return old
}

// maxDelay is the longest delay nextDue can give t.
func maxDelay(t Target) time.Duration {
	return time.Duration(float64(t.Interval) * (1 + t.Jitter))
}

// removeLocked unregisters e and returns the prober to close now (nil if
// a worker still uses it and will close it).
func (c *Checker) removeLocked(e *entry) prober {
	delete(c.targets, e.t.ID)
	if c.events.drop(e.t.ID) {
		c.coalesced++
	}
	e.removed = true
	e.aborted.Store(true)
	if e.running {
		if stop := e.stop.Load(); stop != nil {
			(*stop)()
		}
		if e.p == e.inUse {
			return nil
		}
		return e.p
	}
	if e.idx >= 0 { // not queued once Run is stopping
		heap.Remove(&c.queue, e.idx)
	}
	return e.p
}

func closeProber(p prober) {
	if p != nil {
		p.close()
	}
}

// firstDue spreads first checks uniformly over one interval.
func (c *Checker) firstDue(now time.Time, interval time.Duration) time.Time {
	return now.Add(time.Duration(c.rng.Int64N(int64(interval))))
}

// nextDue is one jittered interval after the previous check started, but
// not in the past.
func (c *Checker) nextDue(t Target, start, now time.Time) time.Time {
	d := t.Interval
	if t.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + t.Jitter*(2*c.rng.Float64()-1)))
	}
	due := start.Add(d)
	if due.Before(now) {
		return now
	}
	return due
}

func (c *Checker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// schedule is the scheduler loop: it starts every check that is due while
// fewer than max run, then sleeps until the next one is due or something
// changes.
func (c *Checker) schedule(ctx context.Context, pool *pool) {
	var (
		timer Timer
		armed time.Time // when timer fires; zero when it is not armed
		batch []job
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		now := c.clock.Now()
		if !armed.IsZero() && !now.Before(armed) {
			armed = time.Time{}
		}
		limit := now.Add(batchWindow)
		for len(c.queue) > 0 && c.inflight < c.max && !c.queue[0].due.After(limit) {
			e := heap.Pop(&c.queue).(*entry)
			batch = append(batch, c.startLocked(e, now))
		}
		// Wake when the first check left enters the batch window.
		var next time.Time
		if len(c.queue) > 0 && c.inflight < c.max {
			next = c.queue[0].due.Add(-batchWindow)
		}
		c.mu.Unlock()

		for i := range batch {
			pool.submit(batch[i])
			batch[i] = job{}
		}
		batch = batch[:0]

		if !next.IsZero() && (armed.IsZero() || next.Before(armed)) {
			d := max(next.Sub(now), 0)
			if timer == nil {
				timer = c.clock.AfterFunc(d, c.poke)
			} else {
				timer.Stop()
				timer.Reset(d)
			}
			armed = next
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
	}
}

// startLocked marks e as running and returns its job. The Timeout only
// starts when a worker runs the job (runJob), so that time spent waiting for
// a worker does not eat into it.
func (c *Checker) startLocked(e *entry, now time.Time) job {
	e.running, e.inUse = true, e.p
	c.inflight++
	return job{e: e, p: e.p, timeout: e.t.Timeout, due: e.due, start: now}
}

func (c *Checker) runJob(ctx context.Context, j job) {
	e := j.e
	// How late the check starts: waiting for the scheduler, for a worker
	// and for the CPU all count. The batch window may start it early.
	delay := max(c.clock.Now().Sub(j.due), 0)
	if e.aborted.Load() || ctx.Err() != nil {
		// Removed, or the checker is stopping, since it was taken from the
		// heap: finish discards the result, so do not probe.
		c.finish(ctx, j, result{err: context.Canceled})
		return
	}
	tctx, cancel := context.WithTimeout(ctx, j.timeout)
	e.stop.Store(&cancel)
	if e.aborted.Load() { // Remove ran before stop was published
		cancel()
	}
	t0 := time.Now()
	err := j.p.probe(tctx)
	latency := time.Since(t0)
	e.stop.Store(nil)
	// A check that ends after its Timeout fails, whatever it returned: a
	// Func that ignores ctx and then reports success was not healthy in
	// time. The socket deadline and the context's timer are separate
	// timers, so a probe may also see "i/o timeout" an instant before ctx
	// reports it.
	timedOut := latency >= j.timeout || tctx.Err() == context.DeadlineExceeded
	switch {
	case err == nil && timedOut:
		err = fmt.Errorf("%w after %v (the check passed only after %v)", ErrTimeout, j.timeout, latency)
	case err != nil && (timedOut || errors.Is(err, os.ErrDeadlineExceeded)):
		err = fmt.Errorf("%w after %v: %w", ErrTimeout, j.timeout, err)
	}
	cancel()
	c.finish(ctx, j, result{err: err, latency: latency, delay: delay})
}

// result is the outcome of one check.
type result struct {
	err     error
	latency time.Duration // how long the probe ran
	delay   time.Duration // how late it started
}

// lateAfter is the start delay beyond which a check counts as late
// (Stats.Late).
func lateAfter(interval time.Duration) time.Duration {
	return max(interval/10, time.Millisecond)
}

// finish records the result of j and queues the target's next check.
func (c *Checker) finish(ctx context.Context, j job, r result) {
	e := j.e
	var tr Transition
	changed, warn := false, false

	c.mu.Lock()
	e.running, e.inUse = false, nil
	c.inflight--
	var unused prober
	if e.removed || j.p != e.p {
		unused = j.p
	}
	if !e.removed && ctx.Err() == nil {
		now := c.clock.Now()
		c.checks++
		c.delay += r.delay
		e.st.LastStartDelay = r.delay
		if r.delay > lateAfter(e.t.Interval) {
			c.late++
			warn = c.late&(c.late-1) == 0 // 1, 2, 4, 8...: rare enough
		}
		tr, changed = e.record(r.err, r.latency, now)
		if changed {
			c.changes++
			if c.notify && c.events.push(tr) {
				c.coalesced++
			}
		}
		e.due = c.nextDue(e.t, j.start, now)
		heap.Push(&c.queue, e)
	}
	late, workers := c.late, 0
	if warn && c.pool != nil {
		workers = c.pool.workers()
	}
	c.mu.Unlock()

	closeProber(unused)
	c.poke()
	if warn {
		c.log.Warn("health checks are starting late: raise MaxConcurrent if workers has reached it, else the process is short of CPU",
			"late", late, "start_delay", r.delay, "workers", workers, "max_concurrent", c.max)
	}
	if changed {
		c.log.Debug("health transition", "id", tr.ID, "from", tr.From.String(), "to", tr.To.String(),
			"reason", tr.Reason, "latency", tr.Latency)
		if c.notify {
			select {
			case c.evWake <- struct{}{}:
			default:
			}
		}
	}
}

// record applies one check result to the target's state machine and
// reports the transition it caused, if any.
func (e *entry) record(err error, latency time.Duration, at time.Time) (Transition, bool) {
	s := &e.st
	s.Checks++
	s.LastCheck, s.LastLatency, s.LastErr = at, latency, err
	if err == nil {
		s.Successes++
		s.Failures = 0
	} else {
		s.Failures++
		s.Successes = 0
	}
	from, to := s.State, s.State
	switch {
	case err == nil && from != StateUp && (from == StateUnknown || s.Successes >= e.t.Rise):
		to = StateUp
	case err != nil && from != StateDown && (from == StateUnknown || s.Failures >= e.t.Fall):
		to = StateDown
	}
	if to == from {
		return Transition{}, false
	}
	s.State, s.Since = to, at
	tr := Transition{ID: e.t.ID, From: from, To: to, Err: err, Latency: latency, At: at}
	switch {
	case to == StateDown:
		tr.Reason = err.Error()
	case s.Successes == 1:
		tr.Reason = "check passed"
	default:
		tr.Reason = fmt.Sprintf("%d checks passed in a row", s.Successes)
	}
	return tr, true
}

// notifier delivers transitions in order, off the workers' path. It takes
// them from the queue one at a time, so that a transition waiting behind a
// slow receiver can still be coalesced with a later one of its target.
func (c *Checker) notifier(ctx context.Context) {
	defer c.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.evWake:
		}
		for {
			c.mu.Lock()
			t, ok, skipped := c.events.pop()
			c.coalesced += skipped
			c.mu.Unlock()
			if !ok {
				break
			}
			if c.onTr != nil {
				c.onTr(t)
			}
			if c.trCh != nil {
				select {
				case c.trCh <- t:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// trQueue holds the transitions waiting for delivery, in order, at most one
// per target ID.
type trQueue struct {
	q    []*pendingTr // q[head:] wait, some of them dropped
	head int
	dead int // dropped entries in q[head:]
	byID map[string]*pendingTr
}

type pendingTr struct {
	tr      Transition
	dropped bool
}

// push queues tr, or coalesces it into the transition of the same target
// that is already waiting, reporting whether it did.
func (q *trQueue) push(tr Transition) (coalesced bool) {
	if p, ok := q.byID[tr.ID]; ok {
		from := p.tr.From
		p.tr = tr
		p.tr.From = from
		return true
	}
	p := &pendingTr{tr: tr}
	q.byID[tr.ID] = p
	q.q = append(q.q, p)
	return false
}

// drop discards the waiting transition of id, reporting whether there was
// one.
func (q *trQueue) drop(id string) bool {
	p, ok := q.byID[id]
	if !ok {
		return false
	}
	delete(q.byID, id)
	p.dropped = true
	if q.dead++; q.dead > (len(q.q)-q.head)/2 {
		// Mostly dropped entries (targets removed while the receiver is
		// behind): compact, so that the queue stays bounded by the
		// number of targets.
		q.q = slices.DeleteFunc(q.q[q.head:], func(p *pendingTr) bool { return p.dropped })
		q.head, q.dead = 0, 0
	}
	return true
}

// pop returns the next transition to deliver. It skips dropped entries and
// coalesced ones that returned to the state last delivered, counting the
// latter in skipped.
func (q *trQueue) pop() (tr Transition, ok bool, skipped uint64) {
	for q.head < len(q.q) {
		p := q.q[q.head]
		q.q[q.head] = nil
		q.head++
		if p.dropped {
			q.dead--
			continue
		}
		delete(q.byID, p.tr.ID)
		if p.tr.From == p.tr.To {
			skipped++
			continue
		}
		tr, ok = p.tr, true
		break
	}
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	return tr, ok, skipped
}

// dueHeap orders entries by due time.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
	*h = append(*h, e)
}

func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}
