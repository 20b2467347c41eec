package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// udpBufSize holds the largest UDP payload.
const udpBufSize = 64 << 10

// maxUDPPayload is the largest payload a UDP datagram carries over IPv4.
const maxUDPPayload = 65507

// UDP passes when a datagram carrying Payload, sent to Addr, is answered
// within the timeout by a reply that Match accepts. UDP has no handshake,
// so a reply is the only proof of life.
//
// Each check uses a new connected UDP socket (RFC 768 datagrams, with the
// socket bound to Addr by connect(2)). Connecting makes the kernel report an
// ICMP port unreachable (RFC 792 type 3 code 3, or ICMPv6 type 1 code 4)
// for the target back to the socket, so that a closed port can fail at once
// with ErrPortUnreachable instead of waiting for the timeout; and a fresh
// socket per check means a late reply to an earlier, timed-out check can
// never be taken for the answer to this one. UDP leaves nothing behind in
// the kernel when the socket closes.
//
// The fast failure is reliable on loopback only. A remote target's kernel
// rate-limits the ICMP errors it sends: Linux per destination
// (net.ipv4.icmp_ratelimit, by default one per second with a small burst;
// net.ipv6.icmp.ratelimit) and host-wide (net.ipv4.icmp_msgs_per_sec, by
// default 1000 a second), and firewalls often drop them. So checks of
// several closed ports on one host, or of a host that is busy refusing
// other traffic, mostly see no ICMP and fail with ErrTimeout instead: a
// dead UDP service is always detected, but within the Timeout, not at once.
type UDP struct {
	// Addr is the address and port to send to.
	Addr netip.AddrPort
	// Source, when set, is the local address to send from.
	Source netip.Addr
	// Payload is the datagram to send; it may be empty.
	Payload []byte
	// Match judges the first reply; a non-nil error fails the check with
	// ErrUnexpectedReply wrapping it. Nil accepts any reply. ReplyEquals,
	// ReplyHasPrefix and ReplyContains build common matchers. Match is
	// called from the checker's workers, possibly concurrently for
	// different targets, and must not keep reply.
	Match func(reply []byte) error
}

func (c UDP) validate() error {
	if err := validateAddr("Addr", c.Addr, c.Source); err != nil {
		return err
	}
	if len(c.Payload) > maxUDPPayload {
		return &ValidationError{Field: "Payload", Reason: fmt.Sprintf("%d bytes is larger than %d", len(c.Payload), maxUDPPayload)}
	}
	return nil
}

func (c UDP) clone() Check {
	c.Payload = bytes.Clone(c.Payload)
	return c
}

// same cannot compare Match functions: two non-nil ones count as different
// (a UDP prober holds no connection, so replacing it costs nothing).
func (c UDP) same(o Check) bool {
	oc, ok := o.(UDP)
	return ok && c.Addr == oc.Addr && c.Source == oc.Source && bytes.Equal(c.Payload, oc.Payload) &&
		c.Match == nil && oc.Match == nil
}

func (c UDP) newProber(sh *shared) prober {
	return &udpProber{
		sh:      sh,
		addr:    c.Addr.String(),
		d:       newDialer(c.Source, "udp"),
		payload: c.Payload, // a clone, never modified
		match:   c.Match,
	}
}

type udpProber struct {
	sh      *shared
	addr    string
	d       net.Dialer
	payload []byte
	match   func([]byte) error
}

func (p *udpProber) probe(ctx context.Context) error {
	conn, err := p.d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	if _, err := conn.Write(p.payload); err != nil {
		return udpError(err)
	}
	bp := p.sh.udpBuf()
	defer p.sh.udpBufs.Put(bp)
	n, err := conn.Read(*bp)
	if err != nil {
		return udpError(err)
	}
	if p.match != nil {
		if err := p.match((*bp)[:n]); err != nil {
			return fmt.Errorf("%w: %w", ErrUnexpectedReply, err)
		}
	}
	return nil
}

func (p *udpProber) close() {}

// udpError marks the error a connected UDP socket reports after an ICMP
// port unreachable.
func udpError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %w", ErrPortUnreachable, err)
	}
	return err
}

func (sh *shared) udpBuf() *[]byte {
	if bp, ok := sh.udpBufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, udpBufSize)
	return &b
}

// ReplyEquals returns a UDP matcher that accepts exactly want.
func ReplyEquals(want []byte) func([]byte) error {
	return replyMatcher(want, bytes.Equal, "is not")
}

// ReplyHasPrefix returns a UDP matcher that accepts replies starting with
// prefix.
func ReplyHasPrefix(prefix []byte) func([]byte) error {
	return replyMatcher(prefix, bytes.HasPrefix, "does not start with")
}

// ReplyContains returns a UDP matcher that accepts replies containing sub.
func ReplyContains(sub []byte) func([]byte) error {
	return replyMatcher(sub, bytes.Contains, "does not contain")
}

func replyMatcher(want []byte, ok func(reply, want []byte) bool, fails string) func([]byte) error {
	want = bytes.Clone(want)
	return func(reply []byte) error {
		if !ok(reply, want) {
			return fmt.Errorf("reply %q %s %q", truncate(reply), fails, truncate(want))
		}
		return nil
	}
}

// truncate keeps error messages short for large datagrams.
func truncate(b []byte) []byte {
	const n = 64
	if len(b) > n {
		return b[:n]
	}
	return b
}
