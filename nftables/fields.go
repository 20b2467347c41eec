package nftables

import (
	"fmt"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Field is a packet or metadata field a rule can match on, concatenate into
// a set key, hash, or store in a dynamic set.
type Field uint8

// Fields. The tcp, udp and sctp port fields imply a match on the protocol
// (nft adds it, and so does the engine); th ports do not.
const (
	FieldIPSaddr   Field = iota + 1 // ip saddr
	FieldIPDaddr                    // ip daddr
	FieldIP6Saddr                   // ip6 saddr
	FieldIP6Daddr                   // ip6 daddr
	FieldL4Proto                    // meta l4proto
	FieldTHSport                    // th sport
	FieldTHDport                    // th dport
	FieldTCPSport                   // tcp sport
	FieldTCPDport                   // tcp dport
	FieldUDPSport                   // udp sport
	FieldUDPDport                   // udp dport
	FieldSCTPSport                  // sctp sport
	FieldSCTPDport                  // sctp dport
	FieldMark                       // meta mark
	FieldIifname                    // iifname
	FieldOifname                    // oifname
)

type fieldInfo struct {
	name    string
	typ     Type
	nfproto uint8 // required network family (unix.NFPROTO_IPV4/6), 0 if none
	l4proto uint8 // required transport protocol, 0 if none
	// payload load, or meta key when meta is set
	base   expr.PayloadBase
	offset uint32
	meta   bool
	key    expr.MetaKey
}

var fields = map[Field]fieldInfo{
	FieldIPSaddr:   {name: "ip saddr", typ: TypeIPv4Addr, nfproto: unix.NFPROTO_IPV4, base: expr.PayloadBaseNetworkHeader, offset: 12},
	FieldIPDaddr:   {name: "ip daddr", typ: TypeIPv4Addr, nfproto: unix.NFPROTO_IPV4, base: expr.PayloadBaseNetworkHeader, offset: 16},
	FieldIP6Saddr:  {name: "ip6 saddr", typ: TypeIPv6Addr, nfproto: unix.NFPROTO_IPV6, base: expr.PayloadBaseNetworkHeader, offset: 8},
	FieldIP6Daddr:  {name: "ip6 daddr", typ: TypeIPv6Addr, nfproto: unix.NFPROTO_IPV6, base: expr.PayloadBaseNetworkHeader, offset: 24},
	FieldL4Proto:   {name: "meta l4proto", typ: TypeInetProto, meta: true, key: expr.MetaKeyL4PROTO},
	FieldTHSport:   {name: "th sport", typ: TypeInetService, base: expr.PayloadBaseTransportHeader, offset: 0},
	FieldTHDport:   {name: "th dport", typ: TypeInetService, base: expr.PayloadBaseTransportHeader, offset: 2},
	FieldTCPSport:  {name: "tcp sport", typ: TypeInetService, l4proto: unix.IPPROTO_TCP, base: expr.PayloadBaseTransportHeader, offset: 0},
	FieldTCPDport:  {name: "tcp dport", typ: TypeInetService, l4proto: unix.IPPROTO_TCP, base: expr.PayloadBaseTransportHeader, offset: 2},
	FieldUDPSport:  {name: "udp sport", typ: TypeInetService, l4proto: unix.IPPROTO_UDP, base: expr.PayloadBaseTransportHeader, offset: 0},
	FieldUDPDport:  {name: "udp dport", typ: TypeInetService, l4proto: unix.IPPROTO_UDP, base: expr.PayloadBaseTransportHeader, offset: 2},
	FieldSCTPSport: {name: "sctp sport", typ: TypeInetService, l4proto: unix.IPPROTO_SCTP, base: expr.PayloadBaseTransportHeader, offset: 0},
	FieldSCTPDport: {name: "sctp dport", typ: TypeInetService, l4proto: unix.IPPROTO_SCTP, base: expr.PayloadBaseTransportHeader, offset: 2},
	FieldMark:      {name: "meta mark", typ: TypeMark, meta: true, key: expr.MetaKeyMARK},
	FieldIifname:   {name: "iifname", typ: TypeIfname, meta: true, key: expr.MetaKeyIIFNAME},
	FieldOifname:   {name: "oifname", typ: TypeIfname, meta: true, key: expr.MetaKeyOIFNAME},
}

// String returns the field as nft writes it ("ip saddr").
func (f Field) String() string {
	if fi, ok := fields[f]; ok {
		return fi.name
	}
	return fmt.Sprintf("Field(%d)", uint8(f))
}

// Valid reports whether f is a known field.
func (f Field) Valid() bool { _, ok := fields[f]; return ok }

// Type returns the data type of the field's value.
func (f Field) Type() Type { return fields[f].typ }

func (f Field) info() fieldInfo { return fields[f] }

func fieldsString(fs []Field) string {
	s := ""
	for i, f := range fs {
		if i > 0 {
			s += " . "
		}
		s += f.String()
	}
	return s
}

func fieldTypes(fs []Field) []Type {
	ts := make([]Type, len(fs))
	for i, f := range fs {
		ts[i] = f.Type()
	}
	return ts
}
