package health_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"syscall"
	"time"

	"github.com/lbkit/lbkit/lb/health"
)

// A checker watching one TCP backend, reporting transitions on a channel.
func Example() {
	// A backend on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	events := make(chan health.Transition, 16)
	checker := health.New(health.Options{Transitions: events})
	err = checker.Add(health.Target{
		ID:       "web-1",
		Check:    health.TCP{Addr: netip.MustParseAddrPort(ln.Addr().String())},
		Interval: 100 * time.Millisecond,
		Timeout:  time.Second,
		Rise:     2,
		Fall:     3,
		Jitter:   0.1,
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()

	fmt.Println(<-events)

	ln.Close() // the backend dies: connections are refused
	tr := <-events
	fmt.Println(tr.ID, tr.From, "->", tr.To, "refused:", errors.Is(tr.Err, syscall.ECONNREFUSED))

	cancel()
	<-done
	// Output:
	// web-1: unknown -> up (check passed)
	// web-1 up -> down refused: true
}

// An HTTPS check of a path with an expected status set and a Host header,
// reporting through a callback.
func ExampleHTTP() {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Host != "api.example" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable) // draining
	}))
	defer backend.Close()

	expect, err := health.ParseStatusSet("200-299")
	if err != nil {
		panic(err)
	}
	got := make(chan health.Transition, 1)
	checker := health.New(health.Options{OnTransition: func(t health.Transition) { got <- t }})
	err = checker.Add(health.Target{
		ID: "api",
		Check: health.HTTP{
			Addr:               netip.MustParseAddrPort(backend.Listener.Addr().String()),
			TLS:                true,
			InsecureSkipVerify: true, // or TLSConfig with the backend's CA
			Path:               "/healthz",
			Host:               "api.example",
			Expect:             expect,
		},
		Interval: 100 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()

	tr := <-got
	var se *health.StatusError
	fmt.Println(tr.To, errors.As(tr.Err, &se), se.Code)
	fmt.Println(tr.Reason)
	cancel()
	<-done
	// Output:
	// down true 503
	// health: HTTP status 503 not in 200-299
}

// A UDP check of a port where nothing listens fails at once on the ICMP
// port unreachable instead of waiting for its timeout: reliably so on
// loopback, as here; remote hosts rate-limit their ICMP errors (see UDP).
func ExampleUDP() {
	conn, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		panic(err)
	}
	closed := netip.MustParseAddrPort(conn.LocalAddr().String())
	conn.Close()

	events := make(chan health.Transition, 1)
	checker := health.New(health.Options{Transitions: events})
	err = checker.Add(health.Target{
		ID: "dns",
		Check: health.UDP{
			Addr:    closed,
			Payload: []byte("ping"),
			Match:   health.ReplyEquals([]byte("pong")),
		},
		Interval: 100 * time.Millisecond,
		Timeout:  10 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()

	tr := <-events
	fmt.Println(tr.To, errors.Is(tr.Err, health.ErrPortUnreachable), tr.Latency < 5*time.Second)
	cancel()
	<-done
	// Output: down true true
}

// Any probe can be plugged in as a Func. Snapshot reports every target.
func ExampleFunc() {
	checker := health.New(health.Options{})
	for _, id := range []string{"a", "b"} {
		err := checker.Add(health.Target{
			ID: id,
			Check: health.Func(func(ctx context.Context) error {
				if id == "b" {
					return errors.New("disk full")
				}
				return nil
			}),
			Interval: 10 * time.Millisecond,
		})
		if err != nil {
			panic(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()
	for checker.Stats().Transitions < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for _, st := range checker.Snapshot() {
		fmt.Println(st.ID, st.State, st.LastErr)
	}
	// Output:
	// a up <nil>
	// b down disk full
}

// Sync applies a whole desired set of targets at once, validating all of
// them first.
func ExampleChecker_Sync() {
	checker := health.New(health.Options{})
	backend := func(port uint16) health.Check {
		return health.TCP{Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), port)}
	}
	err := checker.Sync([]health.Target{
		{ID: "192.0.2.10:80", Check: backend(80)},
		{ID: "192.0.2.10:80", Check: backend(8080)}, // duplicate ID
	})
	var ve *health.ValidationError
	fmt.Println(errors.As(err, &ve), ve.Field, len(checker.Snapshot()))

	err = checker.Sync([]health.Target{
		{ID: "a", Check: backend(80)},
		{ID: "b", Check: backend(81), Interval: 500 * time.Millisecond, Rise: 1},
	})
	fmt.Println(err, len(checker.Snapshot()))
	// Output:
	// true ID 0
	// <nil> 2
}

func ExampleParseStatusSet() {
	set, err := health.ParseStatusSet("204, 200-202, 301-302")
	if err != nil {
		panic(err)
	}
	fmt.Println(set, set.Contains(201), set.Contains(203))
	_, err = health.ParseStatusSet("2xx")
	fmt.Println(errors.Is(err, health.ErrStatusSet))
	// Output:
	// 200-202,204,301-302 true false
	// true
}
