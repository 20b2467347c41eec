package arp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// ICMPv6Type is the type of an ICMPv6 message.
type ICMPv6Type uint8

// The two neighbour discovery messages this package speaks (RFC 4861
// sections 4.3 and 4.4).
const (
	TypeNeighborSolicitation  ICMPv6Type = 135
	TypeNeighborAdvertisement ICMPv6Type = 136
)

// String returns "neighbor solicitation", "neighbor advertisement" or the
// number.
func (t ICMPv6Type) String() string {
	switch t {
	case TypeNeighborSolicitation:
		return "neighbor solicitation"
	case TypeNeighborAdvertisement:
		return "neighbor advertisement"
	}
	return fmt.Sprintf("icmpv6 type %d", uint8(t))
}

const (
	ipv6HeaderLen   = 40
	protocolICMPv6  = 58
	ndMessageLen    = 24 // ICMPv6 header, flags/reserved, target
	optSourceLLA    = 1
	optTargetLLA    = 2
	flagRouter      = 0x80
	flagSolicited   = 0x40
	flagOverride    = 0x20
	ndHopLimit      = 255
	ipv6VersionMask = 0xF0
)

// NeighborMessage is an IPv6 packet carrying an ICMPv6 neighbour
// solicitation or neighbour advertisement (RFC 4861), without extension
// headers.
type NeighborMessage struct {
	Type ICMPv6Type
	// Source and Destination are the IPv6 header's addresses; they enter
	// the checksum through the pseudo-header (RFC 8200 section 8.1).
	Source, Destination netip.Addr
	// HopLimit is the IPv6 hop limit. Receivers drop neighbour discovery
	// with any value but 255, so Append writes 255 when it is zero.
	HopLimit uint8
	// Code is the ICMPv6 code, always 0 for neighbour discovery.
	Code uint8
	// Router, Solicited and Override are the flags of an advertisement.
	Router, Solicited, Override bool
	// Target is the address being resolved or advertised.
	Target netip.Addr
	// LinkLayerAddr is the source link-layer address option of a
	// solicitation or the target link-layer address option of an
	// advertisement; nil when the option is absent.
	LinkLayerAddr net.HardwareAddr
}

// SolicitedNodeMulticast returns the solicited-node multicast address of an
// IPv6 address (RFC 4291 section 2.7.1): ff02::1:ff00:0/104 followed by the
// address's last 24 bits. It returns the zero Addr for a non-IPv6 address.
func SolicitedNodeMulticast(ip netip.Addr) netip.Addr {
	if !ip.Is6() || ip.Is4In6() {
		return netip.Addr{}
	}
	a := ip.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]})
}

// allNodes is ff02::1, the link-local all-nodes multicast address.
var allNodes = netip.AddrFrom16([16]byte{0xff, 0x02, 15: 0x01})

// UnsolicitedAdvertisement returns the advertisement a node sends to all
// nodes when its link-layer address for ip changes (RFC 4861 section 7.2.6):
// from ip to ff02::1, Override set, Solicited clear, with mac in the target
// link-layer address option. Send it to IPv6MulticastMAC(ff02::1), that is
// 33:33:00:00:00:01.
func UnsolicitedAdvertisement(mac net.HardwareAddr, ip netip.Addr) NeighborMessage {
	return NeighborMessage{
		Type:          TypeNeighborAdvertisement,
		Source:        ip,
		Destination:   allNodes,
		HopLimit:      ndHopLimit,
		Override:      true,
		Target:        ip,
		LinkLayerAddr: mac,
	}
}

// AdvertisementFor returns the advertisement that answers the solicitation
// ns for its target at mac (RFC 4861 section 7.2.4), sent from the target
// address. A solicitation from the unspecified address (duplicate address
// detection) is answered to all nodes with Solicited clear; any other is
// answered to its source with Solicited set. Override is set in both, as for
// any address that is not anycast.
func AdvertisementFor(ns *NeighborMessage, mac net.HardwareAddr) NeighborMessage {
	na := NeighborMessage{
		Type:          TypeNeighborAdvertisement,
		Source:        ns.Target,
		Destination:   ns.Source,
		HopLimit:      ndHopLimit,
		Solicited:     true,
		Override:      true,
		Target:        ns.Target,
		LinkLayerAddr: mac,
	}
	if ns.Source.IsUnspecified() {
		na.Destination = allNodes
		na.Solicited = false
	}
	return na
}

