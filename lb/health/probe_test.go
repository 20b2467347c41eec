package health

// Checks against real servers on 127.0.0.1 and ::1 that the tests take up,
// down, slow and wrong. Timing bounds are generous: a refused connection
// must fail well inside its timeout, a stalled one must take about its
// timeout, and nothing waits on a sleep.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	fastInterval = 20 * time.Millisecond
	// okTimeout is the timeout of checks that are meant to pass: long, so
	// that a loaded machine (-race) does not fail them.
	okTimeout = 5 * time.Second
	// slowTimeout is the timeout of checks that are meant to time out.
	slowTimeout = 500 * time.Millisecond
)

// checkTimedOut asserts that tr is a down transition caused by a timeout
// of about timeout.
func checkTimedOut(t *testing.T, tr Transition, timeout time.Duration) {
	t.Helper()
	if !errors.Is(tr.Err, ErrTimeout) {
		t.Errorf("down because of %v, want ErrTimeout", tr.Err)
	}
	if tr.Latency < timeout*3/4 || tr.Latency > timeout+5*time.Second {
		t.Errorf("timed-out check took %v, want about %v", tr.Latency, timeout)
	}
}

// checkFast asserts that a failure was detected well before the timeout.
func checkFast(t *testing.T, tr Transition, timeout time.Duration) {
	t.Helper()
	if tr.Latency >= timeout/2 {
		t.Errorf("failure took %v, want a fast failure well under the %v timeout", tr.Latency, timeout)
	}
}

func TestTCPUpDownUp(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			srv := startTCPServer(t, lo.addr)
			h := newHarness(t, false, Options{})
			const timeout = 5 * time.Second
			h.add(Target{ID: "tcp", Check: TCP{Addr: srv.addr}, Interval: fastInterval, Timeout: timeout, Rise: 2, Fall: 2})
			up := h.await("tcp", StateUp)
			if up.From != StateUnknown || up.Err != nil {
				t.Errorf("first transition %+v", up)
			}
			srv.down()
			down := h.await("tcp", StateDown)
			if !errors.Is(down.Err, syscall.ECONNREFUSED) || !strings.Contains(down.Reason, "refused") {
				t.Errorf("down because of %v, want connection refused", down.Err)
			}
			checkFast(t, down, timeout)
			if st := h.status("tcp"); st.State != StateDown || st.Failures < 2 {
				t.Errorf("status %+v", st)
			}
			srv.up() // same port
			up = h.await("tcp", StateUp)
			if up.From != StateDown || up.Reason != "2 checks passed in a row" {
				t.Errorf("recovery %+v", up)
			}
		})
	}
}

func TestTCPRefusedFailsFast(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			h := newHarness(t, false, Options{})
			const timeout = 5 * time.Second
			h.add(Target{ID: "closed", Check: TCP{Addr: closedTCPPort(t, lo.addr)}, Interval: fastInterval, Timeout: timeout})
			down := h.await("closed", StateDown)
			if down.From != StateUnknown || !errors.Is(down.Err, syscall.ECONNREFUSED) {
				t.Errorf("down because of %v, want connection refused", down.Err)
			}
			checkFast(t, down, timeout)
		})
	}
}

func TestTCPTimesOutOnFullBacklog(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			addr := fullBacklog(t, lo.addr)
			h := newHarness(t, false, Options{})
			h.add(Target{ID: "wedged", Check: TCP{Addr: addr}, Interval: slowTimeout, Timeout: slowTimeout})
			checkTimedOut(t, h.await("wedged", StateDown), slowTimeout)
		})
	}
}

