package nat

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

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
	filters := []FlowFilter{
		// Endpoint 192.0.2.10:53 removed from a port with a cluster IP
		// and a node port.
		{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53"), ReplySrc: ap("192.0.2.10:53")},
		{Protocol: lb.UDP, OrigDst: nodePort(30053), ReplySrc: ap("192.0.2.10:53")},
		// A port that regained endpoints.
		{Protocol: lb.UDP, OrigDst: ap("198.51.100.20:53"), Untranslated: true},
		{Protocol: lb.SCTP, OrigDst: nodePort(30054), Untranslated: true},
	}
	checkFlows(t, filters, []flowCase{
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
	})
}

// flowCase is a conntrack entry and whether filters match it.
type flowCase struct {
	name string
	flow *netlink.ConntrackFlow
	want bool
}

// checkFlows checks each case against filters, with the index and with a
// linear scan.
func checkFlows(t *testing.T, filters []FlowFilter, cases []flowCase) {
	t.Helper()
	m := newFlowMatcher(filters)
	for _, c := range cases {
		if got := m.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.name, got, c.want)
		}
		if got := linearMatch(filters, c.flow); got != c.want {
			t.Errorf("%s: the linear scan matches %v, want %v", c.name, got, c.want)
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
		{"any address and port, translated", FlowFilter{Translated: true}, tcp, true},
		{"translated and untranslated", FlowFilter{Translated: true, Untranslated: true}, tcp, false},
		{"empty sets exclude nothing", FlowFilter{ReplySrcNotIn: NewAddrPortSet(), OrigDstNotIn: AddrPortSet{}}, tcp, true},
		{"not in: any port of the endpoint", FlowFilter{ReplySrcNotIn: NewAddrPortSet(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), 0))}, tcp, false},
		{"not in: any address on the port", FlowFilter{OrigDstNotIn: NewAddrPortSet(netip.AddrPortFrom(netip.Addr{}, 80))}, tcp, false},
		{"not in: everything", FlowFilter{OrigDstNotIn: NewAddrPortSet(netip.AddrPort{})}, tcp, false},
		{"IPv6 frontend", FlowFilter{Protocol: lb.UDP, OrigDst: ap("[2001:db8::10]:53")}, udp6, true},
		{"IPv6 frontend, another protocol", FlowFilter{Protocol: lb.SCTP, OrigDst: ap("[2001:db8::10]:53")}, udp6, false},
	}
	for _, c := range cases {
		if got := newFlowMatcher([]FlowFilter{c.filter}).MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s (%s): match = %v, want %v", c.name, c.filter, got, c.want)
		}
		if got := c.filter.matchesLinear(c.flow); got != c.want {
			t.Errorf("%s (%s): the linear scan matches %v, want %v", c.name, c.filter, got, c.want)
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
		{FlowFilter{Protocol: lb.UDP, OrigDst: netip.AddrPortFrom(netip.Addr{}, 30053), Translated: true,
			ReplySrcNotIn: NewAddrPortSet(ap("192.0.2.11:53"), ap("192.0.2.10:53")), OrigDstNotIn: NewAddrPortSet(ap("198.51.100.10:30053"))},
			"udp orig-dst *:30053 reply-src-not-in {192.0.2.10:53 192.0.2.11:53} orig-dst-not-in {198.51.100.10:30053} translated"},
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

// matchesLinear is FlowFilter's definition read literally off its doc,
// over the netlink entry as it comes: the reference the indexed matcher
// must agree with, and (with linearMatch) the linear scan the syncers used
// before the index.
func (f FlowFilter) matchesLinear(flow *netlink.ConntrackFlow) bool {
	if f.Protocol != "" && flow.Forward.Protocol != f.Protocol.Number() {
		return false
	}
	if !matchIP(f.OrigDst, flow.Forward.DstIP, flow.Forward.DstPort) || !matchIP(f.ReplySrc, flow.Reverse.SrcIP, flow.Reverse.SrcPort) {
		return false
	}
	untranslated := flow.Reverse.SrcPort == flow.Forward.DstPort && flow.Reverse.SrcIP.Equal(flow.Forward.DstIP)
	if f.Untranslated && !untranslated || f.Translated && untranslated {
		return false
	}
	for _, e := range elems(f.ReplySrcNotIn) {
		if matchIP(e, flow.Reverse.SrcIP, flow.Reverse.SrcPort) {
			return false
		}
	}
	for _, e := range elems(f.OrigDstNotIn) {
		if matchIP(e, flow.Forward.DstIP, flow.Forward.DstPort) {
			return false
		}
	}
	return true
}

// elems returns the elements of s without a copy.
func elems(s AddrPortSet) []netip.AddrPort {
	if s.s == nil {
		return nil
	}
	return s.s.elems
}

// matchIP reports whether ip and port are want, where a zero address or
// port in want matches any.
func matchIP(want netip.AddrPort, ip net.IP, port uint16) bool {
	if want.Port() != 0 && want.Port() != port {
		return false
	}
	if !want.Addr().IsValid() {
		return true
	}
	a, ok := netip.AddrFromSlice(ip)
	return ok && a.Unmap() == want.Addr().Unmap()
}

// linearMatch checks flow against every filter in turn.
func linearMatch(filters []FlowFilter, flow *netlink.ConntrackFlow) bool {
	for _, f := range filters {
		if f.matchesLinear(flow) {
			return true
		}
	}
	return false
}

func TestAddrPortSet(t *testing.T) {
	ap := netip.MustParseAddrPort
	s := NewAddrPortSet(ap("192.0.2.11:53"), ap("192.0.2.10:53"), ap("192.0.2.10:53"),
		netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), 0), netip.AddrPortFrom(netip.Addr{}, 30053), ap("[::ffff:192.0.2.30]:53"))
	for _, c := range []struct {
		ap   netip.AddrPort
		want bool
	}{
		{ap("192.0.2.10:53"), true},
		{ap("[::ffff:192.0.2.10]:53"), true},
		{ap("192.0.2.10:54"), false},
		{ap("192.0.2.12:53"), false},
		{ap("192.0.2.20:1"), true}, // any port of the address
		{ap("192.0.2.21:1"), false},
		{ap("203.0.113.5:30053"), true}, // any address on the port
		{ap("[2001:db8::1]:30053"), true},
		{ap("192.0.2.30:53"), true}, // an IPv4-mapped element
		{netip.AddrPortFrom(netip.Addr{}, 53), false},
	} {
		if got := s.Match(c.ap); got != c.want {
			t.Errorf("%s in %s: %v, want %v", c.ap, s, got, c.want)
		}
	}
	if s.Len() != 5 || s.String() != "{*:30053 192.0.2.10:53 192.0.2.11:53 192.0.2.20:* ::ffff:192.0.2.30:53}" {
		t.Errorf("set of 6 elements, one twice: len %d, %s", s.Len(), s)
	}
	if again := NewAddrPortSet(s.Elements()...); again == s || !again.Equal(s) || again.Equal(NewAddrPortSet(ap("192.0.2.10:53"))) {
		t.Error("Equal compares elements, == identity")
	}
	var zero AddrPortSet
	if zero.Match(netip.AddrPort{}) || zero.Len() != 0 || !zero.Equal(NewAddrPortSet()) || zero.String() != "{}" || zero.Elements() != nil {
		t.Error("the zero set is not empty")
	}
	if !NewAddrPortSet(netip.AddrPort{}).Match(ap("192.0.2.1:1")) {
		t.Error("the zero element does not match everything")
	}
}

