package arp

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"testing"
)

func seedFrames(t testing.TB) [][]byte {
	snmMAC := IPv6MulticastMAC(SolicitedNodeMulticast(vip6))
	return [][]byte{
		unhex(t, arpRequestHex),
		arpFrame(t, broadcastMAC, macC, request(macC, client, vip4), VLAN{ID: 5}),
		arpFrame(t, broadcastMAC, macC, request(macC, client, vip4), VLAN{TPID: EtherTypeServiceVLAN, ID: 9}, VLAN{Priority: 1}),
		arpFrame(t, macA, macC, GratuitousARP(macC, vip4, OperationReply)),
		ndFrame(t, snmMAC, macC, solicit(clnt6, vip6, macC)),
		ndFrame(t, snmMAC, macC, solicit(netip.IPv6Unspecified(), vip6, nil)),
		ndFrame(t, IPv6MulticastMAC(allNodes), macC, UnsolicitedAdvertisement(macC, vip6)),
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x81, 0},
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err != nil {
			return
		}
		if fr.Len() != len(b) {
			t.Fatalf("decoded frame accounts for %d of %d bytes", fr.Len(), len(b))
		}
		if fr.Validate() != nil {
			// A VID of 4095 (reserved) decodes but is not encoded.
			return
		}
		out, err := fr.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// The same bytes, plus padding when b was shorter than 60 bytes.
		if len(out) != max(len(b), MinFrameLen) || !bytes.Equal(out[:len(b)], b) {
			t.Fatalf("re-encoded\n%x\nfrom\n%x", out, b)
		}
	})
}

func FuzzParsePacket(f *testing.F) {
	for _, b := range seedFrames(f) {
		if fr, err := ParseFrame(b); err == nil {
			f.Add(fr.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		if p.Operation == 0 {
			return // decodes, but is not encoded
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, b[:PacketLen]) {
			t.Fatalf("re-encoded\n%x\nfrom\n%x", out, b[:PacketLen])
		}
	})
}

func FuzzParseNeighborMessage(f *testing.F) {
	for _, b := range seedFrames(f) {
		if fr, err := ParseFrame(b); err == nil && fr.EtherType == EtherTypeIPv6 {
			f.Add(fr.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Random bytes rarely carry a valid checksum; also try b with its
		// checksum repaired, to reach the option parser.
		if len(b) >= ipv6HeaderLen+4 {
			if plen := int(b[4])<<8 | int(b[5]); plen >= 4 && len(b) >= ipv6HeaderLen+plen {
				fixed := fixSum(bytes.Clone(b[:ipv6HeaderLen+plen]))
				roundTripND(t, fixed)
			}
		}
		roundTripND(t, b)
	})
}

func roundTripND(t *testing.T, b []byte) {
	m, err := ParseNeighborMessage(b)
	if err != nil || m.Validate() != nil {
		return // a Validate error: e.g. a link-layer address that is not 6 bytes
	}
	out, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseNeighborMessage(out)
	if err != nil {
		t.Fatalf("re-encoded message does not decode: %v", err)
	}
	if m.HopLimit == 0 {
		m.HopLimit = 255
	}
	if back.Type != m.Type || back.Source != m.Source || back.Destination != m.Destination || back.HopLimit != m.HopLimit ||
		back.Code != m.Code || back.Router != m.Router || back.Solicited != m.Solicited || back.Override != m.Override ||
		back.Target != m.Target || !equalMAC(back.LinkLayerAddr, m.LinkLayerAddr) {
		t.Fatalf("round trip changed\n%+v\ninto\n%+v", m, back)
	}
}

// FuzzAnnouncerHandle feeds arbitrary frames to a live Announcer and checks
// that whatever it sends is a well-formed answer about a VIP it owns.
func FuzzAnnouncerHandle(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	conn := NewFakeConn()
	a, err := New(ifA, conn, Config{AnnounceCount: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	owned := []netip.Addr{vip4, vip6}
	if err := a.Acquire(context.Background(), owned...); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		before := len(conn.Written())
		a.handle(b)
		for _, w := range conn.Written()[before:] {
			m := decodeMsg(t, w)
			if !equalMAC(m.frame.Source, macA) {
				t.Fatalf("sent from %v", m.frame.Source)
			}
			switch {
			case m.arp != nil:
				if m.arp.Operation != OperationReply || !slices.Contains(owned, m.arp.SenderIP) || !equalMAC(m.arp.SenderHardwareAddr, macA) {
					t.Fatalf("sent ARP %+v", m.arp)
				}
				if m.frame.Destination[0]&1 != 0 {
					t.Fatalf("ARP reply to group address %v", m.frame.Destination)
				}
			case m.nd != nil:
				if m.nd.Type != TypeNeighborAdvertisement || !slices.Contains(owned, m.nd.Target) {
					t.Fatalf("sent %+v", m.nd)
				}
			}
		}
	})
}
