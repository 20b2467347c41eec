package arp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	ifA    = &net.Interface{Name: "lan", Index: 2, HardwareAddr: macA}
	macOth = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x03}
	vip4b  = netip.MustParseAddr("192.0.2.101")
	vip6b  = netip.MustParseAddr("2001:db8::101")
)

// fixture is an Announcer on a FakeConn with a cursor over written frames.
type fixture struct {
	t    *testing.T
	a    *Announcer
	conn *FakeConn
	seen int
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	// Registered first, so run last: after Close, nothing may be left.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	conn := NewFakeConn()
	a, err := New(ifA, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return &fixture{t: t, a: a, conn: conn}
}

// next returns the next frame the announcer writes, decoded.
func (f *fixture) next() msg {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w, err := f.conn.Next(ctx, f.seen)
	if err != nil {
		f.t.Fatalf("frame %d never written: %v", f.seen, err)
	}
	f.seen++
	return decodeMsg(f.t, w)
}

// quiet asserts that nothing more was written.
func (f *fixture) quiet() {
	f.t.Helper()
	if w := f.conn.Written(); len(w) > f.seen {
		f.t.Fatalf("unexpected frame %d: %+v", f.seen, decodeMsg(f.t, w[f.seen]))
	}
}

func (f *fixture) inject(frame []byte) {
	f.t.Helper()
	if err := f.conn.Inject(frame); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) acquire(vips ...netip.Addr) {
	f.t.Helper()
	if err := f.a.Acquire(context.Background(), vips...); err != nil {
		f.t.Fatal(err)
	}
}

type msg struct {
	w     Written
	frame Frame
	arp   *Packet
	nd    *NeighborMessage
}

func decodeMsg(t testing.TB, w Written) msg {
	t.Helper()
	f, err := ParseFrame(w.Frame)
	if err != nil {
		t.Fatalf("written frame does not decode: %v", err)
	}
	if !equalMAC(f.Destination, w.To) {
		t.Fatalf("frame to %v written to address %v", f.Destination, w.To)
	}
	m := msg{w: w, frame: f}
	switch f.EtherType {
	case EtherTypeARP:
		p, err := ParsePacket(f.Payload)
		if err != nil {
			t.Fatalf("written ARP does not decode: %v", err)
		}
		m.arp = &p
	case EtherTypeIPv6:
		n, err := ParseNeighborMessage(f.Payload)
		if err != nil {
			t.Fatalf("written IPv6 does not decode: %v", err)
		}
		if err := n.CheckReceived(); err != nil {
			t.Fatalf("written %v fails the receive checks: %v", n.Type, err)
		}
		m.nd = &n
	default:
		t.Fatalf("written frame of type %v", f.EtherType)
	}
	return m
}

func arpFrame(t testing.TB, ethDst, from net.HardwareAddr, p Packet, vlans ...VLAN) []byte {
	t.Helper()
	payload, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := Frame{Destination: ethDst, Source: from, VLANs: vlans, EtherType: EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func request(from net.HardwareAddr, sender, target netip.Addr) Packet {
	return Packet{Operation: OperationRequest, SenderHardwareAddr: from, SenderIP: sender, TargetIP: target}
}

func ndFrame(t testing.TB, ethDst, from net.HardwareAddr, m NeighborMessage) []byte {
	t.Helper()
	b, err := AppendNeighborFrame(nil, ethDst, from, &m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func solicit(from netip.Addr, target netip.Addr, lla net.HardwareAddr) NeighborMessage {
	return NeighborMessage{Type: TypeNeighborSolicitation, Source: from, Destination: SolicitedNodeMulticast(target),
		HopLimit: 255, Target: target, LinkLayerAddr: lla}
}

func TestAcquireSendsBurstThenStops(t *testing.T) {
	const interval = 40 * time.Millisecond
	f := newFixture(t, Config{AnnounceCount: 3, AnnounceInterval: interval})
	f.acquire(vip4, vip6)
	// The first announcement of each VIP is written before Acquire returns.
	if n := len(f.conn.Written()); n != 2 {
		t.Fatalf("%d frames written by Acquire, want 2", n)
	}
	last := map[netip.Addr]time.Time{}
	count := map[netip.Addr]int{}
	for range 6 {
		m := f.next()
		var ip netip.Addr
		switch {
		case m.arp != nil:
			p := m.arp
			if p.Operation != OperationRequest || !p.IsGratuitous() || p.SenderIP != vip4 ||
				!equalMAC(p.SenderHardwareAddr, macA) || !isZeroMAC(p.TargetHardwareAddr) || !equalMAC(m.frame.Destination, broadcastMAC) {
				t.Fatalf("not an RFC 5227 announcement of %v: %+v to %v", vip4, p, m.frame.Destination)
			}
			ip = p.SenderIP
		case m.nd != nil:
			n := m.nd
			if n.Type != TypeNeighborAdvertisement || n.Target != vip6 || n.Source != vip6 || !n.Override || n.Solicited ||
				n.Destination != netip.MustParseAddr("ff02::1") || !equalMAC(n.LinkLayerAddr, macA) ||
				m.frame.Destination.String() != "33:33:00:00:00:01" {
				t.Fatalf("not an unsolicited advertisement of %v: %+v to %v", vip6, n, m.frame.Destination)
			}
			ip = n.Target
		}
		if prev, ok := last[ip]; ok {
			if gap := m.w.At.Sub(prev); gap < interval*9/10 {
				t.Errorf("announcements of %v %v apart, want about %v", ip, gap, interval)
			}
		}
		last[ip] = m.w.At
		count[ip]++
	}
	if count[vip4] != 3 || count[vip6] != 3 {
		t.Fatalf("announcements per VIP = %v, want 3 each", count)
	}
	time.Sleep(4 * interval)
	f.quiet()
	if s := f.a.Stats(); s.Announcements != 6 {
		t.Fatalf("Stats.Announcements = %d", s.Announcements)
	}
}

func TestGratuitousFormsSent(t *testing.T) {
	for _, tt := range []struct {
		form GratuitousForm
		ops  []Operation
	}{
		{GratuitousRequest, []Operation{OperationRequest}},
		{GratuitousReply, []Operation{OperationReply}},
		{GratuitousBoth, []Operation{OperationRequest, OperationReply}},
	} {
		t.Run(tt.form.String(), func(t *testing.T) {
			f := newFixture(t, Config{AnnounceCount: 1, GratuitousARP: tt.form})
			f.acquire(vip4)
			for _, op := range tt.ops {
				m := f.next()
				// The request form's target MAC is zero, the reply form's
				// is the sender's own.
				tha := make(net.HardwareAddr, 6)
				if op == OperationReply {
					tha = macA
				}
				want := Packet{Operation: op, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: tha, TargetIP: vip4}
				if m.arp == nil || !packetsEqual(*m.arp, want) || !equalMAC(m.frame.Destination, broadcastMAC) {
					t.Fatalf("got %+v to %v, want %+v to broadcast", m.arp, m.frame.Destination, want)
				}
			}
			f.quiet()
		})
	}
}

func TestReannounce(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 2, AnnounceInterval: 10 * time.Millisecond, ReannounceInterval: MinReannounceInterval})
	f.acquire(vip4)
	var at []time.Time
	for range 5 {
		m := f.next()
		if m.arp == nil || m.arp.SenderIP != vip4 {
			t.Fatalf("unexpected %+v", m)
		}
		at = append(at, m.w.At)
	}
	if gap := at[1].Sub(at[0]); gap >= MinReannounceInterval {
		t.Errorf("burst gap %v", gap)
	}
	for i := 2; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < MinReannounceInterval*9/10 {
			t.Errorf("re-announcement %d came %v after the previous one, want about %v", i, gap, MinReannounceInterval)
		}
	}
	// Release stops re-announcing.
	if err := f.a.Release(vip4); err != nil {
		t.Fatal(err)
	}
	n := len(f.conn.Written())
	time.Sleep(MinReannounceInterval * 3 / 2)
	if m := len(f.conn.Written()); m != n {
		t.Fatalf("%d frames after Release", m-n)
	}
}

func TestAnswersARPForOwnedVIPsOnly(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4)
	f.next() // the announcement

	// Frames that must get no answer, each followed by a sentinel request
	// that must: frames are handled in order, so the next frame written
	// answering the sentinel proves the one before was dropped.
	ignored := []struct {
		name  string
		frame []byte
	}{
		{"request for an IP not owned", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4b))},
		{"request tagged for VLAN 5", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4), VLAN{ID: 5})},
		{"request unicast to another MAC", arpFrame(t, macOth, macC, request(macC, client, vip4))},
		{"request from our own MAC", arpFrame(t, broadcastMAC, macA, request(macA, client, vip4))},
		{"reply about the VIP", arpFrame(t, broadcastMAC, macC, ReplyTo(&Packet{SenderHardwareAddr: macA, SenderIP: vip4, TargetIP: vip4}, macC))},
		{"gratuitous request of another IP", arpFrame(t, broadcastMAC, macC, GratuitousARP(macC, client, OperationRequest))},
		{"truncated ARP", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4))[:30]},
		{"ARP for IPv6", func() []byte {
			b := arpFrame(t, broadcastMAC, macC, request(macC, client, vip4))
			b[16], b[17] = 0x86, 0xdd
			return b
		}()},
		{"802.3 frame", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0, 3, 0xaa, 0xaa, 3}},
		{"IPv4 packet", mustFrame(t, macA, EtherTypeIPv4, make([]byte, 40))},
	}
	sentinel := request(macC, client, vip4)
	for i, tt := range ignored {
		f.inject(tt.frame)
		f.inject(arpFrame(t, broadcastMAC, macC, sentinel))
		m := f.next()
		if m.arp == nil || m.arp.Operation != OperationReply || m.arp.TargetIP != client {
			t.Fatalf("%s: answered with %+v", tt.name, m)
		}
		if s := f.a.Stats(); s.ARPReplies != uint64(i+1) {
			t.Fatalf("%s: %d replies after %d sentinels", tt.name, s.ARPReplies, i+1)
		}
	}
	s := f.a.Stats()
	if s.Received != uint64(2*len(ignored)) || s.Malformed != 1 || s.Ignored != uint64(len(ignored)-1) {
		t.Fatalf("stats %+v", s)
	}
}

