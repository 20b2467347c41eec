package arp

import "net"

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
