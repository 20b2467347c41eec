package arp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// EtherType is the 16-bit protocol field of an Ethernet II header or of an
// 802.1Q tag.
type EtherType uint16

// EtherType values this package reads or writes.
const (
	EtherTypeIPv4 EtherType = 0x0800
	EtherTypeARP  EtherType = 0x0806
	EtherTypeIPv6 EtherType = 0x86DD
	// EtherTypeVLAN is the 802.1Q customer tag (C-tag) TPID.
	EtherTypeVLAN EtherType = 0x8100
	// EtherTypeServiceVLAN is the 802.1ad service tag (S-tag) TPID, the
	// outer tag of a QinQ frame.
	EtherTypeServiceVLAN EtherType = 0x88A8
)

// String returns the name of a known EtherType or its hex value.
func (t EtherType) String() string {
	switch t {
	case EtherTypeIPv4:
		return "IPv4"
	case EtherTypeARP:
		return "ARP"
	case EtherTypeIPv6:
		return "IPv6"
	case EtherTypeVLAN:
		return "802.1Q"
	case EtherTypeServiceVLAN:
		return "802.1ad"
	}
	return fmt.Sprintf("0x%04x", uint16(t))
}

func (t EtherType) isTag() bool { return t == EtherTypeVLAN || t == EtherTypeServiceVLAN }

// Sizes of the structures this package encodes.
const (
	// EthernetHeaderLen is the length of an untagged Ethernet II header.
	EthernetHeaderLen = 14
	// VLANTagLen is the length of one 802.1Q tag.
	VLANTagLen = 4
	// MinFrameLen is the shortest Ethernet frame without its frame check
	// sequence (64 bytes on the wire less 4 bytes of FCS); Frame.Append pads
	// shorter frames to it.
	MinFrameLen = 60
	// maxVID is the highest VLAN identifier; 0xFFF is reserved.
	maxVID = 0xFFF
)

// broadcastMAC is the Ethernet broadcast address.
var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// VLAN is one 802.1Q (or 802.1ad) tag.
type VLAN struct {
	// TPID is the tag protocol identifier: EtherTypeVLAN, or
	// EtherTypeServiceVLAN for the outer tag of a QinQ frame. Zero encodes
	// as EtherTypeVLAN.
	TPID EtherType
	// Priority is the 802.1p priority code point, 0 to 7.
	Priority uint8
	// DropEligible is the DEI bit (formerly CFI).
	DropEligible bool
	// ID is the VLAN identifier, 0 to 4094; 0 means the frame only carries
	// a priority (a priority-tagged frame belongs to the untagged LAN).
	ID uint16
}

// Frame is an Ethernet II frame with any number of 802.1Q tags.
type Frame struct {
	Destination net.HardwareAddr
	Source      net.HardwareAddr
	// VLANs lists the tags outermost first; empty for an untagged frame.
	VLANs []VLAN
	// EtherType is the type of Payload (the type after the last tag).
	EtherType EtherType
	// Payload is what follows the header. A decoded Payload aliases the
	// input and may end in Ethernet padding.
	Payload []byte
}

// VLANID returns the identifier of the innermost tag, or 0 for an untagged or
// priority-tagged frame: the VLAN the frame belongs to.
func (f *Frame) VLANID() uint16 {
	if len(f.VLANs) == 0 {
		return 0
	}
	return f.VLANs[len(f.VLANs)-1].ID
}

// ParseFrame decodes an Ethernet II frame and its 802.1Q/802.1ad tags. The
// returned Frame aliases b. Frames that carry an 802.3 length instead of an
// EtherType fail with ErrUnsupported.
func ParseFrame(b []byte) (Frame, error) {
	if len(b) < EthernetHeaderLen {
		return Frame{}, decodeErr(LayerEthernet, len(b), ErrTruncated,
			fmt.Sprintf("%d bytes, an Ethernet header needs %d", len(b), EthernetHeaderLen))
	}
	f := Frame{
		Destination: net.HardwareAddr(b[0:6:6]),
		Source:      net.HardwareAddr(b[6:12:12]),
	}
	off := 12
	t := EtherType(binary.BigEndian.Uint16(b[off:]))
	for t.isTag() {
		if len(b) < off+2+VLANTagLen {
			return Frame{}, decodeErr(LayerVLAN, off, ErrTruncated, "frame ends inside an 802.1Q tag")
		}
		tci := binary.BigEndian.Uint16(b[off+2:])
		f.VLANs = append(f.VLANs, VLAN{
			TPID:         t,
			Priority:     uint8(tci >> 13),
			DropEligible: tci&0x1000 != 0,
			ID:           tci & maxVID,
		})
		off += VLANTagLen
		t = EtherType(binary.BigEndian.Uint16(b[off:]))
	}
	if t < 0x0600 {
		return Frame{}, decodeErr(LayerEthernet, off, ErrUnsupported,
			fmt.Sprintf("type field %d is an 802.3 length, not an EtherType", uint16(t)))
	}
	f.EtherType = t
	f.Payload = b[off+2:]
	return f, nil
}