func TestARPReplyFields(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4, vip4b)
	f.next()
	f.next()
	for _, tt := range []struct {
		name   string
		frame  []byte
		wantTo net.HardwareAddr
		want   Packet
	}{
		{"broadcast request", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4)), macC,
			Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: macC, TargetIP: client}},
		{"unicast refresh to our MAC", arpFrame(t, macA, macC, request(macC, client, vip4b)), macC,
			Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4b, TargetHardwareAddr: macC, TargetIP: client}},
		// RFC 5227 probe: sender IP 0.0.0.0; the answer defends the VIP.
		{"probe", arpFrame(t, broadcastMAC, macC, request(macC, netip.IPv4Unspecified(), vip4)), macC,
			Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: macC, TargetIP: netip.IPv4Unspecified()}},
		// A priority-tagged frame (VLAN 0) belongs to the untagged LAN.
		{"priority-tagged request", arpFrame(t, broadcastMAC, macC, request(macC, client, vip4), VLAN{Priority: 6}), macC,
			Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: macC, TargetIP: client}},
		// A sender hardware address of zero: answer the frame's source.
		{"zero sender MAC", arpFrame(t, broadcastMAC, macC, request(make(net.HardwareAddr, 6), client, vip4)), macC,
			Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: make(net.HardwareAddr, 6), TargetIP: client}},
	} {
		f.inject(tt.frame)
		m := f.next()
		if m.arp == nil || !packetsEqual(*m.arp, tt.want) || !equalMAC(m.frame.Destination, tt.wantTo) ||
			!equalMAC(m.frame.Source, macA) || len(m.frame.VLANs) != 0 {
			t.Errorf("%s: got %+v to %v, want %+v to %v", tt.name, m.arp, m.frame.Destination, tt.want, tt.wantTo)
		}
	}
}

