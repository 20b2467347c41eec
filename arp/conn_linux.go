package arp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Dial opens the sockets an Announcer on ifi needs and returns an Announcer
// that owns them. Call it in the network namespace of ifi (with the calling
// goroutine's thread locked there, if it is not the process's namespace);
// it needs CAP_NET_RAW there. ctx bounds the setup, which asks the kernel
// for the link's state; the Announcer then runs until Close.
//
// Dial opens two packet sockets on ifi, one bound to ARP and one to IPv6,
// each with the package's socket filter (see Filter) attached before it is
// bound, and an rtnetlink socket subscribed to link changes, through which
// the Announcer follows the link's state (see LinkConn). Sockets bound to
// one protocol see only received frames of that protocol: the host's own
// output and its IPv4 data traffic never reach them, and its IPv6 data
// traffic is dropped by the filter in the kernel.
func Dial(ctx context.Context, ifi *net.Interface, cfg Config) (*Announcer, error) {
	if err := validateIface(ifi); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := openSocketConn(ctx, ifi)
	if err != nil {
		return nil, err
	}
	a, err := newAnnouncer(ifi, c, []reader{c.arp, c.ip6}, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return a, nil
}

// socketConn is the connection Dial opens: a packet socket per protocol,
// link-layer multicast membership (PACKET_ADD_MEMBERSHIP with
// PACKET_MR_MULTICAST, which the kernel counts per socket and drops when
// the socket closes, so a process that dies leaves no group behind), and
// the link's state from rtnetlink.
type socketConn struct {
	ifindex  int
	arp, ip6 *packet.Conn
	nl       *netlink.Conn
	states   chan LinkState
	done     chan struct{}
	wg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

func openSocketConn(ctx context.Context, ifi *net.Interface) (c *socketConn, err error) {
	filter, err := Filter(ifi.Index)
	if err != nil {
		return nil, err
	}
	c = &socketConn{ifindex: ifi.Index, states: make(chan LinkState, 1), done: make(chan struct{})}
	defer func() {
		if err != nil {
			c.closeAll()
		}
	}()
	// Subscribe before asking for the link's state, so that no change
	// after the answer is missed.
	if c.nl, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK}); err != nil {
		return nil, fmt.Errorf("arp: rtnetlink socket for %s: %w", ifi.Name, err)
	}
	for _, s := range []struct {
		conn  **packet.Conn
		proto int
	}{{&c.arp, unix.ETH_P_ARP}, {&c.ip6, unix.ETH_P_IPV6}} {
		if *s.conn, err = packet.Listen(ifi, packet.Raw, s.proto, &packet.Config{Filter: filter}); err != nil {
			return nil, fmt.Errorf("arp: open packet socket on %s: %w", ifi.Name, err)
		}
	}
	state, err := c.initialState(ctx)
	if err != nil {
		return nil, fmt.Errorf("arp: state of %s: %w", ifi.Name, err)
	}
	if state == LinkGone {
		return nil, fmt.Errorf("%w: %s (index %d)", ErrInterfaceGone, ifi.Name, ifi.Index)
	}
	c.states <- state
	c.wg.Add(1)
	go c.watch(state)
	return c, nil
}

// queryLink asks for the link's state; the answer arrives on the
// subscribed socket, in order with the notifications.
func (c *socketConn) queryLink() (netlink.Message, error) {
	req := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(req[4:8], uint32(c.ifindex))
	return c.nl.Send(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   req,
	})
}

