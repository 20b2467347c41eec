package arp

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
)

// FakeConn is an in-memory MulticastConn and LinkConn for tests without
// root: frames passed to Inject are read by the Announcer as if they had
// arrived on the wire, frames the Announcer writes are kept in order for
// Next and Written, and SetLink plays the interface going down, coming up
// or being deleted. It applies no socket filter, so the Announcer's own
// checks are what decides. It is safe for concurrent use.
type FakeConn struct {
	mu       sync.Mutex
	in       [][]byte
	readErr  error
	writeErr error
	out      []Written
	groups   map[string]int
	link     LinkState
	states   chan LinkState
	closed   bool
	changed  chan struct{} // closed and replaced on every change
}

// Written is a frame written to a FakeConn.
type Written struct {
	// Frame is the whole Ethernet frame.
	Frame []byte
	// To is the destination MAC address passed to WriteTo.
	To net.HardwareAddr
	// At is when WriteTo was called.
	At time.Time
}

var (
	_ MulticastConn = (*FakeConn)(nil)
	_ LinkConn      = (*FakeConn)(nil)
)

// fakeLinkQueue is how many link states SetLink queues for the reader of
// LinkStates.
const fakeLinkQueue = 16

// NewFakeConn returns an open FakeConn whose link is up.
func NewFakeConn() *FakeConn {
	return &FakeConn{groups: map[string]int{}, link: LinkUp, states: make(chan LinkState, fakeLinkQueue), changed: make(chan struct{})}
}

// notifyLocked wakes everything waiting for a change; c.mu must be held.
func (c *FakeConn) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Inject queues a copy of frame to be read. It returns net.ErrClosed after
// Close.
func (c *FakeConn) Inject(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.in = append(c.in, slices.Clone(frame))
	c.notifyLocked()
	return nil
}

// FailRead makes the next ReadFrom, once the injected frames are read,
// return err, as a socket whose interface vanished does.
func (c *FakeConn) FailRead(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readErr = err
	c.notifyLocked()
}

// FailWrites makes every later WriteTo return err; nil makes writes succeed
// again.
func (c *FakeConn) FailWrites(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeErr = err
}

// ReadFrom blocks until a frame is injected, a read error is set, or the
// FakeConn is closed. The address is the frame's source MAC address.
func (c *FakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		switch {
		case len(c.in) > 0:
			f := c.in[0]
			c.in = c.in[1:]
			c.mu.Unlock()
			n := copy(b, f)
			var src net.HardwareAddr
			if len(f) >= 12 {
				src = slices.Clone(net.HardwareAddr(f[6:12]))
			}
			return n, &packet.Addr{HardwareAddr: src}, nil
		case c.closed:
			c.mu.Unlock()
			return 0, nil, net.ErrClosed
		case c.readErr != nil:
			err := c.readErr
			c.readErr = nil
			c.mu.Unlock()
			return 0, nil, err
		}
		wait := c.changed
		c.mu.Unlock()
		<-wait
	}
}

// WriteTo records a copy of b. Like a packet socket's, it fails with
// ENETDOWN while the link is down and with ENXIO once it is gone.
func (c *FakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return 0, net.ErrClosed
	case c.writeErr != nil:
		return 0, c.writeErr
	case c.link == LinkDown:
		return 0, &net.OpError{Op: "write", Net: "packet", Err: os.NewSyscallError("sendto", syscall.ENETDOWN)}
	case c.link == LinkGone:
		return 0, &net.OpError{Op: "write", Net: "packet", Err: os.NewSyscallError("sendto", syscall.ENXIO)}
	}
	w := Written{Frame: slices.Clone(b), At: time.Now()}
	if pa, ok := addr.(*packet.Addr); ok {
		w.To = slices.Clone(pa.HardwareAddr)
	}
	c.out = append(c.out, w)
	c.notifyLocked()
	return len(b), nil
}

// Written returns every frame written so far, in order.
func (c *FakeConn) Written() []Written {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.out)
}

// Next waits until more than n frames have been written and returns frame
// number n (counted from 0), or ctx's error.
func (c *FakeConn) Next(ctx context.Context, n int) (Written, error) {
	for {
		c.mu.Lock()
		if len(c.out) > n {
			w := c.out[n]
			c.mu.Unlock()
			return w, nil
		}
		wait := c.changed
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return Written{}, ctx.Err()
		}
	}
}

// JoinGroup records a membership of the multicast group mac.
func (c *FakeConn) JoinGroup(mac net.HardwareAddr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.groups[mac.String()]++
	return nil
}

// LeaveGroup drops one membership of mac.
func (c *FakeConn) LeaveGroup(mac net.HardwareAddr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups[mac.String()] == 0 {
		return &net.AddrError{Err: "not a member", Addr: mac.String()}
	}
	c.groups[mac.String()]--
	if c.groups[mac.String()] == 0 {
		delete(c.groups, mac.String())
	}
	return nil
}

// Groups returns the multicast memberships held, by MAC address as
// net.HardwareAddr.String spells it, with their counts.
func (c *FakeConn) Groups() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.groups))
	for k, v := range c.groups {
		out[k] = v
	}
	return out
}

// SetLink changes the state of the fake interface and reports it on
// LinkStates, as the connection Dial opens reports the real one's. It fails
// with net.ErrClosed after Close, and when more than 16 states wait
// unread.
func (c *FakeConn) SetLink(s LinkState) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if s < LinkUp || s > LinkGone {
		return invalid("LinkState", s.String()+" is not a link state")
	}
	select {
	case c.states <- s:
	default:
		return errors.New("arp: FakeConn: too many unread link states")
	}
	c.link = s
	return nil
}

// LinkStates returns the channel SetLink reports on; Close closes it.
func (c *FakeConn) LinkStates() <-chan LinkState { return c.states }

// Close makes ReadFrom return net.ErrClosed, closes LinkStates and drops
// every membership, as closing a socket does. It is idempotent.
func (c *FakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.groups = map[string]int{}
		close(c.states)
		c.notifyLocked()
	}
	return nil
}