func TestIPv6ConflictDetected(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip6)
	f.next()
	allNodesMAC := IPv6MulticastMAC(allNodes)
	noTLLA := UnsolicitedAdvertisement(macOth, vip6)
	noTLLA.LinkLayerAddr = nil
	for _, tt := range []struct {
		name     string
		frame    []byte
		conflict bool
	}{
		{"another MAC advertises the VIP", ndFrame(t, allNodesMAC, macOth, UnsolicitedAdvertisement(macOth, vip6)), true},
		{"without target link-layer address, from another MAC", ndFrame(t, allNodesMAC, macOth, noTLLA), true},
		{"another MAC advertises an address not owned", ndFrame(t, allNodesMAC, macOth, UnsolicitedAdvertisement(macOth, vip6b)), false},
		{"relayed advertisement with our MAC", ndFrame(t, allNodesMAC, macOth, UnsolicitedAdvertisement(macA, vip6)), false},
	} {
		before := f.a.Stats()
		f.inject(tt.frame)
		f.inject(ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6)), macC, solicit(clnt6, vip6, macC)))
		if m := f.next(); m.nd == nil || m.nd.Type != TypeNeighborAdvertisement || !m.nd.Solicited {
			t.Fatalf("%s: the sentinel got %+v", tt.name, m)
		}
		s := f.a.Stats()
		if got := s.Conflicts - before.Conflicts; got != map[bool]uint64{true: 1}[tt.conflict] {
			t.Errorf("%s: %d conflicts", tt.name, got)
		}
		if s.NeighborAdvertisements != before.NeighborAdvertisements+1 || s.Malformed != 0 {
			t.Errorf("%s: answered or malformed: %+v", tt.name, s)
		}
	}
}

