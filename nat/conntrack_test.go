package nat

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/lbkit/lbkit/lb"
	"github.com/vishvananda/netlink"
)

func TestFlowMatcher(t *testing.T) {
	m := flowMatcher{
		{Protocol: lb.UDP, ReplySrc: netip.MustParseAddrPort("192.0.2.10:53")},
		{Protocol: lb.UDP, OrigDst: netip.MustParseAddrPort("198.51.100.10:53")},
		{Protocol: lb.SCTP, OrigDst: netip.AddrPortFrom(netip.Addr{}, 30053)}, // a node port
	}
	flow := func(proto uint8, dst string, dport uint16, rsrc string, rsport uint16) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{}
		f.Forward.Protocol, f.Forward.DstIP, f.Forward.DstPort = proto, net.ParseIP(dst), dport
		f.Reverse.SrcIP, f.Reverse.SrcPort = net.ParseIP(rsrc), rsport
		return f
	}
	cases := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"translated to the removed endpoint", flow(17, "198.51.100.99", 53, "192.0.2.10", 53), true},
		{"same endpoint, other port", flow(17, "198.51.100.99", 53, "192.0.2.10", 54), false},
		{"same endpoint, TCP", flow(6, "198.51.100.99", 53, "192.0.2.10", 53), false},
		{"to the frontend, untranslated", flow(17, "198.51.100.10", 53, "198.51.100.10", 53), true},
		{"to the frontend's address, other port", flow(17, "198.51.100.10", 54, "198.51.100.10", 54), false},
		{"IPv4-mapped form of the frontend", flow(17, "::ffff:198.51.100.10", 53, "198.51.100.10", 53), true},
		{"any address on the node port", flow(132, "203.0.113.5", 30053, "203.0.113.5", 30053), true},
		{"node port, UDP", flow(17, "203.0.113.5", 30053, "203.0.113.5", 30053), false},
	}
	for _, c := range cases {
		if got := m.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStaleFlows(t *testing.T) {
	ap := netip.MustParseAddrPort
	fr := []lb.Frontend{{Kind: lb.FrontendClusterIP, Addr: netip.MustParseAddr("198.51.100.10"), Port: 53}, {Kind: lb.FrontendNodePort, Port: 30053}}
	with := func(reachable bool, targets ...string) *portFlows {
		pf := &portFlows{proto: lb.UDP, reachable: reachable, frontends: fr}
		for _, s := range targets {
			pf.targets = append(pf.targets, ap(s))
		}
		return pf
	}
	cases := []struct {
		name      string
		old, next *portFlows
		want      []FlowFilter
	}{
		{"unchanged", with(true, "192.0.2.1:53"), with(true, "192.0.2.1:53"), nil},
		{"endpoint removed", with(true, "192.0.2.1:53", "192.0.2.2:53"), with(true, "192.0.2.1:53"),
			[]FlowFilter{{Protocol: lb.UDP, ReplySrc: ap("192.0.2.2:53")}}},
		{"endpoint added", with(true, "192.0.2.1:53"), with(true, "192.0.2.1:53", "192.0.2.2:53"), nil},
		{"regained endpoints", with(false), with(true, "192.0.2.1:53"), []FlowFilter{
			{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53")},
			{Protocol: lb.UDP, OrigDst: netip.AddrPortFrom(netip.Addr{}, 30053)}}},
		{"new service", nil, with(true, "192.0.2.1:53"), []FlowFilter{
			{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53")},
			{Protocol: lb.UDP, OrigDst: netip.AddrPortFrom(netip.Addr{}, 30053)}}},
		{"service removed", with(true, "192.0.2.1:53"), nil, []FlowFilter{{Protocol: lb.UDP, ReplySrc: ap("192.0.2.1:53")}}},
		{"lost every endpoint", with(true, "192.0.2.1:53"), with(false), []FlowFilter{{Protocol: lb.UDP, ReplySrc: ap("192.0.2.1:53")}}},
	}
	for _, c := range cases {
		if got := staleFlows(c.old, c.next); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSyncDeletesStaleUDPFlows drives the syncer and checks what it asks
// conntrack to delete: nothing for TCP, the removed endpoint for UDP, the
// frontends of a UDP service that regains endpoints.
func TestSyncDeletesStaleUDPFlows(t *testing.T) {
	ctx := context.Background()
	ct := &recordingConntrack{}
	s, _, _ := newFakeSyncer(t, Config{}, IPTablesOptions{Conntrack: ct})
	tcp := clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10", "192.0.2.11")
	dns := clusterIPService("default", "dns", "198.51.100.53", 53, "192.0.2.20", "192.0.2.21")
	dns.Service.Ports[0].Protocol = lb.UDP
	if _, err := s.Sync(ctx, []ServiceEndpoints{tcp, dns}); err != nil {
		t.Fatal(err)
	}
	ct.deleted = nil
	tcp.Endpoints = tcp.Endpoints[:1]
	dns.Endpoints = dns.Endpoints[:1]
	st, err := s.Sync(ctx, []ServiceEndpoints{tcp, dns})
	if err != nil {
		t.Fatal(err)
	}
	want := []FlowFilter{{Protocol: lb.UDP, ReplySrc: netip.MustParseAddrPort("192.0.2.21:8080")}}
	if got := ct.deleted[lb.IPv4]; !slices.Equal(got, want) || st[0].FlowsDeleted != 1 {
		t.Fatalf("after removing an endpoint of each: deleted %v (stats %d), want %v", got, st[0].FlowsDeleted, want)
	}
	ct.deleted = nil
	dns.Endpoints = nil
	if _, err := s.Sync(ctx, []ServiceEndpoints{tcp, dns}); err != nil {
		t.Fatal(err)
	}
	ct.deleted = nil
	dns.Endpoints = []lb.Endpoint{{Addr: ip("192.0.2.22"), Ready: true}}
	if _, err := s.Sync(ctx, []ServiceEndpoints{tcp, dns}); err != nil {
		t.Fatal(err)
	}
	want = []FlowFilter{{Protocol: lb.UDP, OrigDst: netip.MustParseAddrPort("198.51.100.53:53")}}
	if got := ct.deleted[lb.IPv4]; !slices.Equal(got, want) {
		t.Fatalf("after the UDP service regained an endpoint: deleted %v, want %v", got, want)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"kube-proxy's prefix":       {Prefix: "KUBE-"},
		"lower case prefix":         {Prefix: "lbk-"},
		"two IPv4 cluster CIDRs":    {ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.1.0.0/16")}},
		"host bits in cluster CIDR": {ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/16")}},
		"two mark bits":             {MasqueradeMark: 0x3},
	} {
		if err := cfg.withDefaults().validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd00::/48")}}
	if err := ok.withDefaults().validate(); err != nil {
		t.Errorf("one cluster CIDR per family: %v", err)
	}
}
