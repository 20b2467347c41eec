package arp_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/lbkit/lbkit/arp"
)

// Decode an ARP request as it arrives on the wire.
func ExampleParseFrame() {
	frame := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x1b, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // ARP header: Ethernet, IPv4, request
		0x02, 0x1b, 0, 0, 0, 0x01, 192, 0, 2, 1, // sender
		0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // target
	}
	f, err := arp.ParseFrame(frame)
	if err != nil {
		log.Fatal(err)
	}
	p, err := arp.ParsePacket(f.Payload)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v from %v: who has %v? tell %v\n", p.Operation, f.Source, p.TargetIP, p.SenderIP)
	// Output: request from 02:1b:00:00:00:01: who has 192.0.2.100? tell 192.0.2.1
}

// Build the two forms of gratuitous ARP and the unsolicited neighbour
// advertisement that announce a VIP.
func ExampleGratuitousARP() {
	mac := net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x02}
	for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		p := arp.GratuitousARP(mac, netip.MustParseAddr("192.0.2.100"), op)
		b, err := p.MarshalBinary()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-7v % x\n", op, b)
	}
	na := arp.UnsolicitedAdvertisement(mac, netip.MustParseAddr("2001:db8::100"))
	fmt.Printf("NA from %v to %v (MAC %v), override=%v\n", na.Source, na.Destination, arp.IPv6MulticastMAC(na.Destination), na.Override)
	// Output:
	// request 00 01 08 00 06 04 00 01 02 1b 00 00 00 02 c0 00 02 64 00 00 00 00 00 00 c0 00 02 64
	// reply   00 01 08 00 06 04 00 02 02 1b 00 00 00 02 c0 00 02 64 02 1b 00 00 00 02 c0 00 02 64
	// NA from 2001:db8::100 to ff02::1 (MAC 33:33:00:00:00:01), override=true
}

// An Announcer on a FakeConn, as a unit test without root would use it.
func ExampleNew() {
	conn := arp.NewFakeConn()
	ifi := &net.Interface{Name: "eth0", HardwareAddr: net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x02}}
	a, err := arp.New(ifi, conn, arp.Config{AnnounceCount: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if err := a.Acquire(ctx, netip.MustParseAddr("192.0.2.100")); err != nil {
		log.Fatal(err)
	}

	// A client asks for the VIP.
	client := net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x01}
	req := arp.Packet{Operation: arp.OperationRequest, SenderHardwareAddr: client,
		SenderIP: netip.MustParseAddr("192.0.2.1"), TargetIP: netip.MustParseAddr("192.0.2.100")}
	frame, err := arp.AppendARPFrame(nil, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, client, &req)
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.Inject(frame); err != nil {
		log.Fatal(err)
	}

	// Frame 0 is the announcement Acquire sent, frame 1 the answer.
	for n := range 2 {
		w, err := conn.Next(ctx, n)
		if err != nil {
			log.Fatal(err)
		}
		f, _ := arp.ParseFrame(w.Frame)
		p, _ := arp.ParsePacket(f.Payload)
		fmt.Printf("to %v: %v %v is at %v\n", f.Destination, p.Operation, p.SenderIP, p.SenderHardwareAddr)
	}
	// Output:
	// to ff:ff:ff:ff:ff:ff: request 192.0.2.100 is at 02:1b:00:00:00:02
	// to 02:1b:00:00:00:01: reply 192.0.2.100 is at 02:1b:00:00:00:02
}

// Announce two VIPs on eth0 until the process is interrupted, or until the
// Announcer stops by itself (when eth0 is deleted, say). Dial needs
// CAP_NET_RAW.
func ExampleDial() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		log.Fatal(err)
	}
	a, err := arp.Dial(ctx, ifi, arp.Config{ReannounceInterval: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	vips := []netip.Addr{netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("2001:db8::100")}
	if err := a.Acquire(ctx, vips...); err != nil {
		log.Fatal(err)
	}
	select {
	case <-ctx.Done():
		// Stop answering at once, so that the next owner's announcements
		// are the last word.
		_ = a.Release(vips...)
	case <-a.Done():
		if errors.Is(a.Err(), arp.ErrInterfaceGone) {
			log.Print("eth0 is gone; Dial again when it is back")
			return
		}
		log.Print(a.Err())
	}
}