func TestConflictDetected(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4)
	f.next()
	f.inject(arpFrame(t, broadcastMAC, macOth, GratuitousARP(macOth, vip4, OperationRequest)))
	f.inject(arpFrame(t, broadcastMAC, macC, request(macC, client, vip4)))
	f.next()
	if s := f.a.Stats(); s.Conflicts != 1 || s.ARPReplies != 1 {
		t.Fatalf("stats %+v: another host's announcement of the VIP is a conflict and gets no answer", s)
	}
}

func TestAnswersNeighborSolicitations(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip6)
	f.next()
	snmMAC := IPv6MulticastMAC(SolicitedNodeMulticast(vip6))
	allNodesMAC := IPv6MulticastMAC(allNodes)

	type want struct {
		to        net.HardwareAddr
		dst       netip.Addr
		solicited bool
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  want
	}{
		{"multicast solicitation", ndFrame(t, snmMAC, macC, solicit(clnt6, vip6, macC)), want{macC, clnt6, true}},
		{"unicast NUD probe without SLLA", ndFrame(t, macA, macC, func() NeighborMessage {
			m := solicit(clnt6, vip6, nil)
			m.Destination = vip6
			return m
		}()), want{macC, clnt6, true}},
		{"duplicate address detection", ndFrame(t, snmMAC, macC, solicit(netip.IPv6Unspecified(), vip6, nil)), want{allNodesMAC, allNodes, false}},
		{"priority-tagged", func() []byte {
			payload := mustNS(t, solicit(clnt6, vip6, macC))
			b, _ := (&Frame{Destination: snmMAC, Source: macC, VLANs: []VLAN{{Priority: 3}}, EtherType: EtherTypeIPv6, Payload: payload}).MarshalBinary()
			return b
		}(), want{macC, clnt6, true}},
	} {
		f.inject(tt.frame)
		m := f.next()
		n := m.nd
		if n == nil || n.Type != TypeNeighborAdvertisement || n.Target != vip6 || n.Source != vip6 || !n.Override || n.Router ||
			n.Solicited != tt.want.solicited || n.Destination != tt.want.dst || !equalMAC(n.LinkLayerAddr, macA) ||
			!equalMAC(m.frame.Destination, tt.want.to) || n.HopLimit != 255 {
			t.Errorf("%s: got %+v to %v, want %+v", tt.name, n, m.frame.Destination, tt.want)
		}
	}
	if s := f.a.Stats(); s.NeighborAdvertisements != 4 {
		t.Fatalf("stats %+v", s)
	}

	offLink := solicit(clnt6, vip6, macC)
	offLink.HopLimit = 64
	badSum := ndFrame(t, snmMAC, macC, solicit(clnt6, vip6, macC))
	badSum[EthernetHeaderLen+42] ^= 0x55
	wrongGroup := solicit(clnt6, vip6, macC)
	wrongGroup.Destination = SolicitedNodeMulticast(vip6b)
	ignored := []struct {
		name      string
		frame     []byte
		malformed bool
	}{
		{"not owned", ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6b)), macC, solicit(clnt6, vip6b, macC)), false},
		{"hop limit 64", ndFrame(t, snmMAC, macC, offLink), true},
		{"multicast source", ndFrame(t, snmMAC, macC, solicit(allNodes, vip6, macC)), true},
		{"bad checksum", badSum, true},
		{"destination is another group", ndFrame(t, IPv6MulticastMAC(wrongGroup.Destination), macC, wrongGroup), false},
		{"Ethernet destination of another group", ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6b)), macC, solicit(clnt6, vip6, macC)), false},
		{"advertisement", ndFrame(t, allNodesMAC, macC, UnsolicitedAdvertisement(macC, vip6)), false},
		{"tagged VLAN 7", func() []byte {
			payload := mustNS(t, solicit(clnt6, vip6, macC))
			b, _ := (&Frame{Destination: snmMAC, Source: macC, VLANs: []VLAN{{ID: 7}}, EtherType: EtherTypeIPv6, Payload: payload}).MarshalBinary()
			return b
		}(), false},
	}
	before := f.a.Stats()
	sentinel := ndFrame(t, snmMAC, macC, solicit(clnt6, vip6, macC))
	malformed := 0
	for i, tt := range ignored {
		f.inject(tt.frame)
		f.inject(sentinel)
		if m := f.next(); m.nd == nil || m.nd.Destination != clnt6 {
			t.Fatalf("%s: answered with %+v", tt.name, m)
		}
		if s := f.a.Stats(); s.NeighborAdvertisements != before.NeighborAdvertisements+uint64(i+1) {
			t.Fatalf("%s: answered (stats %+v)", tt.name, s)
		}
		if tt.malformed {
			malformed++
		}
	}
	if s := f.a.Stats(); s.Malformed != uint64(malformed) {
		t.Fatalf("Malformed = %d, want %d", s.Malformed, malformed)
	}
}

