package health

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		benchServer() // BenchmarkTenThousandTargets's child process
		return
	}
	goleak.VerifyTestMain(m)
}

// fakeClock is a Clock that moves only when told to. Advance fires the
// AfterFunc callbacks that have become due, synchronously.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk    *fakeClock
	when   time.Time
	f      func()
	active bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, when: c.now.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.when, t.active = t.clk.now.Add(d), true
	return was
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var fire []func()
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.active = false
			fire = append(fire, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range fire {
		f()
	}
}

// waitFor polls cond until it holds. It is not a timing assertion: the
// deadline only turns a hang into a failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runChecker runs c.Run in a goroutine. cancel stops it; wait waits for
// Run to return, which must be with nil and within 20 s.
func runChecker(t testing.TB, c *Checker) (cancel context.CancelFunc, wait func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return cancel, func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}

// quiet reports whether the checker has nothing to do at the current
// clock time: no check running and none due.
func (c *Checker) quiet() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != running || c.inflight > 0 {
		return false
	}
	return len(c.queue) == 0 || c.queue[0].due.After(c.clock.Now().Add(batchWindow))
}

// harness runs a Checker for one test and collects its transitions.
type harness struct {
	t      testing.TB
	c      *Checker
	clk    *fakeClock
	tr     chan Transition
	got    []Transition
	seen   map[string]int // per ID, h.got before this index is consumed by await
	cancel context.CancelFunc
	done   chan error
}

// newHarness starts a Checker. With fake set it runs on a fakeClock.
func newHarness(t testing.TB, fake bool, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, tr: make(chan Transition, 1<<16), done: make(chan error, 1), seen: map[string]int{}}
	if fake {
		h.clk = newFakeClock()
		opts.Clock = h.clk
	}
	opts.Transitions = h.tr
	h.c = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.c.Run(ctx) }()
	waitFor(t, "Run to start", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return h.c.state == running
	})
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.t.Helper()
	if h.done == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
	h.done = nil
}

func (h *harness) add(tg Target) {
	h.t.Helper()
	if err := h.c.Add(tg); err != nil {
		h.t.Fatalf("Add(%s): %v", tg.ID, err)
	}
}

// step advances the fake clock and waits until every check due by then
// has run and every transition it caused has been received.
func (h *harness) step(d time.Duration) {
	h.t.Helper()
	h.clk.Advance(d)
	waitFor(h.t, "the checker to settle", h.c.quiet)
	h.drain()
}

// drain receives the transitions the checker has made so far.
func (h *harness) drain() {
	h.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		st := h.c.Stats()
		want := st.Transitions - st.Coalesced
		if uint64(len(h.got)) >= want {
			return
		}
		select {
		case tr := <-h.tr:
			h.got = append(h.got, tr)
		case <-time.After(time.Millisecond): // coalescing may lower want
		case <-deadline:
			h.t.Fatalf("got %d transitions, the checker delivers %d", len(h.got), want)
		}
	}
}

// await returns the next transition of id to state after the one the
// previous await returned, receiving transitions as needed.
func (h *harness) await(id string, to State) Transition {
	h.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		for i := h.seen[id]; i < len(h.got); i++ {
			if tr := h.got[i]; tr.ID == id && tr.To == to {
				h.seen[id] = i + 1
				return tr
			}
		}
		select {
		case tr := <-h.tr:
			h.got = append(h.got, tr)
		case <-timeout:
			h.t.Fatalf("%s did not go %s; transitions so far: %v", id, to, h.got)
		}
	}
}