// TestTCPClosesWithReset shows what the backend sees: a RST by default (no
// TIME_WAIT on the checker), a FIN with Graceful.
func TestTCPClosesWithReset(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		t.Run(fmt.Sprint("graceful=", graceful), func(t *testing.T) {
			srv := startTCPServer(t, netipA("127.0.0.1"))
			h := newHarness(t, false, Options{})
			h.add(Target{ID: "tcp", Check: TCP{Addr: srv.addr, Graceful: graceful}, Timeout: okTimeout, Interval: time.Second})
			var end error
			select {
			case end = <-srv.ends:
			case <-time.After(20 * time.Second):
				t.Fatal("the server saw no connection end")
			}
			if graceful && end != nil {
				t.Errorf("graceful close: server read %v, want EOF", end)
			}
			if !graceful && !errors.Is(end, syscall.ECONNRESET) {
				t.Errorf("default close: server read %v, want ECONNRESET", end)
			}
		})
	}
}

// TestHTTPConnectionsAreAbortedNotClosed: the checker closes an HTTP
// target's connections with a RST (no TIME_WAIT on its side), both when the
// target is removed and after a failed check.
func TestHTTPConnectionsAreAbortedNotClosed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		http, tls bool
		removed   bool // else: the check times out
	}{
		{name: "HTTP target removed", http: true, removed: true},
		{name: "HTTPS target removed", http: true, tls: true, removed: true},
		{name: "HTTP check timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &tcpServer{t: t, http: tc.http, addr: netipAP("127.0.0.1:0"), remotes: make(chan netip.AddrPort, 1024), ends: make(chan error, 1024)}
			if tc.tls {
				srv.tls = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
			}
			srv.up()
			t.Cleanup(srv.down)
			h := newHarness(t, false, Options{})
			tg := Target{ID: "web", Interval: fastInterval, Timeout: okTimeout, Check: HTTP{Addr: srv.addr, TLS: tc.tls, InsecureSkipVerify: tc.tls}}
			if tc.removed {
				h.add(tg)
				h.await("web", StateUp)
				if err := h.c.Remove("web"); err != nil {
					t.Fatal(err)
				}
			} else {
				tg.Interval, tg.Timeout = slowTimeout, slowTimeout
				h.add(tg)
				checkTimedOut(t, h.await("web", StateDown), slowTimeout)
			}
			select {
			case end := <-srv.ends:
				if !errors.Is(end, syscall.ECONNRESET) {
					t.Errorf("server saw the connection end with %v, want a reset", end)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the connection did not end")
			}
		})
	}
}

func TestTCPSource(t *testing.T) {
	srv := startTCPServer(t, netipA("127.0.0.1"))
	h := newHarness(t, false, Options{})
	h.add(Target{ID: "tcp", Check: TCP{Addr: srv.addr, Source: netipA("127.0.0.2")}, Timeout: okTimeout, Interval: time.Second})
	h.await("tcp", StateUp)
	if from := <-srv.remotes; from.Addr() != netipA("127.0.0.2") {
		t.Errorf("connection came from %v, want 127.0.0.2", from)
	}
}

func TestHTTPUpWrongSlowDown(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			srv := startHTTPServer(t, lo.addr, false)
			h := newHarness(t, false, Options{})
			h.add(Target{ID: "web", Interval: fastInterval, Timeout: slowTimeout, Rise: 1, Fall: 1, Check: HTTP{
				Addr: srv.addr, Path: "/healthz?full=1", Host: "backend.example",
				Header: http.Header{"X-Probe": {"1"}},
			}})
			h.await("web", StateUp)
			host, method, uri, ua, _ := srv.last()
			if host != "backend.example" || method != "GET" || uri != "/healthz?full=1" || ua != userAgent {
				t.Errorf("server saw host %q method %q uri %q user agent %q", host, method, uri, ua)
			}
			// Passing checks share one persistent connection.
			waitFor(t, "a few requests", func() bool { return srv.requests.Load() >= 5 })
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections for %d passing checks, want 1", n, srv.requests.Load())
			}

			srv.status.Store(http.StatusServiceUnavailable)
			down := h.await("web", StateDown)
			var se *StatusError
			if !errors.As(down.Err, &se) || se.Code != 503 || se.Expect.String() != "200-399" {
				t.Errorf("down because of %v, want a StatusError 503", down.Err)
			}
			checkFast(t, down, slowTimeout)

			srv.status.Store(http.StatusOK)
			h.await("web", StateUp)
			if n := srv.conns.Load(); n < 2 {
				t.Errorf("recovery was checked on the old connection (%d connections)", n)
			}

			srv.slow.Store(true)
			checkTimedOut(t, h.await("web", StateDown), slowTimeout)
			srv.slow.Store(false)
			h.await("web", StateUp)

			srv.down()
			down = h.await("web", StateDown)
			if !errors.Is(down.Err, syscall.ECONNREFUSED) {
				t.Errorf("down because of %v, want connection refused", down.Err)
			}
			checkFast(t, down, slowTimeout)
			srv.up()
			h.await("web", StateUp)
		})
	}
}

