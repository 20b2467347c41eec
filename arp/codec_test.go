package arp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

var (
	macA   = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x02}
	macC   = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x01}
	vip4   = netip.MustParseAddr("192.0.2.100")
	vip6   = netip.MustParseAddr("2001:db8::100")
	client = netip.MustParseAddr("192.0.2.1")
	clnt6  = netip.MustParseAddr("2001:db8::1")
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ARP request a Linux host sends for 192.0.2.100, written out by hand
// from RFC 826's field layout.
const arpRequestHex = `
	ffffffffffff 021b00000001 0806
	0001 0800 06 04 0001 021b00000001 c0000201 000000000000 c0000264
	000000000000000000000000000000000000`

func TestParseARPRequestFromWire(t *testing.T) {
	b := unhex(t, arpRequestHex)
	f, err := ParseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if !equalMAC(f.Destination, broadcastMAC) || !equalMAC(f.Source, macC) || f.EtherType != EtherTypeARP || len(f.VLANs) != 0 {
		t.Fatalf("frame = %+v", f)
	}
	p, err := ParsePacket(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := Packet{Operation: OperationRequest, SenderHardwareAddr: macC, SenderIP: client,
		TargetHardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, TargetIP: vip4}
	if !packetsEqual(p, want) {
		t.Fatalf("packet = %+v, want %+v", p, want)
	}
	if p.IsGratuitous() || p.IsProbe() {
		t.Fatal("an ordinary request reported as gratuitous or probe")
	}
	// Encoding the decoded values gives back the same bytes, padding included.
	out, err := AppendARPFrame(nil, f.Destination, f.Source, &p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("re-encoded\n%x\nwant\n%x", out, b)
	}
}

func packetsEqual(a, b Packet) bool {
	return a.Operation == b.Operation && equalMAC(a.SenderHardwareAddr, b.SenderHardwareAddr) &&
		a.SenderIP == b.SenderIP && equalMAC(a.TargetHardwareAddr, b.TargetHardwareAddr) && a.TargetIP == b.TargetIP
}

func TestGratuitousForms(t *testing.T) {
	req := GratuitousARP(macA, vip4, OperationRequest)
	b, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// RFC 5227 section 2.3: sender and target IP are the address, target
	// hardware address zero.
	if want := unhex(t, "0001 0800 0604 0001 021b00000002 c0000264 000000000000 c0000264"); !bytes.Equal(b, want) {
		t.Fatalf("request form\n%x\nwant\n%x", b, want)
	}
	rep := GratuitousARP(macA, vip4, OperationReply)
	b, err = rep.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Linux's arp_is_garp wants target hardware address == sender's in the
	// reply form.
	if want := unhex(t, "0001 0800 0604 0002 021b00000002 c0000264 021b00000002 c0000264"); !bytes.Equal(b, want) {
		t.Fatalf("reply form\n%x\nwant\n%x", b, want)
	}
	for _, p := range []Packet{req, rep} {
		if !p.IsGratuitous() {
			t.Errorf("%v form not gratuitous", p.Operation)
		}
	}
}

func TestReplyTo(t *testing.T) {
	req := Packet{Operation: OperationRequest, SenderHardwareAddr: macC, SenderIP: client, TargetIP: vip4}
	r := ReplyTo(&req, macA)
	want := Packet{Operation: OperationReply, SenderHardwareAddr: macA, SenderIP: vip4, TargetHardwareAddr: macC, TargetIP: client}
	if !packetsEqual(r, want) {
		t.Fatalf("reply = %+v, want %+v", r, want)
	}
}

func TestVLANFrames(t *testing.T) {
	payload, err := (&Packet{Operation: OperationRequest, SenderHardwareAddr: macC, SenderIP: client, TargetIP: vip4}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := Frame{Destination: broadcastMAC, Source: macC, EtherType: EtherTypeARP, Payload: payload,
		VLANs: []VLAN{{TPID: EtherTypeServiceVLAN, ID: 100}, {Priority: 5, DropEligible: true, ID: 42}}}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// 802.1ad outer tag 0x88a8/VID 100, 802.1Q inner tag 0x8100 with
	// PCP 5, DEI 1, VID 42: TCI = 101 1 000000101010 = 0xb02a.
	if want := unhex(t, "ffffffffffff 021b00000001 88a8 0064 8100 b02a 0806"); !bytes.Equal(b[:22], want) {
		t.Fatalf("header\n%x\nwant\n%x", b[:22], want)
	}
	g, err := ParseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.VLANs) != 2 || g.VLANs[0] != (VLAN{TPID: EtherTypeServiceVLAN, ID: 100}) ||
		g.VLANs[1] != (VLAN{TPID: EtherTypeVLAN, Priority: 5, DropEligible: true, ID: 42}) {
		t.Fatalf("tags = %+v", g.VLANs)
	}
	if g.VLANID() != 42 || g.EtherType != EtherTypeARP {
		t.Fatalf("VLANID %d, type %v", g.VLANID(), g.EtherType)
	}
	p, err := ParsePacket(g.Payload)
	if err != nil || p.TargetIP != vip4 {
		t.Fatalf("payload behind two tags: %+v, %v", p, err)
	}
	// 14 + 8 + 28 = 50 bytes, padded to the 60-byte minimum.
	if len(b) != MinFrameLen {
		t.Fatalf("frame length %d, want %d", len(b), MinFrameLen)
	}
}

func TestFramePadding(t *testing.T) {
	f := Frame{Destination: broadcastMAC, Source: macC, EtherType: EtherTypeIPv4, Payload: []byte{1}}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != MinFrameLen || b[14] != 1 || !bytes.Equal(b[15:], make([]byte, MinFrameLen-15)) {
		t.Fatalf("padded frame %x", b)
	}
	long := Frame{Destination: broadcastMAC, Source: macC, EtherType: EtherTypeIPv4, Payload: make([]byte, 100)}
	if b, _ := long.MarshalBinary(); len(b) != 114 {
		t.Fatalf("long frame padded to %d", len(b))
	}
}

// refNeighborMessage builds the ICMPv6 part with x/net/icmp, which computes
// the checksum over the pseudo-header independently of this package.
func refICMPv6(t *testing.T, typ ipv6.ICMPType, src, dst netip.Addr, body []byte) []byte {
	t.Helper()
	m := icmp.Message{Type: typ, Body: &icmp.RawBody{Data: body}}
	b, err := m.Marshal(icmp.IPv6PseudoHeader(src.AsSlice(), dst.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNeighborSolicitationAgainstReference(t *testing.T) {
	snm := SolicitedNodeMulticast(vip6)
	if snm != netip.MustParseAddr("ff02::1:ff00:100") {
		t.Fatalf("solicited-node of %v = %v", vip6, snm)
	}
	if mac := IPv6MulticastMAC(snm); mac.String() != "33:33:ff:00:01:00" {
		t.Fatalf("MAC of %v = %v", snm, mac)
	}
	ns := NeighborMessage{Type: TypeNeighborSolicitation, Source: clnt6, Destination: snm, Target: vip6, LinkLayerAddr: macC}
	b, err := ns.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tgt := vip6.As16()
	body := append(append([]byte{0, 0, 0, 0}, tgt[:]...), 1, 1, 0x02, 0x1b, 0, 0, 0, 0x01)
	ref := refICMPv6(t, ipv6.ICMPTypeNeighborSolicitation, clnt6, snm, body)
	if !bytes.Equal(b[40:], ref) {
		t.Fatalf("ICMPv6\n%x\nreference\n%x", b[40:], ref)
	}
	src, dst := clnt6.As16(), snm.As16()
	hdr := append([]byte{0x60, 0, 0, 0, 0, 32, 58, 255}, src[:]...)
	hdr = append(hdr, dst[:]...)
	if !bytes.Equal(b[:40], hdr) {
		t.Fatalf("IPv6 header\n%x\nwant\n%x", b[:40], hdr)
	}
	got, err := ParseNeighborMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != ns.Type || got.Source != ns.Source || got.Destination != ns.Destination || got.Target != ns.Target ||
		!equalMAC(got.LinkLayerAddr, macC) || got.HopLimit != 255 {
		t.Fatalf("decoded %+v", got)
	}
	if err := got.CheckReceived(); err != nil {
		t.Fatal(err)
	}
}

func TestAdvertisements(t *testing.T) {
	na := UnsolicitedAdvertisement(macA, vip6)
	b, err := na.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tgt := vip6.As16()
	body := append(append([]byte{0x20, 0, 0, 0}, tgt[:]...), 2, 1, 0x02, 0x1b, 0, 0, 0, 0x02)
	ref := refICMPv6(t, ipv6.ICMPTypeNeighborAdvertisement, vip6, netip.MustParseAddr("ff02::1"), body)
	if !bytes.Equal(b[40:], ref) {
		t.Fatalf("unsolicited NA\n%x\nreference\n%x", b[40:], ref)
	}
	if IPv6MulticastMAC(na.Destination).String() != "33:33:00:00:00:01" {
		t.Fatalf("all-nodes MAC %v", IPv6MulticastMAC(na.Destination))
	}
	got, err := ParseNeighborMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Override || got.Solicited || got.Router || got.Target != vip6 || !equalMAC(got.LinkLayerAddr, macA) {
		t.Fatalf("decoded %+v", got)
	}
	if err := got.CheckReceived(); err != nil {
		t.Fatal(err)
	}

	ns := NeighborMessage{Type: TypeNeighborSolicitation, Source: clnt6, Destination: SolicitedNodeMulticast(vip6), Target: vip6}
	sol := AdvertisementFor(&ns, macA)
	if sol.Destination != clnt6 || sol.Source != vip6 || !sol.Solicited || !sol.Override || sol.Router {
		t.Fatalf("answer to %+v = %+v", ns, sol)
	}
	dad := NeighborMessage{Type: TypeNeighborSolicitation, Source: netip.IPv6Unspecified(), Destination: SolicitedNodeMulticast(vip6), Target: vip6}
	sol = AdvertisementFor(&dad, macA)
	if sol.Destination != netip.MustParseAddr("ff02::1") || sol.Solicited || !sol.Override {
		t.Fatalf("answer to DAD = %+v", sol)
	}
	if err := sol.CheckReceived(); err != nil {
		t.Fatal(err)
	}
}

func mustNS(t testing.TB, m NeighborMessage) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	goodNS := mustNS(t, NeighborMessage{Type: TypeNeighborSolicitation, Source: clnt6, Destination: SolicitedNodeMulticast(vip6), Target: vip6, LinkLayerAddr: macC})
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	arpReq := unhex(t, arpRequestHex)[14:42]
	tests := []struct {
		name  string
		parse func([]byte) error
		in    []byte
		want  error
		layer Layer
	}{
		{"empty frame", parseFrame, nil, ErrTruncated, LayerEthernet},
		{"13-byte frame", parseFrame, make([]byte, 13), ErrTruncated, LayerEthernet},
		{"cut 802.1Q tag", parseFrame, unhex(t, "ffffffffffff 021b00000001 8100 00"), ErrTruncated, LayerVLAN},
		{"tag without inner type", parseFrame, unhex(t, "ffffffffffff 021b00000001 8100 0005"), ErrTruncated, LayerVLAN},
		{"802.3 length", parseFrame, unhex(t, "ffffffffffff 021b00000001 0040 aaaa03"), ErrUnsupported, LayerEthernet},
		{"arp header cut", parsePacket, arpReq[:7], ErrTruncated, LayerARP},
		{"arp addresses cut", parsePacket, arpReq[:27], ErrTruncated, LayerARP},
		{"arp token ring", parsePacket, mod(arpReq, func(b []byte) []byte { b[1] = 6; return b }), ErrUnsupported, LayerARP},
		{"arp for IPv6", parsePacket, mod(arpReq, func(b []byte) []byte { b[2], b[3] = 0x86, 0xdd; return b }), ErrUnsupported, LayerARP},
		{"arp hlen 8", parsePacket, append(mod(arpReq, func(b []byte) []byte { b[4] = 8; return b }), 0, 0, 0, 0), ErrMalformed, LayerARP},
		{"arp plen 16 cut", parsePacket, mod(arpReq, func(b []byte) []byte { b[5] = 16; return b }), ErrTruncated, LayerARP},
		{"ipv6 short", parseND, goodNS[:39], ErrTruncated, LayerIPv6},
		{"ipv4 in ipv6 slot", parseND, mod(goodNS, func(b []byte) []byte { b[0] = 0x45; return b }), ErrMalformed, LayerIPv6},
		{"payload length beyond", parseND, goodNS[:len(goodNS)-1], ErrTruncated, LayerIPv6},
		{"hop-by-hop header", parseND, mod(goodNS, func(b []byte) []byte { b[6] = 0; return b }), ErrUnsupported, LayerIPv6},
		{"echo request", parseND, mod(goodNS, func(b []byte) []byte { b[40] = 128; return b }), ErrUnsupported, LayerICMPv6},
		{"icmp cut", parseND, mod(goodNS, func(b []byte) []byte { b[5] = 3; return b[:43] }), ErrTruncated, LayerICMPv6},
		{"ns cut", parseND, mod(goodNS, func(b []byte) []byte { b[5] = 20; return b[:60] }), ErrTruncated, LayerICMPv6},
		{"bad checksum", parseND, mod(goodNS, func(b []byte) []byte { b[42] ^= 0xff; return b }), ErrChecksum, LayerICMPv6},
		{"target flipped", parseND, mod(goodNS, func(b []byte) []byte { b[63] ^= 1; return b }), ErrChecksum, LayerICMPv6},
		{"source flipped (pseudo-header)", parseND, mod(goodNS, func(b []byte) []byte { b[23] ^= 1; return b }), ErrChecksum, LayerICMPv6},
		{"zero-length option", parseND, fixSum(mod(goodNS, func(b []byte) []byte { b[65] = 0; return b })), ErrMalformed, LayerICMPv6},
		{"option beyond end", parseND, fixSum(mod(goodNS, func(b []byte) []byte { b[65] = 2; return b })), ErrTruncated, LayerICMPv6},
		{"odd option byte", parseND, fixSum(mod(goodNS, func(b []byte) []byte { b[5]++; return append(b, 1) })), ErrTruncated, LayerICMPv6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			var de *DecodeError
			if !errors.Is(err, tt.want) || !errors.As(err, &de) || de.Layer != tt.layer {
				t.Fatalf("err = %v, want %v in layer %s", err, tt.want, tt.layer)
			}
			if !strings.HasPrefix(err.Error(), "arp: decode "+string(tt.layer)) {
				t.Errorf("message %q", err)
			}
		})
	}
}

func parseFrame(b []byte) error  { _, err := ParseFrame(b); return err }
func parsePacket(b []byte) error { _, err := ParsePacket(b); return err }
func parseND(b []byte) error     { _, err := ParseNeighborMessage(b); return err }

// fixSum rewrites the ICMPv6 checksum of an IPv6 packet so that a test can
// reach the checks behind it.
func fixSum(b []byte) []byte {
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	icmp := b[40:]
	icmp[2], icmp[3] = 0, 0
	s := ^checksumFold(pseudoHeaderSum(src, dst, len(icmp)) + sumBytes(icmp))
	icmp[2], icmp[3] = byte(s>>8), byte(s)
	return b
}

func TestCheckReceived(t *testing.T) {
	ok := NeighborMessage{Type: TypeNeighborSolicitation, Source: clnt6, Destination: SolicitedNodeMulticast(vip6), HopLimit: 255, Target: vip6, LinkLayerAddr: macC}
	tests := []struct {
		name  string
		mod   func(*NeighborMessage)
		field string
	}{
		{"hop limit 64 (off-link)", func(m *NeighborMessage) { m.HopLimit = 64 }, "NeighborMessage.HopLimit"},
		{"code 1", func(m *NeighborMessage) { m.Code = 1 }, "NeighborMessage.Code"},
		{"multicast target", func(m *NeighborMessage) { m.Target = netip.MustParseAddr("ff02::1") }, "NeighborMessage.Target"},
		{"DAD to unicast", func(m *NeighborMessage) {
			m.Source = netip.IPv6Unspecified()
			m.Destination = vip6
			m.LinkLayerAddr = nil
		}, "NeighborMessage.Destination"},
		{"DAD with SLLA", func(m *NeighborMessage) { m.Source = netip.IPv6Unspecified() }, "NeighborMessage.LinkLayerAddr"},
		{"solicited NA to multicast", func(m *NeighborMessage) { m.Type = TypeNeighborAdvertisement; m.Solicited = true }, "NeighborMessage.Solicited"},
		{"NS from all-nodes", func(m *NeighborMessage) { m.Source = netip.MustParseAddr("ff02::1") }, "NeighborMessage.Source"},
		{"NA from a group", func(m *NeighborMessage) {
			m.Type = TypeNeighborAdvertisement
			m.Source = SolicitedNodeMulticast(clnt6)
			m.Destination = clnt6
		}, "NeighborMessage.Source"},
	}
	if err := ok.CheckReceived(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		m := ok
		tt.mod(&m)
		err := m.CheckReceived()
		var ve *ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%s: err = %v, want field %s", tt.name, err, tt.field)
		}
	}
}

func TestEncodeValidation(t *testing.T) {
	tests := []struct {
		name  string
		enc   func() error
		field string
	}{
		{"frame short MAC", func() error {
			_, err := (&Frame{Destination: broadcastMAC, Source: macC[:5], EtherType: EtherTypeARP}).MarshalBinary()
			return err
		}, "Frame.Source"},
		{"frame VID 4095", func() error {
			_, err := (&Frame{Destination: broadcastMAC, Source: macC, VLANs: []VLAN{{ID: 4095}}, EtherType: EtherTypeARP}).MarshalBinary()
			return err
		}, "Frame.VLANs[0].ID"},
		{"frame TPID", func() error {
			_, err := (&Frame{Destination: broadcastMAC, Source: macC, VLANs: []VLAN{{TPID: EtherTypeARP}}, EtherType: EtherTypeARP}).MarshalBinary()
			return err
		}, "Frame.VLANs[0].TPID"},
		{"frame length type", func() error {
			_, err := (&Frame{Destination: broadcastMAC, Source: macC, EtherType: 46}).MarshalBinary()
			return err
		}, "Frame.EtherType"},
		{"arp IPv6 sender", func() error {
			_, err := (&Packet{Operation: OperationRequest, SenderHardwareAddr: macC, SenderIP: vip6, TargetIP: vip4}).MarshalBinary()
			return err
		}, "Packet.SenderIP"},
		{"arp op 0", func() error {
			_, err := (&Packet{SenderHardwareAddr: macC, SenderIP: vip4, TargetIP: vip4}).MarshalBinary()
			return err
		}, "Packet.Operation"},
		{"arp long THA", func() error {
			_, err := (&Packet{Operation: OperationReply, SenderHardwareAddr: macC, TargetHardwareAddr: make(net.HardwareAddr, 8), SenderIP: vip4, TargetIP: vip4}).MarshalBinary()
			return err
		}, "Packet.TargetHardwareAddr"},
		{"nd IPv4 target", func() error {
			_, err := (&NeighborMessage{Type: TypeNeighborSolicitation, Source: clnt6, Destination: vip6, Target: vip4}).MarshalBinary()
			return err
		}, "NeighborMessage.Target"},
		{"nd type", func() error {
			_, err := (&NeighborMessage{Type: 128, Source: clnt6, Destination: vip6, Target: vip6}).MarshalBinary()
			return err
		}, "NeighborMessage.Type"},
		{"ns with flags", func() error {
			_, err := (&NeighborMessage{Type: TypeNeighborSolicitation, Override: true, Source: clnt6, Destination: vip6, Target: vip6}).MarshalBinary()
			return err
		}, "NeighborMessage.Router/Solicited/Override"},
	}
	for _, tt := range tests {
		err := tt.enc()
		var ve *ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%s: err = %v, want field %s", tt.name, err, tt.field)
		}
	}
}