// TestFlowFilterTranslatedNotIn: the full sync's reconcile filters select
// flows to a frontend translated to anything but the port's targets, and a
// node port's leaves alone the explicit frontends on its port number.
func TestFlowFilterTranslatedNotIn(t *testing.T) {
	ap := netip.MustParseAddrPort
	np := netip.AddrPortFrom(netip.Addr{}, 30053)
	targets := NewAddrPortSet(ap("192.0.2.10:53"), ap("192.0.2.11:53"))
	filters := []FlowFilter{
		{Protocol: lb.UDP, OrigDst: ap("198.51.100.10:53"), Translated: true, ReplySrcNotIn: targets},
		{Protocol: lb.UDP, OrigDst: np, Translated: true, ReplySrcNotIn: targets, OrigDstNotIn: NewAddrPortSet(ap("198.51.100.99:30053"))},
	}
	checkFlows(t, filters, []flowCase{
		{"to the frontend, a target", flow(17, "198.51.100.10", 53, "192.0.2.10", 53), false},
		{"to the frontend, the other target", flow(17, "198.51.100.10", 53, "192.0.2.11", 53), false},
		{"to the frontend, an endpoint removed while the syncer was down", flow(17, "198.51.100.10", 53, "192.0.2.12", 53), true},
		{"to the frontend, a target's address on another port", flow(17, "198.51.100.10", 53, "192.0.2.10", 54), true},
		{"to the frontend, untranslated", flow(17, "198.51.100.10", 53, "198.51.100.10", 53), false},
		{"to the frontend, SCTP", flow(132, "198.51.100.10", 53, "192.0.2.12", 53), false},
		{"another frontend, stale", flow(17, "198.51.100.11", 53, "192.0.2.12", 53), false},
		{"node port, a target (reached through the node port)", flow(17, "203.0.113.5", 30053, "192.0.2.11", 53), false},
		{"node port, a removed endpoint", flow(17, "203.0.113.5", 30053, "192.0.2.12", 53), true},
		{"node port on another local address, a removed endpoint", flow(17, "198.51.100.7", 30053, "192.0.2.12", 53), true},
		{"another port's cluster IP on the node port's number", flow(17, "198.51.100.99", 30053, "192.0.2.12", 53), false},
		{"the node's own untranslated flow to that port of another host", flow(17, "198.51.100.7", 30053, "198.51.100.7", 30053), false},
	})
}