// initialState asks for the link's state and waits for the answer, ctx
// permitting. Notifications that come before it are older than it.
func (c *socketConn) initialState(ctx context.Context) (LinkState, error) {
	req, err := c.queryLink()
	if err != nil {
		return 0, err
	}
	// A ctx that ends interrupts Receive through a deadline in the past.
	stop := context.AfterFunc(ctx, func() { _ = c.nl.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		msgs, err := c.nl.Receive()
		switch {
		case errors.Is(err, unix.ENODEV):
			return LinkGone, nil
		case ctx.Err() != nil:
			return 0, ctx.Err()
		case err != nil:
			return 0, err
		}
		for _, m := range msgs {
			if m.Header.Sequence != req.Header.Sequence {
				continue
			}
			if s, ok := c.linkState(m); ok {
				if !stop() {
					return 0, ctx.Err() // the deadline may be set
				}
				return s, nil
			}
		}
	}
}

// linkState returns the state an rtnetlink message says our link is in, if
// it is about our link.
func (c *socketConn) linkState(m netlink.Message) (LinkState, bool) {
	if len(m.Data) < unix.SizeofIfInfomsg || m.Data[0] != unix.AF_UNSPEC ||
		int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))) != c.ifindex {
		// AF_BRIDGE messages, for example, are about bridge ports.
		return 0, false
	}
	flags := binary.NativeEndian.Uint32(m.Data[8:12])
	switch {
	case m.Header.Type == unix.RTM_DELLINK:
		return LinkGone, true
	case m.Header.Type != unix.RTM_NEWLINK:
		return 0, false
	case flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0:
		return LinkUp, true
	}
	return LinkDown, true
}

// watch reports the link's changes until the link is gone or the socket is
// closed. When notifications were lost (ENOBUFS), it asks again.
func (c *socketConn) watch(last LinkState) {
	defer c.wg.Done()
	defer close(c.states)
	for {
		msgs, err := c.nl.Receive()
		switch {
		case err == nil:
		case c.closing():
			return
		case errors.Is(err, unix.ENOBUFS):
			if _, err := c.queryLink(); err != nil {
				return
			}
			continue
		case errors.Is(err, unix.ENODEV):
			c.report(LinkGone)
			return
		default:
			return
		}
		for _, m := range msgs {
			s, ok := c.linkState(m)
			if !ok || s == last {
				continue
			}
			last = s
			if !c.report(s) || s == LinkGone {
				return
			}
		}
	}
}

func (c *socketConn) report(s LinkState) bool {
	select {
	case c.states <- s:
		return true
	case <-c.done:
		return false
	}
}

func (c *socketConn) closing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *socketConn) LinkStates() <-chan LinkState { return c.states }

// WriteTo sends a frame on the socket of its EtherType, so that the kernel
// gets the right protocol for it.
func (c *socketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) >= EthernetHeaderLen && EtherType(binary.BigEndian.Uint16(b[12:14])) == EtherTypeIPv6 {
		return c.ip6.WriteTo(b, addr)
	}
	return c.arp.WriteTo(b, addr)
}

func (c *socketConn) SetWriteDeadline(t time.Time) error {
	return errors.Join(c.arp.SetWriteDeadline(t), c.ip6.SetWriteDeadline(t))
}

// JoinGroup joins on the IPv6 socket, the one that receives solicitations.
func (c *socketConn) JoinGroup(mac net.HardwareAddr) error {
	return c.membership(unix.PACKET_ADD_MEMBERSHIP, mac)
}

func (c *socketConn) LeaveGroup(mac net.HardwareAddr) error {
	return c.membership(unix.PACKET_DROP_MEMBERSHIP, mac)
}

func (c *socketConn) membership(opt int, mac net.HardwareAddr) error {
	mreq := unix.PacketMreq{Ifindex: int32(c.ifindex), Type: unix.PACKET_MR_MULTICAST, Alen: uint16(len(mac))}
	copy(mreq.Address[:], mac)
	rc, err := c.ip6.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptPacketMreq(int(fd), unix.SOL_PACKET, opt, &mreq)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("arp: multicast membership %s: %w", mac, serr)
	}
	return nil
}

// Close closes every socket, and waits until the link watcher has stopped.
func (c *socketConn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.closeAll() })
	return c.closeErr
}

func (c *socketConn) closeAll() error {
	close(c.done)
	var errs []error
	if c.arp != nil {
		errs = append(errs, c.arp.Close())
	}
	if c.ip6 != nil {
		errs = append(errs, c.ip6.Close())
	}
	if c.nl != nil {
		errs = append(errs, c.nl.Close())
	}
	c.wg.Wait()
	return errors.Join(errs...)
}
