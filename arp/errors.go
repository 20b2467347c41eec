package arp

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Decoding errors are *DecodeError values that match one of
// ErrTruncated, ErrMalformed, ErrChecksum or ErrUnsupported with errors.Is;
// validation errors are *ValidationError values that match ErrInvalid.
var (
	// ErrTruncated: the input ends before the structure it announces.
	ErrTruncated = errors.New("arp: truncated")
	// ErrMalformed: a field holds a value the protocol forbids.
	ErrMalformed = errors.New("arp: malformed")
	// ErrChecksum: the ICMPv6 checksum does not match the message.
	ErrChecksum = errors.New("arp: bad checksum")
	// ErrUnsupported: the input is well formed but is not something this
	// package speaks (an 802.3 length field, ARP for a hardware other than
	// Ethernet or a protocol other than IPv4, an IPv6 extension header, an
	// ICMPv6 type other than neighbour solicitation and advertisement).
	ErrUnsupported = errors.New("arp: unsupported")
	// ErrInvalid is matched by every *ValidationError.
	ErrInvalid = errors.New("arp: invalid input")
	// ErrClosed is returned by an Announcer that has been closed or that
	// stopped by itself (its interface is gone, or its connection failed).
	ErrClosed = errors.New("arp: announcer closed")
	// ErrInterfaceGone is matched by the error of an Announcer that stopped
	// because its interface was deleted or moved to another network
	// namespace (see Announcer.Err).
	ErrInterfaceGone = errors.New("arp: interface gone")
	// ErrNotSupported is returned by Dial on platforms without AF_PACKET
	// sockets (everything but Linux). It also matches errors.ErrUnsupported.
	ErrNotSupported = fmt.Errorf("arp: AF_PACKET sockets need Linux: %w", errors.ErrUnsupported)
)

// Layer names a protocol layer in a DecodeError.
type Layer string

// The layers this package decodes.
const (
	LayerEthernet Layer = "ethernet"
	LayerVLAN     Layer = "802.1Q"
	LayerARP      Layer = "arp"
	LayerIPv6     Layer = "ipv6"
	LayerICMPv6   Layer = "icmpv6"
)

// DecodeError reports input that could not be decoded: the layer, the byte
// offset within that layer's input where the problem is, and the reason.
// Its Unwrap returns one of the sentinel errors.
type DecodeError struct {
	Layer  Layer
	Offset int
	// Err is ErrTruncated, ErrMalformed, ErrChecksum or ErrUnsupported.
	Err    error
	Detail string
}

// Error returns "arp: decode <layer> at byte <offset>: <detail>".
func (e *DecodeError) Error() string {
	return "arp: decode " + string(e.Layer) + " at byte " + strconv.Itoa(e.Offset) + ": " + e.Detail
}

// Unwrap returns the sentinel that classifies the error.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(l Layer, off int, sentinel error, detail string) error {
	return &DecodeError{Layer: l, Offset: off, Err: sentinel, Detail: detail}
}

// ValidationError reports a value the package refuses to encode or accept:
// a configuration, a VIP, or a message field. It matches ErrInvalid.
type ValidationError struct {
	// Field is the path of the offending field, such as "Config.AnnounceCount",
	// "vips[1]" or "Packet.SenderHardwareAddr".
	Field string
	// Reason says what is wrong, including the value.
	Reason string
}

// Error returns "arp: invalid <field>: <reason>".
func (e *ValidationError) Error() string { return "arp: invalid " + e.Field + ": " + e.Reason }

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, reason string) error { return &ValidationError{Field: field, Reason: reason} }
