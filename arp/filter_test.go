package arp

import (
	"errors"
	"testing"

	"golang.org/x/net/bpf"
)

func TestFilterPayloadRules(t *testing.T) {
	vm, err := bpf.NewVM(filterProgram(0))
	if err != nil {
		t.Fatal(err)
	}
	arpReq := unhex(t, arpRequestHex)
	ns := mustFrame(t, broadcastMAC, EtherTypeIPv6, mustNS(t, NeighborMessage{Type: TypeNeighborSolicitation,
		Source: clnt6, Destination: SolicitedNodeMulticast(vip6), Target: vip6, LinkLayerAddr: macC}))
	na := mustFrame(t, broadcastMAC, EtherTypeIPv6, mustNS(t, UnsolicitedAdvertisement(macC, vip6)))
	echo := mustFrame(t, broadcastMAC, EtherTypeIPv6, mustNS(t, NeighborMessage{Type: TypeNeighborSolicitation,
		Source: clnt6, Destination: vip6, Target: vip6}))
	echo[EthernetHeaderLen+40] = 128 // ICMPv6 echo request
	udp6 := mustFrame(t, broadcastMAC, EtherTypeIPv6, mustNS(t, NeighborMessage{Type: TypeNeighborSolicitation,
		Source: clnt6, Destination: vip6, Target: vip6}))
	udp6[EthernetHeaderLen+6] = 17 // next header UDP; byte 54 still says 135
	ipv4 := mustFrame(t, broadcastMAC, EtherTypeIPv4, make([]byte, 46))
	tagged := append(append(append([]byte{}, arpReq[:12]...), 0x81, 0x00, 0x00, 0x05), arpReq[12:]...)
	for _, tt := range []struct {
		name   string
		frame  []byte
		accept bool
	}{
		{"arp request", arpReq, true},
		{"neighbor solicitation", ns, true},
		{"neighbor advertisement", na, true},
		{"icmpv6 echo", echo, false},
		{"udp over ipv6", udp6, false},
		{"ipv4", ipv4, false},
		{"in-frame 802.1Q tag", tagged, false},
		{"runt", arpReq[:10], false},
	} {
		n, err := vm.Run(tt.frame)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := n > 0; got != tt.accept {
			t.Errorf("%s: filter kept %d bytes, want accept=%v", tt.name, n, tt.accept)
		}
		if tt.accept && n < len(tt.frame) {
			t.Errorf("%s: filter keeps only %d of %d bytes", tt.name, n, len(tt.frame))
		}
	}
}

func TestFilterAssembles(t *testing.T) {
	raw, err := Filter(7)
	if err != nil {
		t.Fatal(err)
	}
	// The metadata prologue (10 instructions) precedes the payload rules.
	if len(raw) != len(filterProgram(0))+10 {
		t.Fatalf("%d instructions", len(raw))
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("does not disassemble: %v", prog)
	}
	if prog[0] != (bpf.LoadExtension{Num: bpf.ExtInterfaceIndex}) || prog[1] != (bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 7, SkipTrue: uint8(len(prog) - 3)}) {
		t.Fatalf("the filter does not start by dropping frames of other devices: %v", prog[:2])
	}
	for _, bad := range []int{0, -1, 1 << 40} {
		if _, err := Filter(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Filter(%d) = %v", bad, err)
		}
	}
}

func mustFrame(t testing.TB, dst []byte, et EtherType, payload []byte) []byte {
	t.Helper()
	f := Frame{Destination: dst, Source: macC, EtherType: et, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
