//go:build !linux

package arp

import (
	"fmt"
	"net"
)

// Dial opens an AF_PACKET socket, which only Linux has: elsewhere it fails
// with ErrUnsupported. New with a Conn of your own (or a FakeConn) works on
// every platform.
func Dial(ifi *net.Interface, cfg Config) (*Announcer, error) {
	return nil, fmt.Errorf("%w: AF_PACKET sockets need Linux", ErrUnsupported)
}