func (h *harness) status(id string) Status {
	h.t.Helper()
	st, err := h.c.Status(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// scripted is a Func check that returns the results it is fed, one per
// call, and fails the test when called without one.
type scripted struct {
	t       testing.TB
	results chan error
	calls   atomic.Int64
}

func newScripted(t testing.TB) *scripted { return &scripted{t: t, results: make(chan error, 64)} }

func (s *scripted) check(ctx context.Context) error {
	s.calls.Add(1)
	select {
	case err := <-s.results:
		return err
	default:
		s.t.Error("check ran without a scripted result")
		return errors.New("unscripted")
	}
}

var errScripted = errors.New("scripted failure")

func TestRiseFall(t *testing.T) {
	const (
		U = StateUnknown
		D = StateDown
		P = StateUp // "passing"
	)
	tests := []struct {
		name       string
		initial    State
		rise, fall int
		results    string // '+' passes, '-' fails
		states     []State
		want       []string
	}{
		{"unknown first pass then fall 3 rise 2", U, 2, 3, "+---++",
			[]State{P, P, P, D, D, P},
			[]string{"unknown -> up", "up -> down", "down -> up"}},
		{"unknown first fail", U, 2, 3, "-++",
			[]State{D, D, P},
			[]string{"unknown -> down", "down -> up"}},
		{"initial up needs fall in a row", P, 2, 2, "+-+--",
			[]State{P, P, P, P, D},
			[]string{"up -> down"}},
		{"initial down needs rise in a row", D, 3, 2, "++-+++",
			[]State{D, D, D, D, D, P},
			[]string{"down -> up"}},
		{"rise 1 fall 1 follows every result", U, 1, 1, "+-+",
			[]State{P, D, P},
			[]string{"unknown -> up", "up -> down", "down -> up"}},
		{"initial unknown stays until a check", U, 1, 1, "",
			nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, true, Options{})
			s := newScripted(t)
			h.add(Target{ID: "t", Check: Func(s.check), Interval: time.Second, Rise: tc.rise, Fall: tc.fall, Initial: tc.initial})
			if st := h.status("t"); st.State != tc.initial || st.Checks != 0 {
				t.Fatalf("before any check: %+v", st)
			}
			for i, r := range tc.results {
				var err error
				if r == '-' {
					err = errScripted
				}
				s.results <- err
				h.step(time.Second)
				if n := s.calls.Load(); n != int64(i+1) {
					t.Fatalf("after step %d: %d checks ran, want %d", i+1, n, i+1)
				}
				st := h.status("t")
				if st.State != tc.states[i] {
					t.Errorf("after %q: state %v, want %v", tc.results[:i+1], st.State, tc.states[i])
				}
				if st.Checks != uint64(i+1) || !errors.Is(st.LastErr, err) || st.LastCheck != h.clk.Now() {
					t.Errorf("after %q: status %+v", tc.results[:i+1], st)
				}
				if (err == nil) != (st.Successes > 0 && st.Failures == 0) {
					t.Errorf("after %q: successes %d failures %d", tc.results[:i+1], st.Successes, st.Failures)
				}
			}
			var got []string
			for _, tr := range h.got {
				got = append(got, fmt.Sprintf("%s -> %s", tr.From, tr.To))
				if tr.ID != "t" || tr.Latency < 0 || tr.At.IsZero() {
					t.Errorf("transition %+v", tr)
				}
				if tr.To == StateDown && (!errors.Is(tr.Err, errScripted) || tr.Reason != errScripted.Error()) {
					t.Errorf("down transition %+v does not carry the check's error", tr)
				}
				if tr.To == StateUp && (tr.Err != nil || tr.Reason == "") {
					t.Errorf("up transition %+v", tr)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("transitions %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTransitionCallbackAndChannelAgree(t *testing.T) {
	var mu sync.Mutex
	var viaCallback []Transition
	inCallback := atomic.Int32{}
	h := newHarness(t, true, Options{OnTransition: func(tr Transition) {
		if inCallback.Add(1) != 1 {
			t.Error("OnTransition called concurrently")
		}
		mu.Lock()
		viaCallback = append(viaCallback, tr)
		mu.Unlock()
		inCallback.Add(-1)
	}})
	var fail [8]atomic.Bool
	for i := range fail {
		h.add(Target{ID: fmt.Sprint("t", i), Check: Func(func(context.Context) error {
			if fail[i].Load() {
				return errScripted
			}
			return nil
		}), Interval: time.Second, Rise: 1, Fall: 1})
	}
	for round := 0; round < 6; round++ {
		for i := range fail {
			fail[i].Store((round+i)%2 == 0)
		}
		h.step(time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(h.got) != 6*8 {
		t.Fatalf("got %d transitions on the channel, want %d", len(h.got), 6*8)
	}
	if !slices.EqualFunc(viaCallback, h.got, func(a, b Transition) bool { return a.ID == b.ID && a.From == b.From && a.To == b.To && a.At == b.At }) {
		t.Errorf("callback and channel saw different sequences:\n%v\n%v", viaCallback, h.got)
	}
	// Per target, transitions alternate and arrive in order.
	last := map[string]Transition{}
	for _, tr := range h.got {
		if p, ok := last[tr.ID]; ok && (p.To != tr.From || tr.At.Before(p.At)) {
			t.Errorf("%s: %v then %v", tr.ID, p, tr)
		}
		last[tr.ID] = tr
	}
}

// TestJitterSpread adds 10k targets at once and shows that their checks do
// not fire in lockstep: on the checker's (fake) clock, first checks are
// spread evenly over the first interval, and the jittered later checks stay
// spread.
func TestJitterSpread(t *testing.T) {
	const (
		n        = 10000
		interval = time.Second
		bucket   = 10 * time.Millisecond
		rounds   = 3
		buckets  = rounds * int(interval/bucket)
		perRound = int(interval / bucket)
	)
	h := newHarness(t, true, Options{})
	start := h.clk.Now()
	var all, first [buckets + 1]atomic.Int64
	var count [n]atomic.Int64
	for i := 0; i < n; i++ {
		h.add(Target{ID: fmt.Sprint("t", i), Interval: interval, Jitter: 0.1, Check: Func(func(context.Context) error {
			b := int(h.clk.Now().Sub(start) / bucket)
			all[b].Add(1)
			if count[i].Add(1) == 1 {
				first[b].Add(1)
			}
			return nil
		})})
	}
	for b := 0; b < buckets; b++ {
		h.step(bucket)
	}
	// In lockstep a bucket would hold all n checks. Spread evenly, a bucket
	// holds n*bucket/interval = 100 on average (Poisson, standard deviation
	// 10); allow 2.5 times that, and at least a fifth of it in every bucket
	// of the first round.
	mean := int64(n / perRound)
	var firsts, total int64
	for b := 0; b <= buckets; b++ {
		if got := all[b].Load(); got > mean*5/2 {
			t.Errorf("bucket %v: %d checks, more than %d", time.Duration(b)*bucket, got, mean*5/2)
		}
		total += all[b].Load()
		firsts += first[b].Load()
		if got := first[b].Load(); b >= 1 && b <= perRound && got < mean/5 {
			t.Errorf("bucket %v: %d first checks, fewer than %d", time.Duration(b)*bucket, got, mean/5)
		}
		if b > perRound && first[b].Load() != 0 {
			t.Errorf("bucket %v: %d first checks after the first interval", time.Duration(b)*bucket, first[b].Load())
		}
	}
	if firsts != n {
		t.Errorf("%d targets checked in the first interval, want all %d", firsts, n)
	}
	// Every target ran once per interval, give or take one at the edges.
	for i := range count {
		if got := count[i].Load(); got < rounds-1 || got > rounds+1 {
			t.Fatalf("target %d ran %d times in %d intervals", i, got, rounds)
		}
	}
	if lo, hi := int64(n*rounds*95/100), int64(n*rounds*105/100); total < lo || total > hi {
		t.Errorf("%d checks in %d intervals, want about %d", total, rounds, n*rounds)
	}
	t.Logf("%d checks, mean %d per %v", total, mean, bucket)
}

func TestMaxConcurrentBoundsWorkers(t *testing.T) {
	const max = 4
	h := newHarness(t, false, Options{MaxConcurrent: max})
	var running, peak atomic.Int64
	release := make(chan struct{})
	var ran atomic.Int64
	for i := 0; i < 16; i++ {
		h.add(Target{ID: fmt.Sprint("t", i), Interval: 10 * time.Millisecond, Timeout: time.Minute, Check: Func(func(ctx context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			ran.Add(1)
			return nil
		})})
	}
	waitFor(t, "max checks running", func() bool { return running.Load() == max })
	close(release)
	waitFor(t, "every target to be checked", func() bool { return ran.Load() >= 32 })
	if p := peak.Load(); p != max {
		t.Errorf("peak concurrency %d, want %d", p, max)
	}
	if w := h.c.Stats().Workers; w > max || w < 1 {
		t.Errorf("%d workers, want 1..%d", w, max)
	}
}

func TestLateChecksAreCounted(t *testing.T) {
	h := newHarness(t, true, Options{MaxConcurrent: 1})
	release := make(chan struct{})
	var ran atomic.Int64
	for i := 0; i < 3; i++ {
		h.add(Target{ID: fmt.Sprint("t", i), Interval: time.Second, Check: Func(func(ctx context.Context) error {
			<-release
			ran.Add(1)
			return nil
		})})
	}
	h.clk.Advance(time.Second)
	waitFor(t, "one check in flight", func() bool { return h.c.Stats().InFlight == 1 })
	h.clk.Advance(3 * time.Second) // the other two are now over an interval late
	close(release)
	waitFor(t, "all three checked", func() bool { return ran.Load() >= 3 })
	if late := h.c.Stats().Late; late < 2 {
		t.Errorf("Late = %d, want at least 2", late)
	}
}

func TestRemoveCancelsRunningCheck(t *testing.T) {
	h := newHarness(t, false, Options{})
	started := make(chan struct{})
	ended := make(chan error, 1)
	h.add(Target{ID: "slow", Interval: 10 * time.Millisecond, Timeout: time.Hour, Check: Func(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})})
	<-started
	if err := h.c.Remove("slow"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("check ended with %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("removing the target did not cancel its check")
	}
	waitFor(t, "nothing in flight", func() bool { return h.c.Stats().InFlight == 0 })
	if st := h.c.Stats(); st.Targets != 0 || st.Transitions != 0 || st.Checks != 0 {
		t.Errorf("after removal: %+v (the cancelled check must not count)", st)
	}
	if _, err := h.c.Status("slow"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status of a removed target: %v", err)
	}
}

func TestRunStopsPromptlyWithoutLeaks(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := New(Options{})
	var started, cancelled atomic.Int64
	for i := 0; i < 50; i++ {
		if err := c.Add(Target{ID: fmt.Sprint("t", i), Interval: time.Millisecond, Timeout: time.Hour, Check: Func(func(ctx context.Context) error {
			started.Add(1)
			<-ctx.Done()
			cancelled.Add(1)
			return ctx.Err()
		})}); err != nil {
			t.Fatal(err)
		}
	}
	cancel, wait := runChecker(t, c)
	waitFor(t, "all checks running", func() bool { return started.Load() == 50 })
	cancel()
	wait()
	if cancelled.Load() != 50 {
		t.Errorf("%d checks saw the cancellation, want 50", cancelled.Load())
	}
	for _, st := range c.Snapshot() {
		if st.State != StateUnknown || st.Checks != 0 {
			t.Errorf("checks cancelled by shutdown must not count: %+v", st)
		}
	}
}

func TestLifecycleErrors(t *testing.T) {
	c := New(Options{})
	ok := Target{ID: "a", Check: Func(func(context.Context) error { return nil })}
	if err := c.Add(ok); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ok); !errors.Is(err, ErrExists) {
		t.Errorf("second Add: %v, want ErrExists", err)
	}
	if err := c.Update(Target{ID: "b", Check: ok.Check}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update unknown: %v", err)
	}
	if err := c.Remove("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove unknown: %v", err)
	}
	var ve *ValidationError
	if err := c.Add(Target{ID: "c", Check: ok.Check, Rise: -1}); !errors.As(err, &ve) || ve.Field != "Rise" || ve.ID != "c" {
		t.Errorf("bad Rise: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "Run to start", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.state == running
	})
	if err := c.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("Run while running: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Run: %v", err)
	}
	for name, err := range map[string]error{
		"Add":    c.Add(Target{ID: "z", Check: ok.Check}),
		"Update": c.Update(ok),
		"Remove": c.Remove("a"),
		"Sync":   c.Sync(nil),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Run: %v, want ErrClosed", name, err)
		}
	}
	if snap := c.Snapshot(); len(snap) != 1 || snap[0].ID != "a" {
		t.Errorf("Snapshot after Run: %+v", snap)
	}
}

func TestUpdateKeepsStateAndUsesNewCheck(t *testing.T) {
	h := newHarness(t, true, Options{})
	pass := Func(func(context.Context) error { return nil })
	var newCalls atomic.Int64
	failing := Func(func(context.Context) error { newCalls.Add(1); return errScripted })
	tg := Target{ID: "t", Check: pass, Interval: time.Second, Fall: 2}
	h.add(tg)
	h.step(time.Second)
	if st := h.status("t"); st.State != StateUp {
		t.Fatalf("state %v", st.State)
	}
	tg.Check = failing
	tg.Interval = 2 * time.Second
	if err := h.c.Update(tg); err != nil {
		t.Fatal(err)
	}
	if st := h.status("t"); st.State != StateUp || st.Successes != 1 {
		t.Fatalf("Update changed the state: %+v", st)
	}
	h.step(2 * time.Second)
	if st := h.status("t"); newCalls.Load() != 1 || st.State != StateUp || st.Failures != 1 {
		t.Fatalf("after one failure of the new check: calls %d, %+v", newCalls.Load(), st)
	}
	h.step(2 * time.Second)
	if st := h.status("t"); st.State != StateDown {
		t.Fatalf("after Fall failures: %+v", st)
	}
	if len(h.got) != 2 {
		t.Errorf("transitions %v", h.got)
	}
}

func TestUpdateShortensInterval(t *testing.T) {
	h := newHarness(t, true, Options{})
	var calls atomic.Int64
	tg := Target{ID: "t", Interval: time.Hour, Check: Func(func(context.Context) error { calls.Add(1); return nil })}
	h.add(tg)
	tg.Interval = time.Second
	if err := h.c.Update(tg); err != nil {
		t.Fatal(err)
	}
	h.step(time.Second)
	if calls.Load() != 1 {
		t.Errorf("a check due within the hour did not move into the new one-second interval")
	}
}

func TestSyncIsAllOrNothing(t *testing.T) {
	h := newHarness(t, true, Options{})
	pass := Func(func(context.Context) error { return nil })
	if err := h.c.Sync([]Target{{ID: "a", Check: pass}, {ID: "b", Check: pass}}); err != nil {
		t.Fatal(err)
	}
	ids := func() (out []string) {
		for _, st := range h.c.Snapshot() {
			out = append(out, st.ID)
		}
		return out
	}
	var ve *ValidationError
	err := h.c.Sync([]Target{{ID: "c", Check: pass}, {ID: "d", Check: pass, Jitter: 2}})
	if !errors.As(err, &ve) || ve.ID != "d" || ve.Field != "Jitter" {
		t.Errorf("Sync with a bad target: %v", err)
	}
	err = h.c.Sync([]Target{{ID: "c", Check: pass}, {ID: "c", Check: pass}})
	if !errors.As(err, &ve) || ve.ID != "c" || ve.Field != "ID" {
		t.Errorf("Sync with a duplicate: %v", err)
	}
	if got := ids(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a failed Sync changed the targets: %v", got)
	}
	if err := h.c.Sync([]Target{{ID: "b", Check: pass, Interval: time.Second}, {ID: "c", Check: pass}}); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("after Sync: %v", got)
	}
	h.step(2 * time.Second)
	for _, st := range h.c.Snapshot() {
		if st.State != StateUp {
			t.Errorf("%+v", st)
		}
	}
}

func TestTargetValidation(t *testing.T) {
	pass := Func(func(context.Context) error { return nil })
	tests := []struct {
		t     Target
		field string
	}{
		{Target{Check: pass}, "ID"},
		{Target{ID: "x"}, "Check"},
		{Target{ID: "x", Check: Func(nil)}, "Check"},
		{Target{ID: "x", Check: pass, Interval: time.Microsecond}, "Interval"},
		{Target{ID: "x", Check: pass, Interval: -time.Second}, "Interval"},
		{Target{ID: "x", Check: pass, Timeout: -1}, "Timeout"},
		{Target{ID: "x", Check: pass, Rise: -1}, "Rise"},
		{Target{ID: "x", Check: pass, Fall: -3}, "Fall"},
		{Target{ID: "x", Check: pass, Initial: 7}, "Initial"},
		{Target{ID: "x", Check: pass, Jitter: 1}, "Jitter"},
		{Target{ID: "x", Check: pass, Jitter: -0.1}, "Jitter"},
		{Target{ID: "x", Check: TCP{}}, "Check.Addr"},
		{Target{ID: "x", Check: TCP{Addr: netipAP("127.0.0.1:0")}}, "Check.Addr"},
		{Target{ID: "x", Check: TCP{Addr: netipAP("127.0.0.1:80"), Source: netipA("::1")}}, "Check.Source"},
		{Target{ID: "x", Check: UDP{Addr: netipAP("[::1]:53"), Payload: make([]byte, 70000)}}, "Check.Payload"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Method: "GE T"}}, "Check.Method"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Path: "healthz"}}, "Check.Path"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Path: "/a b"}}, "Check.Path"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Host: "a\r\nX-Evil: 1"}}, "Check.Host"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Header: map[string][]string{"X": {"a\nb"}}}}, "Check.Header"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Expect: StatusSet{{300, 200}}}}, "Check.Expect"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Expect: StatusSet{}}}, "Check.Expect"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Expect: StatusSet{{300, 150}, {100, 400}}}}, "Check.Expect"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Expect: Statuses(200, 99)}}, "Check.Expect"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), InsecureSkipVerify: true}}, "Check.InsecureSkipVerify"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Header: http.Header{"Host": {"a.example"}}}}, "Check.Header"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Header: map[string][]string{"host": {"a.example"}}}}, "Check.Header"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Header: http.Header{"Content-Length": {"5"}}}}, "Check.Header"},
		{Target{ID: "x", Check: HTTP{Addr: netipAP("127.0.0.1:80"), Header: http.Header{"Transfer-Encoding": {"chunked"}}}}, "Check.Header"},
		{Target{ID: "x", Check: (*TCP)(nil)}, "Check"},
		{Target{ID: "x", Check: (*HTTP)(nil)}, "Check"},
		{Target{ID: "x", Check: (*UDP)(nil)}, "Check"},
		{Target{ID: "x", Check: (*Func)(nil)}, "Check"},
	}
	for _, tc := range tests {
		err := tc.t.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want a ValidationError on %s", tc.t, err, tc.field)
		}
	}
	for _, good := range []Target{
		{ID: "x", Check: HTTP{Addr: netipAP("[::1]:443"), TLS: true, Path: "/healthz?full=1", Host: "backend.example:8443", Method: "HEAD"}},
		{ID: "x", Check: &TCP{Addr: netipAP("127.0.0.1:80")}},
	} {
		if err := good.Validate(); err != nil {
			t.Errorf("valid target rejected: %v", err)
		}
	}
	nt, err := Target{ID: "x", Check: pass, Interval: 300 * time.Millisecond}.normalize()
	if err != nil || nt.Timeout != 300*time.Millisecond || nt.Rise != DefaultRise || nt.Fall != DefaultFall {
		t.Errorf("defaults: %+v %v", nt, err)
	}
}