func TestHTTPExpectAndMethod(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	srv.status.Store(http.StatusNoContent)
	h := newHarness(t, false, Options{})
	set, err := ParseStatusSet("500-503")
	if err != nil {
		t.Fatal(err)
	}
	h.add(Target{ID: "default", Timeout: okTimeout, Interval: fastInterval, Check: HTTP{Addr: srv.addr, Method: http.MethodHead}})
	h.add(Target{ID: "only5xx", Timeout: okTimeout, Interval: fastInterval, Check: HTTP{Addr: srv.addr, Expect: set}})
	h.await("default", StateUp)
	down := h.await("only5xx", StateDown)
	var se *StatusError
	if !errors.As(down.Err, &se) || se.Code != 204 || down.Reason != "health: HTTP status 204 not in 500-503" {
		t.Errorf("down because of %v", down.Err)
	}
	srv.status.Store(http.StatusBadGateway)
	h.await("only5xx", StateUp)
	h.await("default", StateDown)
}

// TestHTTPInterimResponses: a 103 Early Hints (RFC 8297) before the final
// response is not the answer; the check judges the final one and keeps the
// connection.
func TestHTTPInterimResponses(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	srv.hints.Store(true)
	h := newHarness(t, false, Options{})
	h.add(Target{ID: "web", Timeout: okTimeout, Interval: fastInterval, Rise: 1, Fall: 1, Check: HTTP{Addr: srv.addr}})
	up := h.await("web", StateUp)
	if up.From != StateUnknown {
		t.Errorf("first transition %v", up)
	}
	waitFor(t, "a few requests", func() bool { return srv.requests.Load() >= 5 })
	if c := srv.conns.Load(); c != 1 {
		t.Errorf("%d connections: the connection was not kept after 103 + 200", c)
	}
	srv.status.Store(http.StatusServiceUnavailable)
	down := h.await("web", StateDown)
	var se *StatusError
	if !errors.As(down.Err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Errorf("down because of %v, want 503 (the final status, not 103)", down.Err)
	}
}

func TestReadResponseInterim(t *testing.T) {
	get := &http.Request{Method: http.MethodGet}
	for _, tc := range []struct {
		name     string
		in       string
		expect   StatusSet
		code     int // 0: passes
		reusable bool
	}{
		{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", nil, 0, true},
		{"two 103 then 204", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", nil, 0, true},
		{"103 then 503", "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", nil, 503, false},
		{"101 is final", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", nil, 101, false},
		{"101 expected, never reused", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", Statuses(101), 0, false},
		{"only interim", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", maxInterim+1) + "HTTP/1.1 200 OK\r\n\r\n", nil, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect := tc.expect
			if expect == nil {
				expect = defaultStatusSet
			}
			reusable, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)), get, expect, true)
			var se *StatusError
			switch {
			case tc.code == 0 && err != nil, tc.code > 0 && (!errors.As(err, &se) || se.Code != tc.code), tc.code < 0 && err == nil:
				t.Errorf("got %v, want code %d", err, tc.code)
			}
			if reusable != tc.reusable {
				t.Errorf("reusable = %v, want %v", reusable, tc.reusable)
			}
		})
	}
}