// randFlows draws filters and flows from small pools, so that they meet
// often: addresses in both families and IPv4-mapped forms, a few ports,
// every field at its zero value now and then, untranslated flows.
type randFlows struct{ r *rand.Rand }

var (
	randAddrs = []netip.Addr{
		netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("192.0.2.10"),
		netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("::ffff:192.0.2.11"), netip.MustParseAddr("2001:db8::10"),
		netip.MustParseAddr("2001:db8:a1::10"), netip.MustParseAddr("fe80::1%eth0"), // a flow's is fe80::1, without the zone
	}
	randPorts = []uint16{53, 54, 8080, 30053}
	randProto = []lb.Protocol{lb.UDP, lb.SCTP, lb.TCP}
)

func (g randFlows) addrPort(zeroes bool) netip.AddrPort {
	var a netip.Addr
	var p uint16
	if !zeroes || g.r.IntN(3) > 0 {
		a = randAddrs[g.r.IntN(len(randAddrs))]
	}
	if !zeroes || g.r.IntN(3) > 0 {
		p = randPorts[g.r.IntN(len(randPorts))]
	}
	return netip.AddrPortFrom(a, p)
}

func (g randFlows) set() AddrPortSet {
	if g.r.IntN(3) > 0 {
		return AddrPortSet{}
	}
	var out []netip.AddrPort
	for range 1 + g.r.IntN(4) {
		out = append(out, g.addrPort(true))
	}
	return NewAddrPortSet(out...)
}

func (g randFlows) filter() FlowFilter {
	var f FlowFilter
	if g.r.IntN(4) > 0 {
		f.Protocol = randProto[g.r.IntN(len(randProto))]
	}
	f.OrigDst, f.ReplySrc = g.addrPort(true), g.addrPort(true)
	if g.r.IntN(2) == 0 {
		f.ReplySrc = netip.AddrPort{}
	}
	f.Untranslated, f.Translated = g.r.IntN(4) == 0, g.r.IntN(4) == 0
	f.ReplySrcNotIn, f.OrigDstNotIn = g.set(), g.set()
	return f
}

// ipOf returns a as netlink might: 4 bytes, or 16 for IPv4 now and then.
func (g randFlows) ipOf(a netip.Addr) net.IP {
	if a.Unmap().Is4() && g.r.IntN(4) > 0 {
		v4 := a.Unmap().As4()
		return net.IP(v4[:])
	}
	v6 := a.As16()
	return net.IP(v6[:])
}

func (g randFlows) flow() *netlink.ConntrackFlow {
	dst, rsrc := g.addrPort(false), g.addrPort(false)
	switch g.r.IntN(3) {
	case 0:
		rsrc = dst // untranslated
	case 1:
		rsrc = netip.AddrPortFrom(dst.Addr(), rsrc.Port()) // only the port translated, or not
	}
	f := &netlink.ConntrackFlow{}
	f.Forward.Protocol = randProto[g.r.IntN(len(randProto))].Number()
	f.Forward.SrcIP, f.Forward.SrcPort = net.ParseIP("198.51.100.200"), 40000
	f.Forward.DstIP, f.Forward.DstPort = g.ipOf(dst.Addr()), dst.Port()
	f.Reverse.Protocol = f.Forward.Protocol
	f.Reverse.SrcIP, f.Reverse.SrcPort = g.ipOf(rsrc.Addr()), rsrc.Port()
	return f
}

