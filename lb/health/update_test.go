package health

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoOpUpdateKeepsTheConnection: Update and Sync with a target equal to
// the registered one, rebuilt by the caller with fresh maps and slices and
// the same *tls.Config (which holds a callback), keep the target's HTTPS
// connection; so does an Update that changes only the schedule.
func TestNoOpUpdateKeepsTheConnection(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), true)
	var verified atomic.Int64
	conf := &tls.Config{RootCAs: srv.roots(), VerifyConnection: func(tls.ConnectionState) error { verified.Add(1); return nil }}
	target := func() Target {
		return Target{ID: "web", Interval: fastInterval, Timeout: okTimeout, Check: HTTP{
			Addr: srv.addr, TLS: true, TLSConfig: conf, Path: "/healthz",
			Header: http.Header{"X-Probe": {"1"}}, Expect: Statuses(200, 204),
		}}
	}
	h := newHarness(t, false, Options{})
	h.add(target())
	h.await("web", StateUp)
	more := func(what string) {
		t.Helper()
		n := srv.requests.Load()
		waitFor(t, what, func() bool { return srv.requests.Load() >= n+3 })
	}
	more("checks on the first connection")
	if err := h.c.Update(target()); err != nil {
		t.Fatal(err)
	}
	more("checks after a no-op Update")
	if err := h.c.Sync([]Target{target()}); err != nil {
		t.Fatal(err)
	}
	more("checks after a no-op Sync")
	slower := target()
	slower.Interval, slower.Rise = 2*fastInterval, 3
	if err := h.c.Update(slower); err != nil {
		t.Fatal(err)
	}
	more("checks after a schedule-only Update")
	if c, v := srv.conns.Load(), verified.Load(); c != 1 || v != 1 {
		t.Errorf("%d connections and %d TLS handshakes for %d checks, want 1", c, v, srv.requests.Load())
	}
	// A new *tls.Config is a change: the next check uses a new connection.
	changed := target()
	hc := changed.Check.(HTTP)
	hc.TLSConfig = conf.Clone()
	changed.Check = hc
	if err := h.c.Update(changed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new connection", func() bool { return srv.conns.Load() == 2 })
}

// TestUpdateCopiesTheCheck: the Checker keeps its own copy of the check's
// header map and status set, so that a caller editing them in place after
// Add neither races with the probes nor goes unnoticed by an Update.
func TestUpdateCopiesTheCheck(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	hdr := http.Header{"X-Probe": {"1"}}
	expect := Statuses(200)
	tg := Target{ID: "web", Interval: fastInterval, Timeout: okTimeout, Rise: 1, Fall: 1, Check: HTTP{Addr: srv.addr, Header: hdr, Expect: expect}}
	h := newHarness(t, false, Options{})
	h.add(tg)
	h.await("web", StateUp)
	hdr.Set("X-Probe", "2") // in place, while checks run (-race)
	expect[0] = StatusRange{500, 599}
	waitFor(t, "more checks", func() bool { return h.status("web").Checks >= 5 })
	if _, probe := srv.lastProbe(); probe != "1" || h.status("web").State != StateUp {
		t.Fatalf("in-place edits reached the checker before Update: X-Probe %q, %+v", probe, h.status("web"))
	}
	if err := h.c.Update(tg); err != nil {
		t.Fatal(err)
	}
	down := h.await("web", StateDown) // 200 is not in 500-599 any more
	var se *StatusError
	if !errors.As(down.Err, &se) || se.Code != 200 {
		t.Errorf("down because of %v", down.Err)
	}
	if _, probe := srv.lastProbe(); probe != "2" {
		t.Errorf("after Update the server saw X-Probe %q, want 2", probe)
	}
}

// TestUpdateDuringARunningCheck: the running check finishes on the old
// settings and counts; the next check uses the new ones.
func TestUpdateDuringARunningCheck(t *testing.T) {
	h := newHarness(t, true, Options{})
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var oldCalls, newCalls atomic.Int64
	tg := Target{ID: "t", Interval: time.Second, Rise: 1, Fall: 1, Check: Func(func(ctx context.Context) error {
		oldCalls.Add(1)
		started <- struct{}{}
		<-release
		return nil
	})}
	h.add(tg)
	h.clk.Advance(time.Second)
	<-started
	tg.Check = Func(func(context.Context) error { newCalls.Add(1); return errScripted })
	if err := h.c.Update(tg); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitFor(t, "the running check to finish", h.c.quiet)
	if st := h.status("t"); st.Checks != 1 || st.State != StateUp || oldCalls.Load() != 1 || newCalls.Load() != 0 {
		t.Fatalf("after the running check: %+v, old calls %d, new calls %d", st, oldCalls.Load(), newCalls.Load())
	}
	h.step(time.Second)
	if st := h.status("t"); st.Checks != 2 || st.State != StateDown || newCalls.Load() != 1 || oldCalls.Load() != 1 {
		t.Errorf("after the next check: %+v, old calls %d, new calls %d", st, oldCalls.Load(), newCalls.Load())
	}
}