func TestHTTPWithoutKeepAlive(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	h := newHarness(t, false, Options{})
	h.add(Target{ID: "web", Timeout: okTimeout, Interval: fastInterval, Check: HTTP{Addr: srv.addr, DisableKeepAlive: true}})
	h.await("web", StateUp)
	waitFor(t, "a few requests", func() bool { return srv.requests.Load() >= 5 })
	if c, r := srv.conns.Load(), srv.requests.Load(); c < r {
		t.Errorf("%d connections for %d requests, want one each", c, r)
	}
}

// TestHTTPServerClosesIdleConnection: a server whose keep-alive timeout is
// shorter than the interval closes the kept connection between checks.
// The check must notice, retry on a new connection and stay up.
func TestHTTPServerClosesIdleConnection(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	srv.down()
	srv.idle = 5 * time.Millisecond
	srv.up()
	h := newHarness(t, false, Options{})
	h.add(Target{ID: "web", Timeout: okTimeout, Interval: 50 * time.Millisecond, Rise: 1, Fall: 1, Check: HTTP{Addr: srv.addr}})
	h.await("web", StateUp)
	waitFor(t, "ten checks", func() bool { return h.status("web").Checks >= 10 })
	h.drain()
	if len(h.got) != 1 {
		t.Errorf("transitions %v, want only the first up", h.got)
	}
	if st := h.status("web"); st.Failures != 0 || st.State != StateUp {
		t.Errorf("status %+v", st)
	}
	if c := srv.conns.Load(); c < 5 {
		t.Errorf("only %d connections: the server's idle timeout did not bite", c)
	}
}

func TestHTTPS(t *testing.T) {
	for _, lo := range loopbacks {
		srv := startHTTPServer(t, lo.addr, true)
		roots := &tls.Config{RootCAs: srv.roots()}
		tests := []struct {
			name    string
			check   HTTP
			sni     string
			wantErr func(error) bool
		}{
			{name: "verified by IP", check: HTTP{TLSConfig: roots}},
			{name: "verified by name", check: HTTP{TLSConfig: roots, Host: "backend.example"}, sni: "backend.example"},
			{name: "name with port", check: HTTP{TLSConfig: roots, Host: "backend.example:8443"}, sni: "backend.example"},
			{name: "skip verify", check: HTTP{InsecureSkipVerify: true, Host: "anything.example"}, sni: "anything.example"},
			{name: "unknown authority", check: HTTP{}, wantErr: func(err error) bool {
				var ue x509.UnknownAuthorityError
				return errors.As(err, &ue)
			}},
			{name: "wrong name", check: HTTP{TLSConfig: roots, Host: "other.example"}, wantErr: func(err error) bool {
				var he x509.HostnameError
				return errors.As(err, &he)
			}},
		}
		for _, tc := range tests {
			t.Run(lo.name+"/"+tc.name, func(t *testing.T) {
				h := newHarness(t, false, Options{})
				tc.check.Addr, tc.check.TLS = srv.addr, true
				h.add(Target{ID: "https", Timeout: okTimeout, Interval: fastInterval, Check: tc.check})
				if tc.wantErr != nil {
					down := h.await("https", StateDown)
					if !tc.wantErr(down.Err) {
						t.Errorf("down because of %v", down.Err)
					}
					return
				}
				h.await("https", StateUp)
				if _, _, _, _, sni := srv.last(); sni != tc.sni {
					t.Errorf("server saw SNI %q, want %q", sni, tc.sni)
				}
			})
		}
	}
}

func TestUDPEchoWrongSilentClosed(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			srv := startUDPServer(t, lo.addr)
			h := newHarness(t, false, Options{})
			h.add(Target{ID: "udp", Interval: fastInterval, Timeout: slowTimeout, Rise: 1, Fall: 1, Check: UDP{
				Addr: srv.addr, Payload: []byte("ping"), Match: ReplyEquals([]byte("ping")),
			}})
			h.await("udp", StateUp)

			srv.mode.Store(udpWrong)
			down := h.await("udp", StateDown)
			if !errors.Is(down.Err, ErrUnexpectedReply) || !strings.Contains(down.Reason, `"nope"`) {
				t.Errorf("down because of %v, want ErrUnexpectedReply", down.Err)
			}
			checkFast(t, down, slowTimeout)
			srv.mode.Store(udpEcho)
			h.await("udp", StateUp)

			srv.mode.Store(udpSilent)
			checkTimedOut(t, h.await("udp", StateDown), slowTimeout)
			srv.mode.Store(udpEcho)
			h.await("udp", StateUp)
		})
	}
}

