package arp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Operation is the ARP opcode (RFC 826).
type Operation uint16

// ARP opcodes.
const (
	OperationRequest Operation = 1
	OperationReply   Operation = 2
)

// String returns "request", "reply" or the number.
func (o Operation) String() string {
	switch o {
	case OperationRequest:
		return "request"
	case OperationReply:
		return "reply"
	}
	return fmt.Sprintf("op%d", uint16(o))
}

// Field values of Ethernet/IPv4 ARP.
const (
	hardwareEthernet = 1
	// PacketLen is the length of an Ethernet/IPv4 ARP packet.
	PacketLen = 28
)

// Packet is an ARP packet for IPv4 over Ethernet (RFC 826): hardware type 1,
// protocol type 0x0800, 6-byte hardware and 4-byte protocol addresses.
type Packet struct {
	Operation          Operation
	SenderHardwareAddr net.HardwareAddr
	SenderIP           netip.Addr
	// TargetHardwareAddr may be nil when encoding a request; it encodes as
	// 00:00:00:00:00:00.
	TargetHardwareAddr net.HardwareAddr
	TargetIP           netip.Addr
}

// IsGratuitous reports whether p announces its sender's binding rather than
// asking a question: its sender and target IP are the same (an RFC 5227 ARP
// Announcement, or a gratuitous reply).
func (p *Packet) IsGratuitous() bool { return p.SenderIP.IsValid() && p.SenderIP == p.TargetIP }

// IsProbe reports whether p is an RFC 5227 ARP Probe: a request from a host
// that has no address yet (sender IP 0.0.0.0).
func (p *Packet) IsProbe() bool {
	return p.Operation == OperationRequest && p.SenderIP == netip.IPv4Unspecified()
}

// ParsePacket decodes an ARP packet (an Ethernet payload; trailing padding is
// ignored). ARP for other hardware or protocol types fails with
// ErrUnsupported. The hardware addresses of the result alias b.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < 8 {
		return Packet{}, decodeErr(LayerARP, len(b), ErrTruncated, fmt.Sprintf("%d bytes, the ARP header needs 8", len(b)))
	}
	htype := binary.BigEndian.Uint16(b[0:])
	ptype := EtherType(binary.BigEndian.Uint16(b[2:]))
	hlen, plen := int(b[4]), int(b[5])
	if need := 8 + 2*(hlen+plen); len(b) < need {
		return Packet{}, decodeErr(LayerARP, len(b), ErrTruncated,
			fmt.Sprintf("%d bytes, the addresses need %d", len(b), need))
	}
	switch {
	case htype != hardwareEthernet:
		return Packet{}, decodeErr(LayerARP, 0, ErrUnsupported, fmt.Sprintf("hardware type %d is not Ethernet", htype))
	case ptype != EtherTypeIPv4:
		return Packet{}, decodeErr(LayerARP, 2, ErrUnsupported, "protocol type "+ptype.String()+" is not IPv4")
	case hlen != 6:
		return Packet{}, decodeErr(LayerARP, 4, ErrMalformed, fmt.Sprintf("Ethernet hardware address length %d is not 6", hlen))
	case plen != 4:
		return Packet{}, decodeErr(LayerARP, 5, ErrMalformed, fmt.Sprintf("IPv4 protocol address length %d is not 4", plen))
	}
	return Packet{
		Operation:          Operation(binary.BigEndian.Uint16(b[6:])),
		SenderHardwareAddr: net.HardwareAddr(b[8:14:14]),
		SenderIP:           netip.AddrFrom4([4]byte(b[14:18])),
		TargetHardwareAddr: net.HardwareAddr(b[18:24:24]),
		TargetIP:           netip.AddrFrom4([4]byte(b[24:28])),
	}, nil
}

// Validate reports a Packet that cannot be encoded.
func (p *Packet) Validate() error {
	if p.Operation == 0 {
		return invalid("Packet.Operation", "0 is not an ARP opcode")
	}
	if len(p.SenderHardwareAddr) != 6 {
		return invalid("Packet.SenderHardwareAddr", fmt.Sprintf("%q is not a 6-byte MAC address", p.SenderHardwareAddr))
	}
	if p.TargetHardwareAddr != nil && len(p.TargetHardwareAddr) != 6 {
		return invalid("Packet.TargetHardwareAddr", fmt.Sprintf("%q is not a 6-byte MAC address", p.TargetHardwareAddr))
	}
	if !p.SenderIP.Is4() {
		return invalid("Packet.SenderIP", fmt.Sprintf("%v is not an IPv4 address", p.SenderIP))
	}
	if !p.TargetIP.Is4() {
		return invalid("Packet.TargetIP", fmt.Sprintf("%v is not an IPv4 address", p.TargetIP))
	}
	return nil
}

// Append appends the encoded packet (PacketLen bytes) to b. It encodes
// nothing when p is invalid.
func (p *Packet) Append(b []byte) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, hardwareEthernet)
	b = binary.BigEndian.AppendUint16(b, uint16(EtherTypeIPv4))
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, uint16(p.Operation))
	b = append(b, p.SenderHardwareAddr...)
	b = append(b, p.SenderIP.AsSlice()...)
	if p.TargetHardwareAddr == nil {
		b = append(b, 0, 0, 0, 0, 0, 0)
	} else {
		b = append(b, p.TargetHardwareAddr...)
	}
	b = append(b, p.TargetIP.AsSlice()...)
	return b, nil
}

// MarshalBinary encodes p (see Append).
func (p *Packet) MarshalBinary() ([]byte, error) { return p.Append(make([]byte, 0, PacketLen)) }

// UnmarshalBinary decodes b into p (see ParsePacket).
func (p *Packet) UnmarshalBinary(b []byte) error {
	q, err := ParsePacket(b)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// GratuitousARP returns a gratuitous ARP packet that announces ip at mac,
// to be sent to the broadcast address. Both forms carry ip as sender and
// target IP. With OperationRequest it is the RFC 5227 ARP Announcement,
// whose target hardware address is zero. With OperationReply the target
// hardware address is mac too: Linux treats a gratuitous reply as such (and
// lets it override a neighbour entry younger than its locktime) only when
// sender and target hardware address are equal.
func GratuitousARP(mac net.HardwareAddr, ip netip.Addr, op Operation) Packet {
	p := Packet{Operation: op, SenderHardwareAddr: mac, SenderIP: ip, TargetIP: ip}
	if op == OperationReply {
		p.TargetHardwareAddr = mac
	}
	return p
}

// ReplyTo returns the reply a host with mac and the requested address sends
// to the request req (RFC 826): sender and target swapped, the sender
// hardware address being mac. It does not check that req is a request.
func ReplyTo(req *Packet, mac net.HardwareAddr) Packet {
	return Packet{
		Operation:          OperationReply,
		SenderHardwareAddr: mac,
		SenderIP:           req.TargetIP,
		TargetHardwareAddr: req.SenderHardwareAddr,
		TargetIP:           req.SenderIP,
	}
}

// AppendARPFrame appends an Ethernet frame from src to dst carrying p.
// It encodes nothing when the addresses or p are invalid.
func AppendARPFrame(b []byte, dst, src net.HardwareAddr, p *Packet) ([]byte, error) {
	f := Frame{Destination: dst, Source: src, EtherType: EtherTypeARP}
	if err := f.Validate(); err != nil {
		return b, err
	}
	start := len(b)
	// The packet is encoded in place, after the header: no buffer of its
	// own.
	out, err := p.Append(f.appendHeader(b))
	if err != nil {
		return b, err
	}
	return padFrame(out, start), nil
}