// TestTimeoutStartsWhenTheCheckRuns: a check that waited for a worker (a
// burst larger than the pool) gets its whole Timeout once it runs; the wait
// must not use it up and fail the check.
func TestTimeoutStartsWhenTheCheckRuns(t *testing.T) {
	const timeout = 50 * time.Millisecond
	c := New(Options{})
	var deadline time.Time
	var sawErr error
	if err := c.Add(Target{ID: "t", Interval: time.Second, Timeout: timeout, Check: Func(func(ctx context.Context) error {
		deadline, _ = ctx.Deadline()
		sawErr = ctx.Err()
		return ctx.Err()
	})}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.mu.Lock()
	e := c.targets["t"]
	heap.Remove(&c.queue, e.idx)
	j := c.startLocked(e, c.clock.Now()) // taken from the heap, as the scheduler does
	c.mu.Unlock()
	time.Sleep(2 * timeout) // waiting for a worker; at least this long, never at most
	ran := time.Now()
	c.runJob(ctx, j)
	if sawErr != nil || deadline.Before(ran.Add(timeout)) {
		t.Errorf("the check ran with ctx error %v and deadline %v after it started; want none and %v",
			sawErr, deadline.Sub(ran), timeout)
	}
	if st, _ := c.Status("t"); st.State != StateUp || st.LastErr != nil {
		t.Errorf("status %+v", st)
	}
}

// TestChangesWhileRunStops: after Run's context is cancelled, Run waits for
// the running checks; a target whose check already ended is then in no
// queue. Remove, Update and Sync of it in that window must work, and Run
// must still return.
func TestChangesWhileRunStops(t *testing.T) {
	for _, op := range []string{"Remove", "Update", "Sync"} {
		t.Run(op, func(t *testing.T) {
			c := New(Options{})
			started := make(chan string, 2)
			release := make(chan struct{})
			hold := func(id string, wait bool) Func {
				return func(ctx context.Context) error {
					started <- id
					<-ctx.Done()
					if wait { // slow to notice: keeps Run waiting
						<-release
					}
					return ctx.Err()
				}
			}
			slow := Target{ID: "slow", Check: hold("slow", true), Interval: time.Millisecond, Timeout: time.Hour}
			quick := Target{ID: "quick", Check: hold("quick", false), Interval: time.Millisecond, Timeout: time.Hour}
			for _, tg := range []Target{slow, quick} {
				if err := c.Add(tg); err != nil {
					t.Fatal(err)
				}
			}
			cancel, wait := runChecker(t, c)
			<-started
			<-started
			cancel()
			waitFor(t, "the quick check to end", func() bool { return c.Stats().InFlight == 1 })
			var err error
			switch op {
			case "Remove":
				err = c.Remove("quick")
			case "Update":
				quick.Interval = 2 * time.Millisecond
				quick.Check = hold("quick", false)
				err = c.Update(quick)
			case "Sync":
				err = c.Sync([]Target{slow})
			}
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("%s while Run stops: %v", op, err)
			}
			close(release)
			wait()
		})
	}
}