// ParseNeighborMessage decodes an IPv6 packet (an Ethernet payload; trailing
// padding beyond the IPv6 payload length is ignored) that carries a
// neighbour solicitation or advertisement, and verifies its ICMPv6 checksum.
// Extension headers and other ICMPv6 types fail with ErrUnsupported. The
// link-layer address of the result aliases b.
//
// ParseNeighborMessage checks the encoding only; CheckReceived applies the
// rules by which a receiver must discard a message.
func ParseNeighborMessage(b []byte) (NeighborMessage, error) {
	if len(b) < ipv6HeaderLen {
		return NeighborMessage{}, decodeErr(LayerIPv6, len(b), ErrTruncated,
			fmt.Sprintf("%d bytes, the IPv6 header needs %d", len(b), ipv6HeaderLen))
	}
	if v := b[0] >> 4; v != 6 {
		return NeighborMessage{}, decodeErr(LayerIPv6, 0, ErrMalformed, fmt.Sprintf("version %d is not 6", v))
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	if len(b) < ipv6HeaderLen+plen {
		return NeighborMessage{}, decodeErr(LayerIPv6, 4, ErrTruncated,
			fmt.Sprintf("payload length %d exceeds the %d bytes present", plen, len(b)-ipv6HeaderLen))
	}
	if nh := b[6]; nh != protocolICMPv6 {
		return NeighborMessage{}, decodeErr(LayerIPv6, 6, ErrUnsupported,
			fmt.Sprintf("next header %d is not ICMPv6 (extension headers are not supported)", nh))
	}
	m := NeighborMessage{
		HopLimit:    b[7],
		Source:      netip.AddrFrom16([16]byte(b[8:24])),
		Destination: netip.AddrFrom16([16]byte(b[24:40])),
	}
	icmp := b[ipv6HeaderLen : ipv6HeaderLen+plen]
	if len(icmp) < 4 {
		return NeighborMessage{}, decodeErr(LayerICMPv6, len(icmp), ErrTruncated, "shorter than the ICMPv6 header")
	}
	m.Type, m.Code = ICMPv6Type(icmp[0]), icmp[1]
	if m.Type != TypeNeighborSolicitation && m.Type != TypeNeighborAdvertisement {
		return NeighborMessage{}, decodeErr(LayerICMPv6, 0, ErrUnsupported, m.Type.String()+" is not neighbour discovery")
	}
	if len(icmp) < ndMessageLen {
		return NeighborMessage{}, decodeErr(LayerICMPv6, len(icmp), ErrTruncated,
			fmt.Sprintf("%s of %d bytes, at least %d needed", m.Type, len(icmp), ndMessageLen))
	}
	if sum := checksumFold(pseudoHeaderSum(m.Source, m.Destination, len(icmp)) + sumBytes(icmp)); sum != 0xffff {
		return NeighborMessage{}, decodeErr(LayerICMPv6, 2, ErrChecksum,
			fmt.Sprintf("checksum 0x%04x does not match the message", binary.BigEndian.Uint16(icmp[2:])))
	}
	if m.Type == TypeNeighborAdvertisement {
		m.Router = icmp[4]&flagRouter != 0
		m.Solicited = icmp[4]&flagSolicited != 0
		m.Override = icmp[4]&flagOverride != 0
	}
	m.Target = netip.AddrFrom16([16]byte(icmp[8:24]))
	want := byte(optSourceLLA)
	if m.Type == TypeNeighborAdvertisement {
		want = optTargetLLA
	}
	for off := ndMessageLen; off < len(icmp); {
		opts := icmp[off:]
		if len(opts) < 2 {
			return NeighborMessage{}, decodeErr(LayerICMPv6, off, ErrTruncated, "option header cut short")
		}
		n := int(opts[1]) * 8
		switch {
		case n == 0:
			return NeighborMessage{}, decodeErr(LayerICMPv6, off+1, ErrMalformed, fmt.Sprintf("option type %d has length 0", opts[0]))
		case n > len(opts):
			return NeighborMessage{}, decodeErr(LayerICMPv6, off+1, ErrTruncated,
				fmt.Sprintf("option type %d of %d bytes exceeds the %d left", opts[0], n, len(opts)))
		}
		if opts[0] == want && m.LinkLayerAddr == nil {
			m.LinkLayerAddr = net.HardwareAddr(opts[2:n:n])
			if n == 8 {
				// Ethernet: a 6-byte address fills the 8-byte option.
				m.LinkLayerAddr = m.LinkLayerAddr[:6:6]
			}
		}
		off += n
	}
	return m, nil
}

// Validate reports a NeighborMessage that cannot be encoded.
func (m *NeighborMessage) Validate() error {
	if m.Type != TypeNeighborSolicitation && m.Type != TypeNeighborAdvertisement {
		return invalid("NeighborMessage.Type", m.Type.String()+" is not neighbour discovery")
	}
	for _, a := range []struct {
		field string
		ip    netip.Addr
	}{{"Source", m.Source}, {"Destination", m.Destination}, {"Target", m.Target}} {
		if !a.ip.Is6() || a.ip.Is4In6() || a.ip.Zone() != "" {
			return invalid("NeighborMessage."+a.field, fmt.Sprintf("%v is not an IPv6 address without zone", a.ip))
		}
	}
	if m.LinkLayerAddr != nil && len(m.LinkLayerAddr) != 6 {
		return invalid("NeighborMessage.LinkLayerAddr", fmt.Sprintf("%q is not a 6-byte MAC address", m.LinkLayerAddr))
	}
	if m.Type == TypeNeighborSolicitation && (m.Router || m.Solicited || m.Override) {
		return invalid("NeighborMessage.Router/Solicited/Override", "a solicitation has no flags")
	}
	return nil
}

// CheckReceived applies the validity checks a receiver must make before it
// acts on the message (RFC 4861 sections 7.1.1 and 7.1.2): hop limit 255,
// code 0, a target that is not multicast, a source that is not multicast
// (RFC 4291 section 2.7); for a solicitation from the
// unspecified address, a solicited-node multicast destination and no source
// link-layer address; for an advertisement to a multicast address, Solicited
// clear. The checksum and lengths were checked by ParseNeighborMessage.
func (m *NeighborMessage) CheckReceived() error {
	switch {
	case m.HopLimit != ndHopLimit:
		return invalid("NeighborMessage.HopLimit", fmt.Sprintf("%d is not 255: the message may come from off-link", m.HopLimit))
	case m.Code != 0:
		return invalid("NeighborMessage.Code", fmt.Sprintf("%d is not 0", m.Code))
	case !m.Target.Is6() || m.Target.IsMulticast():
		return invalid("NeighborMessage.Target", fmt.Sprintf("%v is multicast or not IPv6", m.Target))
	case m.Source.IsMulticast():
		// No IPv6 packet comes from a group (RFC 4291 section 2.7), and
		// a solicited answer to one would go to every member.
		return invalid("NeighborMessage.Source", fmt.Sprintf("%v is multicast", m.Source))
	}
	switch m.Type {
	case TypeNeighborSolicitation:
		if m.Source.IsUnspecified() {
			if !isSolicitedNode(m.Destination) {
				return invalid("NeighborMessage.Destination",
					fmt.Sprintf("%v is not a solicited-node address, as a solicitation from :: requires", m.Destination))
			}
			if m.LinkLayerAddr != nil {
				return invalid("NeighborMessage.LinkLayerAddr", "a solicitation from :: carries no source link-layer address")
			}
		}
	case TypeNeighborAdvertisement:
		if m.Destination.IsMulticast() && m.Solicited {
			return invalid("NeighborMessage.Solicited", "set in an advertisement to a multicast address")
		}
	default:
		return invalid("NeighborMessage.Type", m.Type.String()+" is not neighbour discovery")
	}
	return nil
}

func isSolicitedNode(ip netip.Addr) bool {
	return solicitedNodePrefix.Contains(ip)
}

var solicitedNodePrefix = netip.MustParsePrefix("ff02::1:ff00:0/104")

// Len returns the length of the encoded IPv6 packet.
func (m *NeighborMessage) Len() int {
	n := ipv6HeaderLen + ndMessageLen
	if m.LinkLayerAddr != nil {
		n += 8
	}
	return n
}

// Append appends the encoded IPv6 packet, ICMPv6 checksum included, to b. It
// encodes nothing when m is invalid.
func (m *NeighborMessage) Append(b []byte) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return b, err
	}
	plen := m.Len() - ipv6HeaderLen
	hop := m.HopLimit
	if hop == 0 {
		hop = ndHopLimit
	}
	b = append(b, 0x60, 0, 0, 0) // version 6, traffic class 0, flow label 0
	b = binary.BigEndian.AppendUint16(b, uint16(plen))
	b = append(b, protocolICMPv6, hop)
	src, dst, target := m.Source.As16(), m.Destination.As16(), m.Target.As16()
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	start := len(b)
	var flags byte
	if m.Router {
		flags |= flagRouter
	}
	if m.Solicited {
		flags |= flagSolicited
	}
	if m.Override {
		flags |= flagOverride
	}
	b = append(b, byte(m.Type), m.Code, 0, 0, flags, 0, 0, 0)
	b = append(b, target[:]...)
	if m.LinkLayerAddr != nil {
		opt := byte(optSourceLLA)
		if m.Type == TypeNeighborAdvertisement {
			opt = optTargetLLA
		}
		b = append(b, opt, 1)
		b = append(b, m.LinkLayerAddr...)
	}
	sum := ^checksumFold(pseudoHeaderSum(m.Source, m.Destination, plen) + sumBytes(b[start:]))
	binary.BigEndian.PutUint16(b[start+2:], sum)
	return b, nil
}

