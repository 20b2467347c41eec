package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Check is a kind of probe. The implementations are TCP, HTTP, UDP and
// Func; Func is the way to plug in any other probe. A pointer to one of
// them (*TCP) is accepted too, and copied; a nil pointer is a
// *ValidationError.
//
// The Checker keeps its own deep copy of a target's check, so that the
// caller may reuse or edit the maps, slices and structs it passed. Update
// compares the new check with the kept one field by field to decide
// whether the target's probe state (an HTTP connection) can stay; what Go
// cannot compare counts as changed: a Func always, a UDP Match unless
// both are nil. HTTP.TLSConfig is compared by pointer.
type Check interface {
	// validate returns a *ValidationError whose Field is relative to the
	// check ("Addr"); the caller prefixes it.
	validate() error
	// clone returns a copy of the check (by value, even when called through
	// a pointer) that shares no map or slice with the caller.
	clone() Check
	// same reports whether o, a clone, is the same probe: an Update from
	// one to the other may keep the prober.
	same(o Check) bool
	// newProber builds the per-target state that runs the check. It is
	// called once per Add or Update; the prober is used by one check at a
	// time and closed when the target goes away.
	newProber(*shared) prober
}

// prober runs one check. probe is never called concurrently with itself or
// with close, and close is called exactly once.
type prober interface {
	probe(ctx context.Context) error
	close()
}

// shared holds the buffers a Checker's probers borrow for the duration of
// one check, so that idle targets hold none.
type shared struct {
	udpBufs sync.Pool // *[]byte of udpBufSize
	readers sync.Pool // *bufio.Reader
}

func validateAddr(field string, ap netip.AddrPort, source netip.Addr) error {
	if !ap.Addr().IsValid() {
		return &ValidationError{Field: field, Reason: "must be set"}
	}
	if ap.Port() == 0 {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%v has no port", ap)}
	}
	if source.IsValid() && source.Unmap().Is4() != ap.Addr().Unmap().Is4() {
		return &ValidationError{Field: "Source", Reason: fmt.Sprintf("%v is not of the same family as %v", source, ap.Addr())}
	}
	return nil
}

func newDialer(source netip.Addr, network string) net.Dialer {
	d := net.Dialer{KeepAlive: -1}
	if source.IsValid() {
		switch network {
		case "tcp":
			d.LocalAddr = &net.TCPAddr{IP: source.AsSlice(), Zone: source.Zone()}
		case "udp":
			d.LocalAddr = &net.UDPAddr{IP: source.AsSlice(), Zone: source.Zone()}
		}
	}
	return d
}

// TCP passes when a TCP connection to Addr can be established: the
// three-way handshake of RFC 9293 completes within the timeout. It fails
// fast when the target answers with a reset (nothing listens), and times
// out when nothing answers at all.
//
// By default the connection is then aborted with a RST (SO_LINGER 0), as
// HAProxy does, so that the checker does not leave a TIME_WAIT socket
// behind per check: at 10k checks a second, TIME_WAIT sockets (60 s each on
// Linux) would otherwise pile up to hundreds of thousands and exhaust the
// ephemeral ports towards a busy backend. Set Graceful to close with a FIN
// instead, for backends that log resets as errors.
type TCP struct {
	// Addr is the address and port to connect to.
	Addr netip.AddrPort
	// Source, when set, is the local address to connect from.
	Source netip.Addr
	// Graceful closes the connection with a FIN instead of a RST.
	Graceful bool
}

func (c TCP) validate() error { return validateAddr("Addr", c.Addr, c.Source) }

func (c TCP) clone() Check { return c }

func (c TCP) same(o Check) bool { oc, ok := o.(TCP); return ok && c == oc }

func (c TCP) newProber(*shared) prober {
	return &tcpProber{addr: c.Addr.String(), graceful: c.Graceful, d: newDialer(c.Source, "tcp")}
}

type tcpProber struct {
	addr     string
	graceful bool
	d        net.Dialer
}

func (p *tcpProber) probe(ctx context.Context) error {
	conn, err := p.d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok && !p.graceful {
		_ = tc.SetLinger(0)
	}
	// The handshake completed, which is all this check asks; an error
	// closing our own socket says nothing about the target.
	_ = conn.Close()
	return nil
}

func (p *tcpProber) close() {}

// Func is a check written by the caller. It passes when it returns nil
// within the target's Timeout. It must return promptly once ctx is done
// (ctx carries the Timeout as its deadline and is also cancelled when the
// target is removed or the checker stops); Run waits for it. A Func that
// returns after the Timeout has passed fails with ErrTimeout whatever it
// returned, nil included, as every check does.
//
// Go cannot compare functions, so Update always takes a Func check for a
// new one and uses it from the next check on; the target keeps its state,
// and a Func has no connection to lose.
type Func func(ctx context.Context) error

func (f Func) clone() Check { return f }

func (f Func) same(Check) bool { return false }

func (f Func) validate() error {
	if f == nil {
		return &ValidationError{Reason: "must not be a nil function"}
	}
	return nil
}

// newProber returns a pointer: probers are compared by identity.
func (f Func) newProber(*shared) prober { return &funcProber{f} }

type funcProber struct{ f Func }

func (p *funcProber) probe(ctx context.Context) error { return p.f(ctx) }
func (p *funcProber) close()                          {}
