package arp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// gatedConn is a FakeConn whose next WriteTo, once armed, stops until the
// test lets it finish (with an error of its choice), so that a test can
// run other calls while an Acquire is in the middle of its first send; and
// whose JoinGroup can be made to fail.
type gatedConn struct {
	*FakeConn
	mu      sync.Mutex
	armed   bool
	entered chan struct{} // closed when the armed write starts
	result  chan error    // what the armed write returns
	joins   int
	failAt  int // the JoinGroup call (1-based) that fails; 0 for none
}

func newGatedConn() *gatedConn {
	return &gatedConn{FakeConn: NewFakeConn()}
}

// arm makes the next WriteTo wait for finish.
func (g *gatedConn) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.entered = make(chan struct{})
	g.result = make(chan error, 1)
}

func (g *gatedConn) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(3 * time.Second):
		t.Fatal("the armed write never started")
	}
}

// finish lets the armed write return err (nil: the frame is written).
func (g *gatedConn) finish(err error) { g.result <- err }

// release lets a held write go on, if one is held and not yet finished.
func (g *gatedConn) release() {
	g.mu.Lock()
	result := g.result
	g.mu.Unlock()
	if result != nil {
		select {
		case result <- errors.New("the test ended"):
		default:
		}
	}
}

func (g *gatedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	g.mu.Lock()
	armed, entered, result := g.armed, g.entered, g.result
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(entered)
		if err := <-result; err != nil {
			return 0, err
		}
	}
	return g.FakeConn.WriteTo(b, addr)
}

func (g *gatedConn) JoinGroup(mac net.HardwareAddr) error {
	g.mu.Lock()
	g.joins++
	fail := g.joins == g.failAt
	g.mu.Unlock()
	if fail {
		return errors.New("no space for another multicast address")
	}
	return g.FakeConn.JoinGroup(mac)
}

// waitGoroutine waits until some goroutine's stack, as runtime.Stack
// prints it, satisfies match.
func waitGoroutine(t *testing.T, what string, match func(header, top, stack string) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			lines := strings.SplitN(g, "\n", 3)
			if len(lines) == 3 && match(lines[0], lines[1], g) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine %s:\n%s", what, buf[:n])
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// waitLockQueued waits until the goroutine running fn (Acquire, Release,
// shutdown) waits for the Announcer's lock as a writer, while the armed
// write holds it for reading: from then on Go's RWMutex lets that writer in
// before any new reader or writer.
func waitLockQueued(t *testing.T, fn string) {
	t.Helper()
	waitGoroutine(t, fn+" waiting for the lock", func(_, top, stack string) bool {
		return strings.HasPrefix(top, "sync.runtime_SemacquireRWMutex(") && strings.Contains(stack, "arp.(*Announcer)."+fn+"(")
	})
}

func newGatedAnnouncer(t *testing.T, cfg Config) (*Announcer, *gatedConn) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	g := newGatedConn()
	a, err := New(ifA, g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	// Runs before Close: a test that failed may have left a write held.
	t.Cleanup(g.release)
	// The scheduler takes the lock once when it starts: let it be done
	// with that and wait in its select, so that the only writer a test
	// waits for is the one it means.
	waitGoroutine(t, "scheduling", func(header, _, stack string) bool {
		return strings.Contains(header, "[select") && strings.Contains(stack, "arp.(*Announcer).scheduleLoop(")
	})
	return a, g
}

func goAcquire(a *Announcer, vips ...netip.Addr) <-chan error {
	res := make(chan error, 1)
	go func() { res <- a.Acquire(context.Background(), vips...) }()
	return res
}

// A second Acquire of a VIP whose first announcement is being sent by
// another Acquire, and fails, must not report success for a VIP that is
// then not owned; and neither may the first.
func TestAcquireConcurrentWithFailedFirstSend(t *testing.T) {
	const interval = 20 * time.Millisecond
	a, g := newGatedAnnouncer(t, Config{AnnounceCount: 1, AnnounceInterval: interval})
	g.arm()
	first := goAcquire(a, vip4)
	g.waitEntered(t)
	second := goAcquire(a, vip4)
	waitLockQueued(t, "Acquire")
	g.finish(errors.New("no buffer space available"))
	err1, err2 := <-first, <-second
	owned := slices.Contains(a.Owned(), vip4)
	if (err1 == nil || err2 == nil) && !owned {
		t.Fatalf("Acquire returned %v and %v, but %v is not owned", err1, err2, vip4)
	}
	// The VIP stays owned and the failed announcement is sent again.
	if err1 != nil || err2 != nil || !owned {
		t.Fatalf("Acquire returned %v and %v, owned %v: a failed send must not undo the acquisition", err1, err2, owned)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w, err := g.Next(ctx, 0)
	if err != nil {
		t.Fatalf("the failed announcement was not retried: %v", err)
	}
	if m := decodeMsg(t, w); m.arp == nil || !m.arp.IsGratuitous() || m.arp.SenderIP != vip4 {
		t.Fatalf("retry sent %+v", m)
	}
	if s := a.Stats(); s.WriteErrors != 1 || s.Announcements != 1 {
		t.Fatalf("stats %+v", s)
	}
	// With AnnounceCount 1 the retry completes the burst: nothing more.
	time.Sleep(5 * interval)
	if n := len(g.Written()); n != 1 {
		t.Fatalf("%d frames written, want the one retried announcement", n)
	}
}

// Release or Close that takes the VIPs back while Acquire is still sending
// makes that Acquire fail with ErrNotOwned or ErrClosed, instead of
// reporting success for VIPs it does not own.
func TestAcquireReportsConcurrentReleaseAndClose(t *testing.T) {
	for _, tt := range []struct {
		name      string
		interrupt func(a *Announcer) error
		locker    string // the method that waits for the lock
		want      error
	}{
		{"release", func(a *Announcer) error { return a.Release(vip4, vip6) }, "Release", ErrNotOwned},
		{"close", (*Announcer).Close, "Close", ErrClosed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, g := newGatedAnnouncer(t, Config{AnnounceCount: 1})
			g.arm()
			res := goAcquire(a, vip4, vip6)
			g.waitEntered(t) // the first announcement of vip4
			interrupted := make(chan error, 1)
			go func() { interrupted <- tt.interrupt(a) }()
			waitLockQueued(t, tt.locker)
			g.finish(nil)
			if err := <-interrupted; err != nil {
				t.Fatal(err)
			}
			if err := <-res; !errors.Is(err, tt.want) {
				t.Fatalf("Acquire = %v, want %v", err, tt.want)
			}
			if got := a.Owned(); len(got) != 0 {
				t.Fatalf("Owned = %v", got)
			}
		})
	}
}

// A group join that fails leaves none of the call's VIPs owned and no
// group joined.
func TestAcquireJoinFailureOwnsNothing(t *testing.T) {
	a, g := newGatedAnnouncer(t, Config{AnnounceCount: 1})
	g.failAt = 2
	if err := a.Acquire(context.Background(), vip4, vip6, vip6b); err == nil {
		t.Fatal("Acquire succeeded though a join failed")
	}
	if got, groups := a.Owned(), g.Groups(); len(got) != 0 || len(groups) != 0 || len(g.Written()) != 0 {
		t.Fatalf("owned %v, groups %v, %d frames after a failed Acquire", got, groups, len(g.Written()))
	}
}
