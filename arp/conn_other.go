//go:build !linux

package arp

import (
	"context"
	"net"
)

// Dial opens AF_PACKET sockets, which only Linux has: elsewhere it fails
// with ErrNotSupported. New with a Conn of your own (or a FakeConn) works on
// every platform.
func Dial(ctx context.Context, ifi *net.Interface, cfg Config) (*Announcer, error) {
	return nil, ErrNotSupported
}