func TestUDPPortUnreachableFailsFast(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			h := newHarness(t, false, Options{})
			const timeout = 5 * time.Second
			h.add(Target{ID: "udp", Interval: fastInterval, Timeout: timeout, Check: UDP{Addr: closedUDPPort(t, lo.addr), Payload: []byte("ping")}})
			down := h.await("udp", StateDown)
			if !errors.Is(down.Err, ErrPortUnreachable) || !errors.Is(down.Err, syscall.ECONNREFUSED) {
				t.Errorf("down because of %v, want ErrPortUnreachable", down.Err)
			}
			checkFast(t, down, timeout)
		})
	}
}

func TestUDPMatchers(t *testing.T) {
	reply := []byte("PONG v1")
	for _, tc := range []struct {
		m    func([]byte) error
		pass bool
	}{
		{ReplyEquals([]byte("PONG v1")), true},
		{ReplyEquals([]byte("PONG")), false},
		{ReplyHasPrefix([]byte("PONG")), true},
		{ReplyHasPrefix([]byte("v1")), false},
		{ReplyContains([]byte("G v")), true},
		{ReplyContains([]byte("v2")), false},
	} {
		if err := tc.m(reply); (err == nil) != tc.pass {
			t.Errorf("matcher: %v, want pass=%v", err, tc.pass)
		}
	}
}

// TestRemovingTargetsLeavesNothingBehind: after removing HTTP targets that
// held persistent connections, their connections are closed (the server
// sees them go) and no goroutine of theirs remains, while the checker keeps
// running.
func TestRemovingTargetsLeavesNothingBehind(t *testing.T) {
	srv := startHTTPServer(t, netipA("127.0.0.1"), false)
	udp := startUDPServer(t, netipA("::1"))
	h := newHarness(t, false, Options{})
	before := goleak.IgnoreCurrent()
	const n = 50
	var ids []string
	for i := 0; i < n; i++ {
		id := fmt.Sprint("web", i)
		h.add(Target{ID: id, Timeout: okTimeout, Interval: fastInterval, Check: HTTP{Addr: srv.addr}})
		ids = append(ids, id)
		id = fmt.Sprint("udp", i)
		h.add(Target{ID: id, Timeout: okTimeout, Interval: fastInterval, Check: UDP{Addr: udp.addr}})
		ids = append(ids, id)
	}
	for _, id := range ids {
		h.await(id, StateUp)
	}
	waitFor(t, "a persistent connection per HTTP target", func() bool { return srv.open.Load() == n })
	for _, id := range ids {
		if err := h.c.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the server to see every connection closed", func() bool { return srv.open.Load() == 0 })
	if st := h.c.Stats(); st.Targets != 0 {
		t.Errorf("stats after removal: %+v", st)
	}
	// The workers stay (bounded, reused by later targets); nothing else may.
	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/lbkit/lbkit/lb/health.(*pool).work"))
}

func TestStopClosesConnections(t *testing.T) {
	srv := startHTTPServer(t, netipA("::1"), true)
	h := newHarness(t, false, Options{})
	for i := 0; i < 10; i++ {
		h.add(Target{ID: fmt.Sprint(i), Timeout: okTimeout, Interval: fastInterval, Check: HTTP{Addr: srv.addr, TLS: true, InsecureSkipVerify: true}})
	}
	for i := 0; i < 10; i++ {
		h.await(fmt.Sprint(i), StateUp)
	}
	waitFor(t, "a connection per target", func() bool { return srv.open.Load() == 10 })
	h.stop()
	waitFor(t, "the server to see every connection closed", func() bool { return srv.open.Load() == 0 })
	for _, st := range h.c.Snapshot() {
		if st.State != StateUp {
			t.Errorf("final status %+v", st)
		}
	}
}