// TestUpdateAndRemoveDuringARunningHTTPCheck: an HTTP target is updated
// while its check hangs on the kept connection. The check ends on the old
// prober, whose connection is closed; the next check runs with the new
// settings. Then the same again, but the target is removed after the
// Update: the running check is cancelled and every connection closed.
func TestUpdateAndRemoveDuringARunningHTTPCheck(t *testing.T) {
	for _, remove := range []bool{false, true} {
		name := "update"
		if remove {
			name = "update then remove"
		}
		t.Run(name, func(t *testing.T) {
			srv := startHTTPServer(t, netipA("127.0.0.1"), false)
			const timeout = 300 * time.Millisecond
			timeoutFor := timeout
			if remove {
				timeoutFor = time.Hour // only the removal may end the check
			}
			tg := Target{ID: "web", Interval: fastInterval, Timeout: timeoutFor, Rise: 1, Fall: 3, Check: HTTP{Addr: srv.addr, Path: "/old"}}
			h := newHarness(t, false, Options{})
			h.add(tg)
			h.await("web", StateUp)
			waitFor(t, "a kept connection", func() bool { return srv.open.Load() == 1 })
			srv.slow.Store(true)
			n := srv.requests.Load()
			waitFor(t, "a check to hang", func() bool { return srv.requests.Load() > n })
			tg.Check = HTTP{Addr: srv.addr, Path: "/new"}
			if err := h.c.Update(tg); err != nil {
				t.Fatal(err)
			}
			srv.slow.Store(false)
			if remove {
				if err := h.c.Remove("web"); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "every connection to close", func() bool { return srv.open.Load() == 0 })
				waitFor(t, "nothing in flight", func() bool { return h.c.Stats().InFlight == 0 })
				if st := h.c.Stats(); st.Targets != 0 || st.Transitions != 1 {
					t.Errorf("stats after removal: %+v", st)
				}
				return
			}
			waitFor(t, "a check of the new path", func() bool { uri, _ := srv.lastProbe(); return uri == "/new" })
			st := h.status("web")
			if st.State != StateUp {
				t.Errorf("status %+v", st)
			}
			waitFor(t, "the old connection to close", func() bool { return srv.open.Load() <= 1 })
		})
	}
}

// TestHTTPSameComparesEveryField: changing any one field of an HTTP check
// makes it a different check (a new connection), and equal values built
// separately are the same check.
func TestHTTPSameComparesEveryField(t *testing.T) {
	base := func() HTTP {
		return HTTP{Addr: netipAP("192.0.2.1:80"), Header: http.Header{"X": {"1"}}, Expect: Statuses(200, 201)}
	}
	if a, b := base().clone(), base().clone(); !a.same(b) {
		t.Errorf("equal checks built twice are not the same")
	}
	if a, b := (HTTP{Addr: netipAP("192.0.2.1:80")}).clone(), (HTTP{Addr: netipAP("192.0.2.1:80"), Expect: StatusSet{{200, 299}, {300, 399}}}).clone(); !a.same(b) {
		t.Errorf("the default status set and the same set spelled out are not the same")
	}
	changes := map[string]func(*HTTP){
		"Addr":               func(c *HTTP) { c.Addr = netipAP("192.0.2.2:80") },
		"Source":             func(c *HTTP) { c.Source = netipA("192.0.2.9") },
		"TLS":                func(c *HTTP) { c.TLS = true },
		"Method":             func(c *HTTP) { c.Method = "HEAD" },
		"Path":               func(c *HTTP) { c.Path = "/x" },
		"Host":               func(c *HTTP) { c.Host = "a.example" },
		"Header":             func(c *HTTP) { c.Header.Set("X", "2") },
		"Expect":             func(c *HTTP) { c.Expect = Statuses(200) },
		"InsecureSkipVerify": func(c *HTTP) { c.InsecureSkipVerify = true },
		"TLSConfig":          func(c *HTTP) { c.TLSConfig = &tls.Config{} },
		"DisableKeepAlive":   func(c *HTTP) { c.DisableKeepAlive = true },
	}
	fields := reflect.VisibleFields(reflect.TypeFor[HTTP]())
	if len(fields) != len(changes) {
		t.Errorf("HTTP has %d fields, the test changes %d: cover the new ones in same and here", len(fields), len(changes))
	}
	for _, f := range fields {
		change, ok := changes[f.Name]
		if !ok {
			t.Errorf("field %s is not covered", f.Name)
			continue
		}
		c := base()
		change(&c)
		if base().clone().same(c.clone()) {
			t.Errorf("changing %s leaves the same check", f.Name)
		}
	}
}