// TestConcurrentChangesAndCancel hammers Add, Update, Remove and Sync from
// several goroutines while checks run and while Run stops (run it with
// -race).
func TestConcurrentChangesAndCancel(t *testing.T) {
	for round := 0; round < 5; round++ {
		c := New(Options{})
		check := func(d time.Duration) Func {
			return func(ctx context.Context) error {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
				return nil
			}
		}
		cancel, wait := runChecker(t, c)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprint("t", (g*7+i)%20)
					tg := Target{ID: id, Check: check(time.Duration(i%3) * time.Millisecond), Interval: time.Millisecond, Timeout: time.Duration(1+i%50) * time.Millisecond}
					var err error
					switch i % 5 {
					case 0:
						err = c.Add(tg)
					case 1:
						err = c.Update(tg)
					case 2:
						err = c.Remove(id)
					case 3:
						var ts []Target
						for k := 0; k < 20; k += 1 + i%3 {
							ts = append(ts, Target{ID: fmt.Sprint("t", k), Check: tg.Check, Interval: time.Millisecond})
						}
						err = c.Sync(ts)
					case 4:
						_ = c.Snapshot()
						_ = c.Stats()
					}
					if err != nil && !errors.Is(err, ErrExists) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
						t.Errorf("%v", err)
					}
					if i%64 == 0 {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
		}
		time.Sleep(30 * time.Millisecond) // let checks run while the changes go on
		cancel()
		wait()
		close(stop)
		wg.Wait()
	}
}

