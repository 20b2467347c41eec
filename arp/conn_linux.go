package arp

import (
	"fmt"
	"net"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Dial opens an AF_PACKET socket on ifi with the package's socket filter
// (see Filter) attached before the socket is bound, and returns an Announcer
// that owns it. It needs CAP_NET_RAW in the network namespace of ifi.
func Dial(ifi *net.Interface, cfg Config) (*Announcer, error) {
	if err := validateIface(ifi); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	filter, err := Filter()
	if err != nil {
		return nil, fmt.Errorf("arp: assemble socket filter: %w", err)
	}
	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("arp: open packet socket on %s: %w", ifi.Name, err)
	}
	a, err := New(ifi, &socketConn{Conn: pc, ifindex: ifi.Index}, cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return a, nil
}

// socketConn adds link-layer multicast membership (PACKET_ADD_MEMBERSHIP
// with PACKET_MR_MULTICAST) to a packet socket. The kernel counts
// memberships per socket and drops them when the socket closes, so a
// process that dies leaves no group behind.
type socketConn struct {
	*packet.Conn
	ifindex int
}

func (c *socketConn) JoinGroup(mac net.HardwareAddr) error {
	return c.membership(unix.PACKET_ADD_MEMBERSHIP, mac)
}

func (c *socketConn) LeaveGroup(mac net.HardwareAddr) error {
	return c.membership(unix.PACKET_DROP_MEMBERSHIP, mac)
}

func (c *socketConn) membership(opt int, mac net.HardwareAddr) error {
	mreq := unix.PacketMreq{Ifindex: int32(c.ifindex), Type: unix.PACKET_MR_MULTICAST, Alen: uint16(len(mac))}
	copy(mreq.Address[:], mac)
	rc, err := c.SyscallConn()
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
