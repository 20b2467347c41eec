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

// flow builds a conntrack entry: the client 198.51.100.200:40000 sent to
// dst:dport, and the reply comes from rsrc:rsport.
func flow(proto uint8, dst string, dport uint16, rsrc string, rsport uint16) *netlink.ConntrackFlow {
	f := &netlink.ConntrackFlow{}
	f.Forward.Protocol = proto
	f.Forward.SrcIP, f.Forward.SrcPort = net.ParseIP("198.51.100.200"), 40000
	f.Forward.DstIP, f.Forward.DstPort = net.ParseIP(dst), dport
	f.Reverse.Protocol = proto
	f.Reverse.SrcIP, f.Reverse.SrcPort = net.ParseIP(rsrc), rsport
	f.Reverse.DstIP, f.Reverse.DstPort = net.ParseIP("198.51.100.200"), 40000
	return f
}

func TestFlowMatcher(t *testing.T) {
	ap := netip.MustParseAddrPort
	nodePort := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.Addr{}, p) }
	m := flowMatcher{
		// Endpoint 192.0.2.10:53 removed from a port with a cluster IP
		// and a node port.
		{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53"), ReplySrc: ap("192.0.2.10:53")},
		{Protocol: lb.UDP, OrigDst: nodePort(30053), ReplySrc: ap("192.0.2.10:53")},
		// A port that regained endpoints.
		{Protocol: lb.UDP, OrigDst: ap("198.51.100.20:53"), Untranslated: true},
		{Protocol: lb.SCTP, OrigDst: nodePort(30054), Untranslated: true},
	}
	cases := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"to the frontend, translated to the removed endpoint", flow(17, "198.51.100.10", 53, "192.0.2.10", 53), true},
		{"IPv4-mapped form of the frontend", flow(17, "::ffff:198.51.100.10", 53, "192.0.2.10", 53), true},
		{"another service translated to the same endpoint", flow(17, "198.51.100.99", 53, "192.0.2.10", 53), false},
		{"the frontend's address, another port, same endpoint", flow(17, "198.51.100.10", 54, "192.0.2.10", 53), false},
		{"to the frontend, a kept endpoint", flow(17, "198.51.100.10", 53, "192.0.2.11", 53), false},
		{"to the frontend, the endpoint's address on another port", flow(17, "198.51.100.10", 53, "192.0.2.10", 54), false},
		{"TCP to the frontend and the endpoint", flow(6, "198.51.100.10", 53, "192.0.2.10", 53), false},
		{"node port on one local address, the removed endpoint", flow(17, "203.0.113.5", 30053, "192.0.2.10", 53), true},
		{"node port on another local address, the removed endpoint", flow(17, "198.51.100.7", 30053, "192.0.2.10", 53), true},
		{"node port, a kept endpoint", flow(17, "203.0.113.5", 30053, "192.0.2.11", 53), false},
		{"regained frontend, untranslated", flow(17, "198.51.100.20", 53, "198.51.100.20", 53), true},
		{"regained frontend, translated (a live flow)", flow(17, "198.51.100.20", 53, "192.0.2.10", 53), false},
		{"regained frontend, only the port translated", flow(17, "198.51.100.20", 53, "198.51.100.20", 8053), false},
		{"regained frontend's address, another port, untranslated", flow(17, "198.51.100.20", 54, "198.51.100.20", 54), false},
		{"regained node port, untranslated", flow(132, "203.0.113.5", 30054, "203.0.113.5", 30054), true},
		{"regained node port, translated", flow(132, "203.0.113.5", 30054, "192.0.2.10", 53), false},
		{"regained node port, UDP", flow(17, "203.0.113.5", 30054, "203.0.113.5", 30054), false},
	}
	for _, c := range cases {
		if got := m.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFlowFilterZeroMeansAny: every field left zero matches anything, down
// to the zero filter, which matches every entry.
func TestFlowFilterZeroMeansAny(t *testing.T) {
	ap := netip.MustParseAddrPort
	tcp := flow(6, "198.51.100.10", 80, "192.0.2.10", 8080)
	udp6 := flow(17, "2001:db8::10", 53, "2001:db8:a1::10", 53)
	cases := []struct {
		name   string
		filter FlowFilter
		flow   *netlink.ConntrackFlow
		want   bool
	}{
		{"zero filter, TCP", FlowFilter{}, tcp, true},
		{"zero filter, IPv6 UDP", FlowFilter{}, udp6, true},
		{"any protocol", FlowFilter{ReplySrc: ap("192.0.2.10:8080")}, tcp, true},
		{"any port of the endpoint", FlowFilter{ReplySrc: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), 0)}, tcp, true},
		{"any port of another endpoint", FlowFilter{ReplySrc: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.11"), 0)}, tcp, false},
		{"any address and port, untranslated", FlowFilter{Untranslated: true}, tcp, false},
		{"IPv6 frontend", FlowFilter{Protocol: lb.UDP, OrigDst: ap("[2001:db8::10]:53")}, udp6, true},
		{"IPv6 frontend, another protocol", FlowFilter{Protocol: lb.SCTP, OrigDst: ap("[2001:db8::10]:53")}, udp6, false},
	}
	for _, c := range cases {
		if got := (flowMatcher{c.filter}).MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s (%s): match = %v, want %v", c.name, c.filter, got, c.want)
		}
	}
}