// TestFlowMatcherIndexProperty: on random flows and filters, the index
// matches exactly the flows a linear scan of the filters matches.
func TestFlowMatcherIndexProperty(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := randFlows{rand.New(rand.NewPCG(seed, 1))}
	counts := [2]int{}
	for round := range 400 {
		filters := make([]FlowFilter, g.r.IntN(30))
		for i := range filters {
			filters[i] = g.filter()
		}
		if len(filters) > 1 && g.r.IntN(4) == 0 {
			filters = append(filters, filters[0]) // a duplicate
		}
		m := newFlowMatcher(filters)
		for range 100 {
			fl := g.flow()
			want := linearMatch(filters, fl)
			if got := m.MatchConntrackFlow(fl); got != want {
				t.Fatalf("round %d: flow %v -> %s:%d reply from %s:%d: index %v, linear %v; filters:\n%s", round,
					fl.Forward.Protocol, fl.Forward.DstIP, fl.Forward.DstPort, fl.Reverse.SrcIP, fl.Reverse.SrcPort, got, want, filterLines(filters))
			}
			if want {
				counts[1]++
			} else {
				counts[0]++
			}
		}
	}
	// Both answers must be common, or the property says little.
	if total := counts[0] + counts[1]; counts[0] < total/10 || counts[1] < total/10 {
		t.Errorf("%d flows matched, %d did not: the draw is too one-sided", counts[1], counts[0])
	}
}