func TestReleaseStopsAnsweringAtOnce(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4, vip6)
	f.next()
	f.next()
	req := arpFrame(t, broadcastMAC, macC, request(macC, client, vip4))
	// Keep requests for vip4 coming while it is released.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				if f.conn.Inject(req) != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	for f.a.Stats().ARPReplies < 20 {
		time.Sleep(time.Millisecond)
	}
	if err := f.a.Release(vip4); err != nil {
		t.Fatal(err)
	}
	mark := len(f.conn.Written())
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-done
	// A sentinel for the VIP still owned: once it is answered, every
	// request injected before it has been handled.
	f.inject(ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(vip6)), macC, solicit(clnt6, vip6, macC)))
	written := f.conn.Written()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for {
		w, err := f.conn.Next(ctx, len(written))
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, w)
		if decodeMsg(t, w).nd != nil {
			break
		}
	}
	for i, w := range written[mark:] {
		if m := decodeMsg(t, w); m.arp != nil {
			t.Fatalf("frame %d after Release returned is an ARP reply for the released VIP: %+v", mark+i, m.arp)
		}
	}
	if got := f.a.Owned(); !slices.Equal(got, []netip.Addr{vip6}) {
		t.Fatalf("Owned = %v", got)
	}
}

func TestSolicitedNodeGroups(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	twin := netip.MustParseAddr("2001:db8:1::100") // same last 24 bits as vip6
	f.acquire(vip4, vip6, twin)
	if g := f.conn.Groups(); len(g) != 1 || g["33:33:ff:00:01:00"] != 2 {
		t.Fatalf("groups %v, want 33:33:ff:00:01:00 twice", g)
	}
	if err := f.a.Release(vip6); err != nil {
		t.Fatal(err)
	}
	if g := f.conn.Groups(); g["33:33:ff:00:01:00"] != 1 {
		t.Fatalf("groups %v after one release", g)
	}
	if err := f.a.Release(twin, vip4); err != nil {
		t.Fatal(err)
	}
	if g := f.conn.Groups(); len(g) != 0 {
		t.Fatalf("groups %v after releasing all", g)
	}
}