// MarshalBinary encodes m (see Append).
func (m *NeighborMessage) MarshalBinary() ([]byte, error) { return m.Append(make([]byte, 0, m.Len())) }

// UnmarshalBinary decodes b into m (see ParseNeighborMessage).
func (m *NeighborMessage) UnmarshalBinary(b []byte) error {
	n, err := ParseNeighborMessage(b)
	if err != nil {
		return err
	}
	*m = n
	return nil
}

// pseudoHeaderSum returns the unfolded one's-complement sum of the IPv6
// pseudo-header for an ICMPv6 message of length n (RFC 8200 section 8.1,
// RFC 4443 section 2.3).
func pseudoHeaderSum(src, dst netip.Addr, n int) uint32 {
	s, d := src.As16(), dst.As16()
	sum := sumBytes(s[:]) + sumBytes(d[:])
	sum += uint32(n>>16) + uint32(n&0xffff)
	return sum + protocolICMPv6
}

// sumBytes returns the unfolded sum of b as big-endian 16-bit words, an odd
// last byte padded with zero.
func sumBytes(b []byte) uint32 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// checksumFold folds a 32-bit sum into 16 bits with end-around carry.
func checksumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// AppendNeighborFrame appends an Ethernet frame from src to dst carrying the
// IPv6 packet m. It encodes nothing when the addresses or m are invalid.
func AppendNeighborFrame(b []byte, dst, src net.HardwareAddr, m *NeighborMessage) ([]byte, error) {
	f := Frame{Destination: dst, Source: src, EtherType: EtherTypeIPv6}
	if err := f.Validate(); err != nil {
		return b, err
	}
	start := len(b)
	// Encoded in place, as in AppendARPFrame.
	out, err := m.Append(f.appendHeader(b))
	if err != nil {
		return b, err
	}
	return padFrame(out, start), nil
}
