package arp

import (
	"fmt"
	"net"
)

// Conn is the packet connection an Announcer reads frames from and writes
// frames to: whole Ethernet frames, header included, as an AF_PACKET
// SOCK_RAW socket carries them. *packet.Conn from github.com/mdlayher/packet
// satisfies it, and so does FakeConn.
//
// ReadFrom must return an error once Close has been called, so that the
// Announcer's reader stops. WriteTo receives a *packet.Addr holding the
// frame's destination MAC address.
type Conn interface {
	ReadFrom(b []byte) (n int, addr net.Addr, err error)
	WriteTo(b []byte, addr net.Addr) (n int, err error)
	Close() error
}

// MulticastConn is implemented by a Conn that can make its interface accept
// frames sent to an Ethernet multicast address. The Announcer joins the
// solicited-node multicast group of each IPv6 VIP it owns through it, so that
// neighbour solicitations for the VIP reach it on interfaces that filter
// multicast in hardware, and leaves the group on release.
type MulticastConn interface {
	Conn
	JoinGroup(mac net.HardwareAddr) error
	LeaveGroup(mac net.HardwareAddr) error
}

// LinkState is the state of an Announcer's interface, as a LinkConn reports
// it.
type LinkState uint8

// Link states.
const (
	// LinkUp: the interface is administratively and operationally up
	// (IFF_UP and IFF_RUNNING), so frames can be sent and received.
	LinkUp LinkState = iota + 1
	// LinkDown: the interface exists but is down, administratively or for
	// lack of carrier.
	LinkDown
	// LinkGone: the interface was deleted, or moved to another network
	// namespace.
	LinkGone
)

// String returns "up", "down" or "gone".
func (s LinkState) String() string {
	switch s {
	case LinkUp:
		return "up"
	case LinkDown:
		return "down"
	case LinkGone:
		return "gone"
	}
	return fmt.Sprintf("LinkState(%d)", uint8(s))
}

// LinkConn is implemented by a Conn that reports the state of its interface.
// An Announcer on a LinkConn pauses its announcements while the link is
// down, announces every VIP it owns again (a full burst) when the link comes
// back up, and stops with ErrInterfaceGone when the interface is gone. The
// connection Dial opens is one: it follows the link through rtnetlink
// (RTM_NEWLINK and RTM_DELLINK) in the interface's network namespace.
// FakeConn is one too (see FakeConn.SetLink).
type LinkConn interface {
	Conn
	// LinkStates returns a channel that receives the interface's state
	// when it changes, and is closed when the Conn is closed or can no
	// longer tell.
	LinkStates() <-chan LinkState
}