func TestAppendLeavesBufferOnError(t *testing.T) {
	prefix := []byte{1, 2, 3}
	out, err := (&Packet{}).Append(prefix)
	if err == nil || !bytes.Equal(out, prefix) {
		t.Fatalf("Append = %x, %v", out, err)
	}
	out, err = AppendNeighborFrame(prefix, broadcastMAC, macA, &NeighborMessage{})
	if err == nil || !bytes.Equal(out, prefix) {
		t.Fatalf("AppendNeighborFrame = %x, %v", out, err)
	}
}

func TestSolicitedNodeAndMulticastMAC(t *testing.T) {
	for in, want := range map[string]string{
		"2001:db8::1":                 "ff02::1:ff00:1",
		"fe80::21b:ff:fe00:2":         "ff02::1:ff00:2",
		"2001:db8:aaaa:bbbb::12:3456": "ff02::1:ff12:3456",
		"2001:db8::ab:cdef:89ab:cdef": "ff02::1:ffab:cdef",
	} {
		if got := SolicitedNodeMulticast(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("SolicitedNodeMulticast(%s) = %s, want %s", in, got, want)
		}
	}
	if SolicitedNodeMulticast(vip4).IsValid() || SolicitedNodeMulticast(netip.MustParseAddr("::ffff:192.0.2.1")).IsValid() {
		t.Error("solicited-node address of an IPv4 address")
	}
	if IPv6MulticastMAC(vip6) != nil || IPv6MulticastMAC(netip.MustParseAddr("224.0.0.1")) != nil {
		t.Error("multicast MAC of a non-IPv6-multicast address")
	}
	if got := IPv6MulticastMAC(netip.MustParseAddr("ff02::1:ffab:cdef")).String(); got != "33:33:ff:ab:cd:ef" {
		t.Errorf("MAC = %s", got)
	}
}