func TestAcquireIsIdempotentAndAnnounceSendsNow(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4)
	f.next()
	f.acquire(vip4, vip4)
	f.quiet()
	if err := f.a.Announce(context.Background(), vip4); err != nil {
		t.Fatal(err)
	}
	if m := f.next(); m.arp == nil || !m.arp.IsGratuitous() {
		t.Fatalf("Announce sent %+v", m)
	}
	err := f.a.Announce(context.Background(), vip4, vip6)
	if !errors.Is(err, ErrNotOwned) {
		t.Fatalf("Announce of an unowned VIP: %v", err)
	}
	f.quiet()
}

func TestValidation(t *testing.T) {
	f := newFixture(t, Config{})
	for _, tt := range []struct {
		ip    netip.Addr
		field string
	}{
		{netip.Addr{}, "vips[1]"},
		{netip.MustParseAddr("::ffff:192.0.2.100"), "vips[1]"},
		{netip.MustParseAddr("fe80::1%lan"), "vips[1]"},
		{netip.MustParseAddr("224.0.0.1"), "vips[1]"},
		{netip.MustParseAddr("ff02::1"), "vips[1]"},
		{netip.MustParseAddr("0.0.0.0"), "vips[1]"},
		{netip.MustParseAddr("::"), "vips[1]"},
		{netip.MustParseAddr("127.0.0.1"), "vips[1]"},
		{netip.MustParseAddr("255.255.255.255"), "vips[1]"},
	} {
		err := f.a.Acquire(context.Background(), vip4, tt.ip)
		var ve *ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("Acquire(%v): %v", tt.ip, err)
		}
		if err := f.a.Release(vip4, tt.ip); !errors.Is(err, ErrInvalid) {
			t.Errorf("Release(%v): %v", tt.ip, err)
		}
	}
	if len(f.a.Owned()) != 0 || len(f.conn.Written()) != 0 {
		t.Fatal("a rejected Acquire left state or sent frames")
	}

	for _, tt := range []struct {
		cfg   Config
		field string
	}{
		{Config{AnnounceCount: -1}, "Config.AnnounceCount"},
		{Config{AnnounceCount: MaxAnnounceCount + 1}, "Config.AnnounceCount"},
		{Config{AnnounceInterval: -time.Second}, "Config.AnnounceInterval"},
		{Config{ReannounceInterval: time.Millisecond}, "Config.ReannounceInterval"},
		{Config{GratuitousARP: 7}, "Config.GratuitousARP"},
	} {
		_, err := New(ifA, NewFakeConn(), tt.cfg)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("New(%+v): %v", tt.cfg, err)
		}
	}
	if _, err := New(nil, NewFakeConn(), Config{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil interface: %v", err)
	}
	if _, err := New(&net.Interface{Name: "ib0", HardwareAddr: make(net.HardwareAddr, 20)}, NewFakeConn(), Config{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("InfiniBand interface: %v", err)
	}
	if _, err := New(ifA, nil, Config{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil conn: %v", err)
	}
}

func TestAcquireKeepsVIPsWhenFirstSendFails(t *testing.T) {
	const interval = 20 * time.Millisecond
	f := newFixture(t, Config{AnnounceCount: 2, AnnounceInterval: interval})
	f.conn.FailWrites(errors.New("no buffer space"))
	if err := f.a.Acquire(context.Background(), vip6, vip4); err != nil {
		t.Fatalf("Acquire = %v: a failed send must not undo the acquisition", err)
	}
	if got := f.a.Owned(); !slices.Equal(got, []netip.Addr{vip4, vip6}) || len(f.conn.Groups()) != 1 {
		t.Fatalf("owned %v, groups %v", got, f.conn.Groups())
	}
	// The retries fail too, AnnounceInterval apart.
	deadline := time.Now().Add(3 * time.Second)
	for f.a.Stats().WriteErrors < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("failed announcements not retried: %+v", f.a.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	f.conn.FailWrites(nil)
	// Failed sends do not count: each VIP still gets its burst of 2.
	count := map[netip.Addr]int{}
	for range 4 {
		m := f.next()
		switch {
		case m.arp != nil:
			count[m.arp.SenderIP]++
		case m.nd != nil:
			count[m.nd.Target]++
		}
	}
	if count[vip4] != 2 || count[vip6] != 2 {
		t.Fatalf("announcements %v, want 2 per VIP", count)
	}
	time.Sleep(5 * interval)
	f.quiet()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.a.Acquire(ctx, vip4b); !errors.Is(err, context.Canceled) || slices.Contains(f.a.Owned(), vip4b) {
		t.Fatalf("Acquire with a cancelled context = %v, owned %v", err, f.a.Owned())
	}
}

// waitDone waits until the Announcer stops.
func waitDone(t testing.TB, a *Announcer) {
	t.Helper()
	select {
	case <-a.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("Done is still open")
	}
}

// waitLinkDown waits until the Announcer has taken in a LinkDown state.
func waitLinkDown(t *testing.T, a *Announcer, down bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		a.mu.RLock()
		got := a.linkDown
		a.mu.RUnlock()
		if got == down {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link down = %v, want %v", got, down)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLinkDownPausesAndUpAnnouncesAgain(t *testing.T) {
	const interval = 20 * time.Millisecond
	f := newFixture(t, Config{AnnounceCount: 2, AnnounceInterval: interval})
	f.acquire(vip4, vip6)
	for range 4 {
		f.next()
	}
	if err := f.conn.SetLink(LinkDown); err != nil {
		t.Fatal(err)
	}
	waitLinkDown(t, f.a, true)
	// A VIP acquired while the link is down is owned at once and waits.
	f.acquire(vip4b)
	time.Sleep(5 * interval)
	f.quiet()
	if s := f.a.Stats(); s.WriteErrors != 0 {
		t.Fatalf("%d writes tried while the link was down", s.WriteErrors)
	}
	// Down again changes nothing; up starts a new burst for every VIP.
	if err := f.conn.SetLink(LinkDown); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.SetLink(LinkUp); err != nil {
		t.Fatal(err)
	}
	count := map[netip.Addr]int{}
	for range 6 {
		m := f.next()
		switch {
		case m.arp != nil && m.arp.IsGratuitous():
			count[m.arp.SenderIP]++
		case m.nd != nil && m.nd.Type == TypeNeighborAdvertisement && !m.nd.Solicited:
			count[m.nd.Target]++
		default:
			t.Fatalf("not an announcement: %+v", m)
		}
	}
	if count[vip4] != 2 || count[vip6] != 2 || count[vip4b] != 2 {
		t.Fatalf("announcements after the link came up: %v, want 2 per VIP", count)
	}
	time.Sleep(5 * interval)
	f.quiet()
	// Up while up: nothing.
	if err := f.conn.SetLink(LinkUp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * interval)
	f.quiet()
}

func TestInterfaceGoneStops(t *testing.T) {
	enxio := &net.OpError{Op: "write", Net: "packet", Err: os.NewSyscallError("sendto", syscall.ENXIO)}
	for _, tt := range []struct {
		name string
		kill func(f *fixture)
	}{
		{"link state", func(f *fixture) {
			if err := f.conn.SetLink(LinkGone); err != nil {
				f.t.Fatal(err)
			}
		}},
		{"write fails with ENXIO", func(f *fixture) {
			f.conn.FailWrites(enxio)
			if err := f.a.Announce(context.Background(), vip4); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrInterfaceGone) {
				f.t.Errorf("Announce = %v", err)
			}
		}},
		{"answer fails with ENXIO", func(f *fixture) {
			f.conn.FailWrites(enxio)
			f.inject(arpFrame(f.t, broadcastMAC, macC, request(macC, client, vip4)))
		}},
		{"read fails with ENODEV", func(f *fixture) {
			f.conn.FailRead(&net.OpError{Op: "read", Net: "packet", Err: os.NewSyscallError("recvfrom", syscall.ENODEV)})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{AnnounceCount: 1, ReannounceInterval: MinReannounceInterval})
			f.acquire(vip4, vip6)
			f.next()
			f.next()
			tt.kill(f)
			waitDone(t, f.a)
			if err := f.a.Err(); !errors.Is(err, ErrInterfaceGone) {
				t.Fatalf("Err = %v, want ErrInterfaceGone", err)
			}
			if got := f.a.Owned(); len(got) != 0 {
				t.Fatalf("a stopped Announcer owns %v", got)
			}
			if err := f.a.Acquire(context.Background(), vip4b); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrInterfaceGone) {
				t.Fatalf("Acquire after the interface is gone = %v", err)
			}
			// Nothing more is tried: no re-announcement, no write error.
			writeErrors := f.a.Stats().WriteErrors
			time.Sleep(MinReannounceInterval * 3 / 2)
			if s := f.a.Stats(); s.WriteErrors != writeErrors || len(f.conn.Written()) != 2 {
				t.Fatalf("stats %+v, %d frames after the interface went", s, len(f.conn.Written()))
			}
			if err := f.a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := f.a.Err(); !errors.Is(err, ErrInterfaceGone) {
				t.Fatalf("Err after Close = %v", err)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	f := newFixture(t, Config{AnnounceCount: 1})
	f.acquire(vip4)
	f.next()
	// An interface going down is reported once and is not fatal.
	f.conn.FailRead(syscall.ENETDOWN)
	f.inject(arpFrame(t, broadcastMAC, macC, request(macC, client, vip4)))
	if m := f.next(); m.arp == nil || m.arp.Operation != OperationReply {
		t.Fatalf("after ENETDOWN: %+v", m)
	}
	select {
	case <-f.a.Done():
		t.Fatal("stopped on ENETDOWN")
	default:
	}
	// Any other read error stops the announcer.
	boom := errors.New("device vanished")
	f.conn.FailRead(boom)
	waitDone(t, f.a)
	if err := f.a.Err(); !errors.Is(err, boom) {
		t.Fatalf("Err = %v", err)
	}
	if err := f.a.Acquire(context.Background(), vip4b); !errors.Is(err, ErrClosed) || !errors.Is(err, boom) {
		t.Fatalf("Acquire after failure = %v", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t)
	conn := NewFakeConn()
	a, err := New(ifA, conn, Config{ReannounceInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), vip4, vip6); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.Err(), ErrClosed) || len(a.Owned()) != 0 || len(conn.Groups()) != 0 {
		t.Fatalf("after Close: err %v, owned %v, groups %v", a.Err(), a.Owned(), conn.Groups())
	}
	if err := a.Acquire(context.Background(), vip4); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close = %v", err)
	}
	if got := a.Interface(); got.Name != "lan" || !equalMAC(got.HardwareAddr, macA) {
		t.Fatalf("Interface = %+v", got)
	}
}

// TestLinkDownAtNew: a link the connection already reports down when New
// runs is down for an Acquire right after New: nothing is tried until it
// comes up, and then the burst goes out.
func TestLinkDownAtNew(t *testing.T) {
	defer goleak.VerifyNone(t)
	for i := range 20 {
		conn := NewFakeConn()
		if err := conn.SetLink(LinkDown); err != nil {
			t.Fatal(err)
		}
		a, err := New(ifA, conn, Config{AnnounceCount: 2, AnnounceInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Acquire(context.Background(), vip4, vip6); err != nil {
			t.Fatal(err)
		}
		if s := a.Stats(); s.WriteErrors != 0 || s.Announcements != 0 {
			a.Close()
			t.Fatalf("run %d: stats %+v: nothing may be tried while the link is down", i, s)
		}
		if err := conn.SetLink(LinkUp); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = conn.Next(ctx, 3) // the burst: 2 per VIP
		cancel()
		if err != nil {
			t.Fatalf("run %d: no burst after the link came up: %v (stats %+v)", i, err, a.Stats())
		}
		if s := a.Stats(); s.WriteErrors != 0 {
			t.Fatalf("run %d: stats %+v", i, s)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
