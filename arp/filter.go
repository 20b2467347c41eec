package arp

import (
	"fmt"
	"math"

	"golang.org/x/net/bpf"
)

// The classic BPF filter on the announcer's packet sockets lets the
// responder wake only for frames it may have to answer or watch for
// conflicts:
//
//   - frames whose device is not the announcer's interface are dropped: a
//     socket bound to an interface also gets the frames the kernel hands,
//     after decapsulation, to a device stacked on it, such as a VLAN
//     sub-interface (its outer tag already stripped) or a bond;
//   - frames that still carry a VLAN tag with an ID other than 0 in their
//     metadata are dropped: on Linux the kernel strips the outer 802.1Q tag
//     of a received frame into metadata before packet sockets see it, and
//     such a frame belongs to a VLAN sub-interface;
//   - frames the host sends (PACKET_OUTGOING) and frames for another host
//     (PACKET_OTHERHOST: unicast to another MAC address, seen in promiscuous
//     mode, and frames tagged for a VLAN that has no sub-interface, which
//     the kernel marks so before protocol-bound sockets see them) are
//     dropped;
//   - of the rest, only ARP and IPv6 packets whose next header is ICMPv6 and
//     whose ICMPv6 type is neighbour solicitation or advertisement pass.
//
// The first three rules use Linux BPF extensions (SKF_AD_IFINDEX,
// SKF_AD_VLAN_TAG_PRESENT, SKF_AD_VLAN_TAG, SKF_AD_PKTTYPE); the last is
// plain classic BPF.

const (
	// filterSnaplen is how much of an accepted frame the filter keeps.
	filterSnaplen = 0xFFFF
	// Packet types of linux/if_packet.h, as SKF_AD_PKTTYPE loads them.
	packetOtherHost = 3
	packetOutgoing  = 4
)

// asmInsn is an instruction of the tiny assembler below: either a plain
// instruction, a conditional jump to a label, or a label.
type asmInsn struct {
	insn  bpf.Instruction
	cond  bpf.JumpTest
	val   uint32
	to    string
	label string
}

func jumpTo(cond bpf.JumpTest, val uint32, label string) asmInsn {
	return asmInsn{cond: cond, val: val, to: label}
}

func op(i bpf.Instruction) asmInsn { return asmInsn{insn: i} }

func label(name string) asmInsn { return asmInsn{label: name} }

// assemble resolves forward jumps to labels.
func assemble(prog []asmInsn) []bpf.Instruction {
	pos := map[string]int{}
	n := 0
	for _, in := range prog {
		if in.label != "" {
			pos[in.label] = n
			continue
		}
		n++
	}
	out := make([]bpf.Instruction, 0, n)
	for _, in := range prog {
		switch {
		case in.label != "":
		case in.to != "":
			out = append(out, bpf.JumpIf{Cond: in.cond, Val: in.val, SkipTrue: uint8(pos[in.to] - len(out) - 1)})
		default:
			out = append(out, in.insn)
		}
	}
	return out
}

// filterProgram returns the filter for the interface with index ifindex;
// with ifindex 0 it leaves out the metadata checks (which only the kernel
// can run), and is the part that x/net/bpf's VM can execute.
func filterProgram(ifindex uint32) []bpf.Instruction {
	var prog []asmInsn
	if ifindex != 0 {
		prog = append(prog,
			op(bpf.LoadExtension{Num: bpf.ExtInterfaceIndex}),
			jumpTo(bpf.JumpNotEqual, ifindex, "drop"),
			op(bpf.LoadExtension{Num: bpf.ExtVLANTagPresent}),
			jumpTo(bpf.JumpEqual, 0, "untagged"),
			op(bpf.LoadExtension{Num: bpf.ExtVLANTag}),
			op(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: maxVID}),
			jumpTo(bpf.JumpNotEqual, 0, "drop"),
			label("untagged"),
			op(bpf.LoadExtension{Num: bpf.ExtType}),
			jumpTo(bpf.JumpEqual, packetOutgoing, "drop"),
			jumpTo(bpf.JumpEqual, packetOtherHost, "drop"),
		)
	}
	prog = append(prog,
		op(bpf.LoadAbsolute{Off: 12, Size: 2}),
		jumpTo(bpf.JumpEqual, uint32(EtherTypeARP), "accept"),
		jumpTo(bpf.JumpNotEqual, uint32(EtherTypeIPv6), "drop"),
		op(bpf.LoadAbsolute{Off: EthernetHeaderLen + 6, Size: 1}),
		jumpTo(bpf.JumpNotEqual, protocolICMPv6, "drop"),
		op(bpf.LoadAbsolute{Off: EthernetHeaderLen + ipv6HeaderLen, Size: 1}),
		jumpTo(bpf.JumpEqual, uint32(TypeNeighborSolicitation), "accept"),
		jumpTo(bpf.JumpNotEqual, uint32(TypeNeighborAdvertisement), "drop"),
		label("accept"),
		op(bpf.RetConstant{Val: filterSnaplen}),
		label("drop"),
		op(bpf.RetConstant{Val: 0}),
	)
	return assemble(prog)
}

// Filter returns the assembled socket filter Dial attaches to its sockets on
// the interface with index ifindex, for callers that open their own packet
// socket on that interface and hand it to New.
func Filter(ifindex int) ([]bpf.RawInstruction, error) {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return nil, invalid("ifindex", fmt.Sprintf("%d is not an interface index", ifindex))
	}
	return bpf.Assemble(filterProgram(uint32(ifindex)))
}
