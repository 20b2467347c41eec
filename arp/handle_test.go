package arp

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
)

// sinkConn is a Conn that discards what is written and reads nothing until
// it is closed, so that a benchmark of Announcer.handle measures the
// Announcer and not a FakeConn's recording.
type sinkConn struct {
	mu     sync.Mutex
	writes int
	done   chan struct{}
	once   sync.Once
}

func newSinkConn() *sinkConn { return &sinkConn{done: make(chan struct{})} }

func (c *sinkConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.done
	return 0, nil, net.ErrClosed
}

func (c *sinkConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return len(b), nil
}

func (c *sinkConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *sinkConn) written() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// handleCase is a received frame and whether the Announcer, owning vip4 and
// vip6, answers it.
type handleCase struct {
	name   string
	frame  []byte
	answer bool
}

func handleCases(t testing.TB) []handleCase {
	return []handleCase{
		{"arp/owned", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4)), true},
		{"arp/not-owned", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4b)), false},
		{"ns/owned", ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6)), macC, solicit(clnt6, vip6, macC)), true},
		{"ns/not-owned", ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6b)), macC, solicit(clnt6, vip6b, macC)), false},
	}
}

// handleAnnouncer returns an Announcer on a sinkConn that owns vip4 and
// vip6 and has sent its announcements, with the given logger.
func handleAnnouncer(t testing.TB, log *slog.Logger) (*Announcer, *sinkConn) {
	t.Helper()
	conn := newSinkConn()
	a, err := New(ifA, conn, Config{AnnounceCount: 1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := a.Acquire(context.Background(), vip4, vip6); err != nil {
		t.Fatal(err)
	}
	return a, conn
}

// TestHandleNotOwnedAllocatesNothing: a request or solicitation for an
// address the Announcer does not own, the common case on a LAN, costs no
// allocation: it is dropped before any answer is built.
func TestHandleNotOwnedAllocatesNothing(t *testing.T) {
	a, conn := handleAnnouncer(t, nil)
	for _, tt := range handleCases(t) {
		before, written := a.Stats(), conn.written()
		allocs := testing.AllocsPerRun(100, func() { a.handle(tt.frame) })
		s := a.Stats()
		runs := s.Received - before.Received // AllocsPerRun runs once more to warm up
		answered := uint64(conn.written() - written)
		if tt.answer {
			if answered != runs || s.Ignored != before.Ignored {
				t.Errorf("%s: %d answers and %d ignored in %d runs, want every one answered", tt.name, answered, s.Ignored-before.Ignored, runs)
			}
			t.Logf("%s: %v allocations", tt.name, allocs)
			continue
		}
		if answered != 0 || s.Ignored-before.Ignored != runs {
			t.Errorf("%s: %d answers and %d ignored in %d runs, want every one ignored", tt.name, answered, s.Ignored-before.Ignored, runs)
		}
		if allocs != 0 {
			t.Errorf("%s: %v allocations per frame, want 0", tt.name, allocs)
		}
	}
}

// BenchmarkHandle measures the cost of one received ARP request or neighbour
// solicitation, for an owned VIP (answered) and for an address the
// Announcer does not own (ignored), side by side. Run with -benchmem.
func BenchmarkHandle(b *testing.B) {
	a, _ := handleAnnouncer(b, nil)
	for _, tt := range handleCases(b) {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.handle(tt.frame)
			}
		})
	}
}

// countHandler counts the debug records it is given.
type countHandler struct {
	mu    sync.Mutex
	debug int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level == slog.LevelDebug {
		h.debug++
	}
	return nil
}

// TestHandleAnswerCost: with the default (discarding) logger an answer
// costs two allocations, the frame and the socket address, and no more for
// a debug record nobody reads; with a logger that wants debug records,
// every answer still gets one.
func TestHandleAnswerCost(t *testing.T) {
	a, _ := handleAnnouncer(t, nil)
	h := &countHandler{}
	logged, _ := handleAnnouncer(t, slog.New(h))
	for _, tt := range handleCases(t) {
		if !tt.answer {
			continue
		}
		if allocs := testing.AllocsPerRun(100, func() { a.handle(tt.frame) }); allocs > 2 {
			t.Errorf("%s: %v allocations per answer, want at most 2", tt.name, allocs)
		}
		h.mu.Lock()
		before := h.debug
		h.mu.Unlock()
		logged.handle(tt.frame)
		h.mu.Lock()
		got := h.debug - before
		h.mu.Unlock()
		if got != 1 {
			t.Errorf("%s: %d debug records for one answer, want 1", tt.name, got)
		}
	}
}