func filterLines(filters []FlowFilter) string {
	var b strings.Builder
	for _, f := range filters {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

func TestReconcileFlows(t *testing.T) {
	ap := netip.MustParseAddrPort
	cip, lbIP, np := ap("198.51.100.10:53"), ap("203.0.113.10:53"), netip.AddrPortFrom(netip.Addr{}, 30053)
	dns := &portFlows{proto: lb.UDP, reachable: true, targets: []netip.AddrPort{ap("192.0.2.1:53"), ap("192.0.2.2:53")}, frontends: []netip.AddrPort{cip, lbIP, np}}
	// Another port's cluster IP on the node port's number, and the same
	// in SCTP, on a port without endpoints.
	clash := &portFlows{proto: lb.UDP, reachable: true, targets: []netip.AddrPort{ap("192.0.2.9:53")}, frontends: []netip.AddrPort{ap("198.51.100.99:30053")}}
	empty := &portFlows{proto: lb.SCTP, frontends: []netip.AddrPort{ap("198.51.100.98:30053")}}
	got := reconcileFlows([]*portFlows{dns, nil, clash, empty})
	want := []string{
		"udp orig-dst 198.51.100.10:53 reply-src-not-in {192.0.2.1:53 192.0.2.2:53} translated",
		"udp orig-dst 203.0.113.10:53 reply-src-not-in {192.0.2.1:53 192.0.2.2:53} translated",
		"udp orig-dst *:30053 reply-src-not-in {192.0.2.1:53 192.0.2.2:53} orig-dst-not-in {198.51.100.99:30053} translated",
		"udp orig-dst 198.51.100.99:30053 reply-src-not-in {192.0.2.9:53} translated",
		"sctp orig-dst 198.51.100.98:30053 translated",
	}
	if s := filterStrings(got); !slices.Equal(s, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
	if got[0].ReplySrcNotIn != got[1].ReplySrcNotIn {
		t.Error("the frontends of one port do not share its set of targets")
	}
	if reconcileFlows(nil) == nil || len(reconcileFlows([]*portFlows{nil})) != 0 {
		t.Error("no ports: want no filters")
	}
	checkFlows(t, got, []flowCase{
		{"to the LB IP, a target", flow(17, "203.0.113.10", 53, "192.0.2.2", 53), false},
		{"to the LB IP, gone", flow(17, "203.0.113.10", 53, "192.0.2.3", 53), true},
		{"to the node port, a target", flow(17, "198.51.100.7", 30053, "192.0.2.1", 53), false},
		{"the other port's own flow", flow(17, "198.51.100.99", 30053, "192.0.2.9", 53), false},
		{"the other port's flow to dns's endpoint", flow(17, "198.51.100.99", 30053, "192.0.2.1", 53), true},
		{"the port without endpoints, any translated flow", flow(132, "198.51.100.98", 30053, "192.0.2.1", 53), true},
		{"the port without endpoints, untranslated (met its REJECT)", flow(132, "198.51.100.98", 30053, "198.51.100.98", 30053), false},
	})
}

func filterStrings(filters []FlowFilter) []string {
	out := make([]string, len(filters))
	for i, f := range filters {
		out[i] = f.String()
	}
	return out
}

// TestFullSyncReconcilesFlows drives both syncers: a full sync (the first
// of a new syncer, or FullSync) asks conntrack for the reconcile filters of
// every UDP port; a partial sync only for what its change made stale.
func TestFullSyncReconcilesFlows(t *testing.T) {
	ctx := context.Background()
	type syncer struct {
		name string
		sync func(full bool, svcs []ServiceEndpoints) error
		ct   *recordingConntrack
	}
	ipt, nft := &recordingConntrack{}, &recordingConntrack{}
	is, _, _ := newFakeSyncer(t, Config{}, IPTablesOptions{Conntrack: ipt})
	ns, _ := newFakeNFT(t, Config{}, NFTablesOptions{Conntrack: nft})
	syncers := []syncer{
		{"iptables", syncOrFull(ctx, is.Sync, is.FullSync), ipt},
		{"nftables", syncOrFull(ctx, ns.Sync, ns.FullSync), nft},
	}
	for _, s := range syncers {
		t.Run(s.name, func(t *testing.T) {
			tcp := clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10", "192.0.2.11")
			dns := clusterIPService("default", "dns", "198.51.100.53", 53, "192.0.2.20", "192.0.2.21")
			dns.Service.Type = lb.ServiceTypeNodePort
			dns.Service.Ports[0].Protocol = lb.UDP
			dns.Service.Ports[0].NodePort = 30053
			svcs := []ServiceEndpoints{tcp, dns} // dns is svcs[1]
			check := func(when string, want ...string) {
				t.Helper()
				got := filterStrings(s.ct.deleted[lb.IPv4])
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) || len(s.ct.deleted[lb.IPv6]) != 0 {
					t.Errorf("%s: deleted\n%s\nwant\n%s", when, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				s.ct.deleted = nil
			}
			if err := s.sync(false, svcs); err != nil {
				t.Fatal(err)
			}
			check("the first sync (a restart)",
				"udp orig-dst 198.51.100.53:53 untranslated", "udp orig-dst *:30053 untranslated",
				"udp orig-dst 198.51.100.53:53 reply-src-not-in {192.0.2.20:8080 192.0.2.21:8080} translated",
				"udp orig-dst *:30053 reply-src-not-in {192.0.2.20:8080 192.0.2.21:8080} translated")
			svcs[1].Endpoints = svcs[1].Endpoints[:1]
			if err := s.sync(false, svcs); err != nil {
				t.Fatal(err)
			}
			check("a partial sync that removes an endpoint",
				"udp orig-dst 198.51.100.53:53 reply-src 192.0.2.21:8080", "udp orig-dst *:30053 reply-src 192.0.2.21:8080")
			if err := s.sync(true, svcs); err != nil {
				t.Fatal(err)
			}
			check("a full sync without changes",
				"udp orig-dst 198.51.100.53:53 reply-src-not-in {192.0.2.20:8080} translated",
				"udp orig-dst *:30053 reply-src-not-in {192.0.2.20:8080} translated")
			if err := s.sync(false, svcs); err != nil {
				t.Fatal(err)
			}
			check("a partial sync without changes")
		})
	}
}

// syncOrFull returns a syncer's Sync and FullSync as one func.
func syncOrFull[S any](ctx context.Context, sync, full func(context.Context, []ServiceEndpoints) (S, error)) func(bool, []ServiceEndpoints) error {
	return func(isFull bool, svcs []ServiceEndpoints) error {
		f := sync
		if isFull {
			f = full
		}
		_, err := f(ctx, svcs)
		return err
	}
}

// benchFlows builds the benchmark's work: 3000 filters, those of a sync
// that removed 900 of a UDP port's endpoints (each paired with the port's
// cluster IP, LB IP and node port) plus the full sync's reconcile filters
// of 100 other UDP ports with three frontends each; and 100k flows, a
// third to the port with the removed endpoints, a third to the other
// ports, a third TCP.
func benchFlows() ([]FlowFilter, []*netlink.ConntrackFlow) {
	nth := func(base string, i int) netip.Addr {
		a := netip.MustParseAddr(base).As4()
		a[2] += byte(i / 250)
		a[3] += byte(i % 250)
		return netip.AddrFrom4(a)
	}
	cip, lbIP, np := netip.AddrPortFrom(nth("198.51.100.0", 1), 53), netip.AddrPortFrom(nth("203.0.113.0", 1), 53), netip.AddrPortFrom(netip.Addr{}, 30053)
	var filters []FlowFilter
	for i := range 900 {
		ep := netip.AddrPortFrom(nth("10.0.0.0", i), 8053)
		for _, f := range []netip.AddrPort{cip, lbIP, np} {
			filters = append(filters, FlowFilter{Protocol: lb.UDP, OrigDst: f, ReplySrc: ep})
		}
	}
	var others []*portFlows
	for i := range 100 {
		pf := &portFlows{proto: lb.UDP, reachable: true, frontends: []netip.AddrPort{
			netip.AddrPortFrom(nth("198.51.100.0", 10+i), 1000+uint16(i)), netip.AddrPortFrom(nth("203.0.113.0", 10+i), 1000+uint16(i)),
			netip.AddrPortFrom(netip.Addr{}, 31000+uint16(i)),
		}}
		for j := range 3 {
			pf.targets = append(pf.targets, netip.AddrPortFrom(nth("10.1.0.0", 3*i+j), 8053))
		}
		others = append(others, pf)
	}
	filters = append(filters, reconcileFlows(others)...)

	r := rand.New(rand.NewPCG(1, 2))
	mk := func(proto uint8, dst, rsrc netip.AddrPort) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{}
		f.Forward.Protocol, f.Reverse.Protocol = proto, proto
		f.Forward.SrcIP, f.Forward.SrcPort = net.IP(nth("192.0.2.0", r.IntN(200)).AsSlice()), uint16(1024+r.IntN(60000))
		f.Forward.DstIP, f.Forward.DstPort = net.IP(dst.Addr().AsSlice()), dst.Port()
		f.Reverse.SrcIP, f.Reverse.SrcPort = net.IP(rsrc.Addr().AsSlice()), rsrc.Port()
		return f
	}
	var flows []*netlink.ConntrackFlow
	for len(flows) < 100_000 {
		switch len(flows) % 3 {
		case 0: // to the port with removed endpoints, 1000 endpoints before
			f := []netip.AddrPort{cip, lbIP, netip.AddrPortFrom(nth("198.51.100.0", 200), 30053)}[r.IntN(3)]
			flows = append(flows, mk(17, f, netip.AddrPortFrom(nth("10.0.0.0", r.IntN(1000)), 8053)))
		case 1: // to another port, now and then to a stale endpoint
			i := r.IntN(100)
			f := others[i].frontends[r.IntN(2)]
			ep := others[i].targets[r.IntN(3)]
			if r.IntN(10) == 0 {
				ep = netip.AddrPortFrom(nth("10.2.0.0", r.IntN(100)), 8053)
			}
			flows = append(flows, mk(17, f, ep))
		default:
			flows = append(flows, mk(6, netip.AddrPortFrom(nth("198.51.100.0", r.IntN(100)), 443), netip.AddrPortFrom(nth("10.3.0.0", r.IntN(500)), 8443)))
		}
	}
	return filters, flows
}

// BenchmarkFlowMatcher compares, on the same 3000 filters and 100k flows,
// the indexed matcher (built afresh each time, as each Delete does) with a
// linear scan of the filters, and reports ns per flow for both and their
// ratio.
func BenchmarkFlowMatcher(b *testing.B) {
	filters, flows := benchFlows()
	var indexed, linear time.Duration
	var matched [2]int
	for b.Loop() {
		start := time.Now()
		m := newFlowMatcher(filters)
		for _, f := range flows {
			if m.MatchConntrackFlow(f) {
				matched[0]++
			}
		}
		indexed += time.Since(start)
		start = time.Now()
		for _, f := range flows {
			if linearMatch(filters, f) {
				matched[1]++
			}
		}
		linear += time.Since(start)
	}
	if matched[0] != matched[1] || matched[0] == 0 {
		b.Fatalf("the index matched %d flows, the linear scan %d", matched[0], matched[1])
	}
	n := float64(b.N) * float64(len(flows))
	b.ReportMetric(float64(indexed.Nanoseconds())/n, "indexed-ns/flow")
	b.ReportMetric(float64(linear.Nanoseconds())/n, "linear-ns/flow")
	b.ReportMetric(float64(linear)/float64(indexed), "linear/indexed")
	b.ReportMetric(float64(matched[0])/float64(b.N), "matched/op")
}