// Validate reports a Frame that cannot be encoded.
func (f *Frame) Validate() error {
	if len(f.Destination) != 6 {
		return invalid("Frame.Destination", fmt.Sprintf("%q is not a 6-byte MAC address", f.Destination))
	}
	if len(f.Source) != 6 {
		return invalid("Frame.Source", fmt.Sprintf("%q is not a 6-byte MAC address", f.Source))
	}
	for i, v := range f.VLANs {
		field := fmt.Sprintf("Frame.VLANs[%d]", i)
		if v.TPID != 0 && !v.TPID.isTag() {
			return invalid(field+".TPID", v.TPID.String()+" is not an 802.1Q or 802.1ad TPID")
		}
		if v.Priority > 7 {
			return invalid(field+".Priority", fmt.Sprintf("%d is not 0-7", v.Priority))
		}
		if v.ID >= maxVID {
			return invalid(field+".ID", fmt.Sprintf("%d is not 0-4094", v.ID))
		}
	}
	if f.EtherType < 0x0600 || f.EtherType.isTag() {
		return invalid("Frame.EtherType", f.EtherType.String()+" is not a payload EtherType")
	}
	return nil
}

// Len returns the encoded length of f, before padding to MinFrameLen.
func (f *Frame) Len() int { return EthernetHeaderLen + VLANTagLen*len(f.VLANs) + len(f.Payload) }

// Append appends the encoded frame to b, padded with zeros to MinFrameLen,
// and returns the extended slice. It encodes nothing when f is invalid.
func (f *Frame) Append(b []byte) ([]byte, error) {
	if err := f.Validate(); err != nil {
		return b, err
	}
	start := len(b)
	b = f.appendHeader(b)
	b = append(b, f.Payload...)
	return padFrame(b, start), nil
}

// appendHeader appends the header of f, which must be valid, up to and
// including its EtherType.
func (f *Frame) appendHeader(b []byte) []byte {
	b = append(b, f.Destination...)
	b = append(b, f.Source...)
	for _, v := range f.VLANs {
		tpid := v.TPID
		if tpid == 0 {
			tpid = EtherTypeVLAN
		}
		tci := uint16(v.Priority)<<13 | v.ID
		if v.DropEligible {
			tci |= 0x1000
		}
		b = binary.BigEndian.AppendUint16(b, uint16(tpid))
		b = binary.BigEndian.AppendUint16(b, tci)
	}
	return binary.BigEndian.AppendUint16(b, uint16(f.EtherType))
}

// padFrame pads the frame that starts at b[start] with zeros to
// MinFrameLen.
func padFrame(b []byte, start int) []byte {
	if n := MinFrameLen - (len(b) - start); n > 0 {
		b = append(b, make([]byte, n)...)
	}
	return b
}

// MarshalBinary encodes f (see Append).
func (f *Frame) MarshalBinary() ([]byte, error) {
	return f.Append(make([]byte, 0, max(f.Len(), MinFrameLen)))
}

// UnmarshalBinary decodes b into f (see ParseFrame). f aliases b.
func (f *Frame) UnmarshalBinary(b []byte) error {
	g, err := ParseFrame(b)
	if err != nil {
		return err
	}
	*f = g
	return nil
}

// IPv6MulticastMAC returns the Ethernet address an IPv6 multicast address
// maps to (RFC 2464 section 7): 33:33 followed by the last 32 bits of the
// address. It returns nil for an address that is not IPv6 multicast.
func IPv6MulticastMAC(ip netip.Addr) net.HardwareAddr {
	if !ip.Is6() || ip.Is4In6() || !ip.IsMulticast() {
		return nil
	}
	a := ip.As16()
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// isIPv6MulticastMACOf reports whether mac is IPv6MulticastMAC(ip), for a
// multicast ip, without allocating.
func isIPv6MulticastMACOf(mac net.HardwareAddr, ip netip.Addr) bool {
	a := ip.As16()
	return len(mac) == 6 && mac[0] == 0x33 && mac[1] == 0x33 && string(mac[2:]) == string(a[12:])
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, c := range m {
		if c != 0 {
			return false
		}
	}
	return true
}

func equalMAC(a, b net.HardwareAddr) bool { return string(a) == string(b) }