func TestFlowFilterString(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		f    FlowFilter
		want string
	}{
		{FlowFilter{}, "any"},
		{FlowFilter{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53"), ReplySrc: ap("192.0.2.10:53")}, "udp orig-dst 198.51.100.10:53 reply-src 192.0.2.10:53"},
		{FlowFilter{Protocol: lb.UDP, OrigDst: netip.AddrPortFrom(netip.Addr{}, 30053), ReplySrc: ap("[2001:db8::10]:53")}, "udp orig-dst *:30053 reply-src [2001:db8::10]:53"},
		{FlowFilter{Protocol: lb.SCTP, OrigDst: ap("[2001:db8::1]:53"), Untranslated: true}, "sctp orig-dst [2001:db8::1]:53 untranslated"},
		{FlowFilter{ReplySrc: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), 0)}, "any reply-src 192.0.2.10:*"},
	} {
		if got := c.f.String(); got != c.want {
			t.Errorf("%#v: %q, want %q", c.f, got, c.want)
		}
	}
}

func TestStaleFlows(t *testing.T) {
	ap := netip.MustParseAddrPort
	cip, np, lbIP := ap("198.51.100.10:53"), netip.AddrPortFrom(netip.Addr{}, 30053), ap("203.0.113.10:53")
	port := func(reachable bool, frontends []netip.AddrPort, targets ...string) *portFlows {
		pf := &portFlows{proto: lb.UDP, reachable: reachable, frontends: frontends}
		for _, s := range targets {
			pf.targets = append(pf.targets, ap(s))
		}
		return pf
	}
	fr := []netip.AddrPort{cip, np}
	with := func(reachable bool, targets ...string) *portFlows { return port(reachable, fr, targets...) }
	gone := func(ep string, frontends ...netip.AddrPort) []FlowFilter {
		var out []FlowFilter
		for _, f := range frontends {
			out = append(out, FlowFilter{Protocol: lb.UDP, OrigDst: f, ReplySrc: ap(ep)})
		}
		return out
	}
	untranslated := []FlowFilter{{Protocol: lb.UDP, OrigDst: cip, Untranslated: true}, {Protocol: lb.UDP, OrigDst: np, Untranslated: true}}
	cases := []struct {
		name      string
		old, next *portFlows
		want      []FlowFilter
	}{
		{"unchanged", with(true, "192.0.2.1:53"), with(true, "192.0.2.1:53"), nil},
		{"endpoint removed: paired with each frontend", with(true, "192.0.2.1:53", "192.0.2.2:53"), with(true, "192.0.2.1:53"), gone("192.0.2.2:53", cip, np)},
		{"endpoint added", with(true, "192.0.2.1:53"), with(true, "192.0.2.1:53", "192.0.2.2:53"), nil},
		{"regained endpoints: only untranslated flows", with(false), with(true, "192.0.2.1:53"), untranslated},
		{"new port, or a restarted syncer: only untranslated flows", nil, with(true, "192.0.2.1:53", "192.0.2.2:53"), untranslated},
		{"new port without endpoints", nil, with(false), nil},
		{"port removed", with(true, "192.0.2.1:53"), nil, gone("192.0.2.1:53", cip, np)},
		{"lost every endpoint", with(true, "192.0.2.1:53"), with(false), gone("192.0.2.1:53", cip, np)},
		{"endpoint and frontend removed: the old frontends", port(true, []netip.AddrPort{cip, lbIP}, "192.0.2.1:53", "192.0.2.2:53"),
			port(true, []netip.AddrPort{cip}, "192.0.2.1:53"), gone("192.0.2.2:53", cip, lbIP)},
		{"endpoint removed, frontend added: not paired with the new one, whose untranslated flows go", port(true, []netip.AddrPort{cip}, "192.0.2.1:53", "192.0.2.2:53"),
			port(true, []netip.AddrPort{cip, lbIP}, "192.0.2.1:53"), append(gone("192.0.2.2:53", cip), FlowFilter{Protocol: lb.UDP, OrigDst: lbIP, Untranslated: true})},
		{"frontend added to a port with endpoints: its untranslated flows", port(true, []netip.AddrPort{cip}, "192.0.2.1:53"),
			port(true, []netip.AddrPort{cip, lbIP}, "192.0.2.1:53"), []FlowFilter{{Protocol: lb.UDP, OrigDst: lbIP, Untranslated: true}}},
		{"endpoint replaced after no endpoints", with(true, "192.0.2.1:53"), with(true, "192.0.2.2:53"), gone("192.0.2.1:53", cip, np)},
	}
	for _, c := range cases {
		if got := staleFlows(c.old, c.next); !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, got, c.want)
		}
	}
}