// TestSuccessAfterTheTimeoutFails: a check that reports success only after
// its Timeout has passed fails with ErrTimeout, whatever it returned.
func TestSuccessAfterTheTimeoutFails(t *testing.T) {
	const timeout = 20 * time.Millisecond
	h := newHarness(t, false, Options{})
	h.add(Target{ID: "late", Interval: time.Second, Timeout: timeout, Rise: 1, Fall: 1, Check: Func(func(ctx context.Context) error {
		<-ctx.Done() // ignores the deadline, then claims success
		return nil
	})})
	down := h.await("late", StateDown)
	if !errors.Is(down.Err, ErrTimeout) || down.Latency < timeout {
		t.Errorf("down with %v after %v, want ErrTimeout after at least %v", down.Err, down.Latency, timeout)
	}
	if st := h.status("late"); st.State != StateDown || !errors.Is(st.LastErr, ErrTimeout) {
		t.Errorf("status %+v", st)
	}
}

// queuedTransitions is how many transitions wait for delivery.
func (c *Checker) queuedTransitions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events.q) - c.events.head - c.events.dead
}

// TestTransitionsAreBoundedWhenNobodyReads: 100 targets that flap on every
// check, with a Transitions channel nobody reads for 50 rounds. The checker
// must not queue a transition per flap; once the reader comes back, what it
// receives is consistent per target and ends in each target's current
// state.
func TestTransitionsAreBoundedWhenNobodyReads(t *testing.T) {
	const n, rounds = 100, 50
	clk := newFakeClock()
	ch := make(chan Transition) // nobody reads it for now
	c := New(Options{Clock: clk, Transitions: ch})
	for i := 0; i < n; i++ {
		var k atomic.Int64
		if err := c.Add(Target{ID: fmt.Sprint("t", i), Interval: time.Second, Rise: 1, Fall: 1, Check: Func(func(context.Context) error {
			if k.Add(1)%2 == 0 {
				return errScripted
			}
			return nil
		})}); err != nil {
			t.Fatal(err)
		}
	}
	cancel, wait := runChecker(t, c)
	defer wait()
	defer cancel()
	waitFor(t, "Run to start", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.state == running })
	for r := 0; r < rounds; r++ {
		clk.Advance(time.Second)
		waitFor(t, "the round's checks", c.quiet)
	}
	st := c.Stats()
	// Every check flips its target. A target whose first check falls
	// within the batch window of the start is checked once more than the
	// rounds.
	if st.Transitions != st.Checks || st.Checks < n*rounds || st.Checks > n*(rounds+1) {
		t.Fatalf("%d transitions of %d checks, want one per check and %d to %d checks", st.Transitions, st.Checks, n*rounds, n*(rounds+1))
	}
	if q := c.queuedTransitions(); q > n {
		t.Fatalf("%d transitions queued for %d targets, want at most one per target", q, n)
	}
	if st.Coalesced < st.Transitions-2*n {
		t.Errorf("Coalesced = %d, want most of the %d transitions", st.Coalesced, st.Transitions)
	}
	// Removing targets discards their waiting transitions.
	const kept = 40
	for i := kept; i < n; i++ {
		if err := c.Remove(fmt.Sprint("t", i)); err != nil {
			t.Fatal(err)
		}
	}
	if q := c.queuedTransitions(); q > kept {
		t.Errorf("%d transitions queued for the %d targets left", q, kept)
	}
	last := map[string]Transition{}
	got := 0
	var blockedOn string // the target of the first transition received
	// The notifier counts a coalesced transition that returned to the
	// state last delivered only when it reaches it in the queue, so the
	// stats are polled again while nothing arrives.
	deadline := time.After(20 * time.Second)
	for {
		st := c.Stats()
		if uint64(got) == st.Transitions-st.Coalesced {
			break
		}
		select {
		case tr := <-ch:
			if got++; got == 1 {
				blockedOn = tr.ID
			}
			p, ok := last[tr.ID]
			if !ok && tr.From != StateUnknown || ok && p.To != tr.From || tr.From == tr.To {
				t.Errorf("%s: %v after %v", tr.ID, tr, p)
			}
			last[tr.ID] = tr
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("received %d transitions, stats %+v", got, st)
		}
	}
	if got > 2*kept+1 {
		t.Errorf("received %d transitions after the reader came back, want at most %d", got, 2*kept+1)
	}
	removed := 0
	for id := range last {
		var i int
		if _, err := fmt.Sscanf(id, "t%d", &i); err == nil && i >= kept {
			removed++
		}
	}
	if removed > 1 { // the one the notifier was blocked on may still arrive
		t.Errorf("received transitions of %d removed targets", removed)
	}
	for _, s := range c.Snapshot() {
		tr, ok := last[s.ID]
		if ok && s.ID == blockedOn && tr.To == s.State {
			// The transition the notifier was blocked on was taken
			// from the queue early; if its target flipped an even
			// number of times after it, the waiting transition
			// returned to that state and was skipped, so the state
			// is the same but since a later time.
			continue
		}
		if !ok || tr.To != s.State || tr.At != s.Since {
			t.Errorf("%s is %v since %v; the last transition delivered was %v at %v", s.ID, s.State, s.Since, tr, tr.At)
		}
	}
}