// TestFlowsOf: the frontends conntrack cleanup pairs with endpoints are the
// intercepted ones, each once.
func TestFlowsOf(t *testing.T) {
	se := clusterIPService("default", "dns", "198.51.100.53", 53, "192.0.2.20")
	se.Service.Type = lb.ServiceTypeLoadBalancer
	se.Service.Ports[0].Protocol = lb.UDP
	se.Service.Ports[0].NodePort = 30053
	se.Service.ExternalIPs = []netip.Addr{ip("203.0.113.10")}
	se.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{
		{IP: ip("203.0.113.10")}, // the external IP again
		{IP: ip("203.0.113.11"), IPMode: lb.IPModeProxy},
	}
	plan, err := Compile(Config{}, []ServiceEndpoints{se})
	if err != nil {
		t.Fatal(err)
	}
	pf := flowsOf(&plan.Ports[0])
	want := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.53:53"), netip.MustParseAddrPort("203.0.113.10:53"), netip.AddrPortFrom(netip.Addr{}, 30053),
	}
	slices.SortFunc(pf.frontends, netip.AddrPort.Compare)
	slices.SortFunc(want, netip.AddrPort.Compare)
	if !slices.Equal(pf.frontends, want) {
		t.Errorf("frontends %v, want %v", pf.frontends, want)
	}
	if !pf.reachable || !slices.Equal(pf.targets, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.20:8080")}) {
		t.Errorf("reachable %v, targets %v; want true and the one endpoint", pf.reachable, pf.targets)
	}
}

// TestSyncDeletesStaleUDPFlows drives the syncer and checks what it asks
// conntrack to delete: nothing for TCP, the removed endpoint paired with
// the frontend for UDP, the untranslated flows to the frontends of a UDP
// service that regains endpoints.
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
	want := []FlowFilter{{Protocol: lb.UDP, OrigDst: netip.MustParseAddrPort("198.51.100.53:53"), ReplySrc: netip.MustParseAddrPort("192.0.2.21:8080")}}
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
	want = []FlowFilter{{Protocol: lb.UDP, OrigDst: netip.MustParseAddrPort("198.51.100.53:53"), Untranslated: true}}
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