// busyCPU keeps every P of the process busy until the test ends, as other
// work in the same process would.
func busyCPU(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; ; x++ {
				if x%1024 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// TestHangingChecksDoNotStarveOthersOnABusyCPU: checks that hang on the
// network until their timeout hold a worker each. While the process is also
// busy with other work (so that the pool's own timer fires late), the pool
// must still grow to a worker per hanging check, instead of queueing the
// healthy targets' checks behind them, and the healthy targets go on being
// checked. How fast they are checked is not asserted: a rate measured over
// wall-clock time is a timed test (see DESIGN.md);
// TestPoolGrowsWhenItsTimerIsLate covers the growth arithmetic.
func TestHangingChecksDoNotStarveOthersOnABusyCPU(t *testing.T) {
	const (
		hanging  = 100
		healthy  = 20
		interval = 100 * time.Millisecond
	)
	wedged := fullBacklog(t, netipA("127.0.0.1"))
	h := newHarness(t, false, Options{})
	for i := 0; i < hanging; i++ {
		h.add(Target{ID: fmt.Sprint("wedged", i), Check: TCP{Addr: wedged}, Interval: time.Second, Timeout: time.Second})
	}
	var checks [healthy]atomic.Int64
	for i := 0; i < healthy; i++ {
		h.add(Target{ID: fmt.Sprint("ok", i), Interval: interval, Timeout: time.Second, Check: Func(func(context.Context) error {
			checks[i].Add(1)
			return nil
		})})
	}
	busyCPU(t)
	waitFor(t, "the hanging checks to be in flight", func() bool { return h.c.Stats().InFlight >= hanging })
	waitFor(t, fmt.Sprintf("a worker for each of the %d hanging checks", hanging), func() bool { return h.c.Stats().Workers >= hanging })
	for i := range checks {
		checks[i].Store(0)
	}
	for i := range checks {
		waitFor(t, fmt.Sprintf("healthy target %d to be checked again", i), func() bool { return checks[i].Load() > 0 })
	}
	t.Logf("stats %+v", h.c.Stats())
}

// TestStartDelayIsMeasuredWhenTheWorkerStarts: a check taken from the heap
// on time but started by a worker 3 s later (every worker busy, or no CPU)
// is late by 3 s; that is what Status.LastStartDelay and Stats report.
func TestStartDelayIsMeasuredWhenTheWorkerStarts(t *testing.T) {
	clk := newFakeClock()
	c := New(Options{Clock: clk})
	if err := c.Add(Target{ID: "t", Interval: time.Second, Check: Func(func(context.Context) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	e := c.targets["t"]
	heap.Remove(&c.queue, e.idx)
	clk.Advance(e.due.Sub(clk.Now())) // exactly on time
	j := c.startLocked(e, clk.Now())  // taken from the heap, as the scheduler does
	c.mu.Unlock()
	clk.Advance(3 * time.Second) // the job waits for a worker
	c.runJob(context.Background(), j)
	st, _ := c.Status("t")
	stats := c.Stats()
	if st.LastStartDelay != 3*time.Second || stats.StartDelay != 3*time.Second || stats.Late != 1 || stats.Checks != 1 {
		t.Errorf("status %+v, stats %+v; want a start delay of 3s and one late check", st, stats)
	}
}
