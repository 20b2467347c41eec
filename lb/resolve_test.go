package lb

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// svc4 is a single-stack ClusterIP service on port 80 → 8080.
func svc4(edit ...func(*Service)) *Service {
	s := &Service{
		Namespace:  "ns",
		Name:       "svc",
		ClusterIPs: []netip.Addr{a4("198.51.100.1")},
		Ports:      []ServicePort{{Name: "http", Port: 80, TargetPort: PortNumber(8080)}},
	}
	for _, e := range edit {
		e(s)
	}
	return s
}

func nodePortSvc(s *Service) {
	s.Type = ServiceTypeNodePort
	s.Ports[0].NodePort = 30080
}

// ep builds an endpoint: state is "ready", "notready", "terminating"
// (serving and terminating), "dying" (terminating, not serving) or
// "ready-terminating" (ready, serving and terminating: what the
// EndpointSlice controller writes for a terminating pod of a service that
// publishes not-ready addresses).
func ep(addr, node, zone, state string) Endpoint {
	e := Endpoint{Addr: a4(addr), NodeName: node, Zone: zone}
	switch state {
	case "ready":
		e.Ready, e.Serving = true, true
	case "ready-terminating":
		e.Ready, e.Serving, e.Terminating = true, true, true
	case "terminating":
		e.Serving, e.Terminating = true, true
	case "dying":
		e.Terminating = true
	}
	return e
}

func addrs(ts []Target) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.String())
	}
	return out
}

func resolveOne(t *testing.T, s *Service, eps []Endpoint, node Node) ResolvedPort {
	t.Helper()
	rps, err := Resolve(s, eps, node)
	if err != nil {
		t.Fatal(err)
	}
	if len(rps) != 1 {
		t.Fatalf("%d resolved ports, want 1", len(rps))
	}
	return rps[0]
}

func TestSelectEndpoints(t *testing.T) {
	nodeA := Node{Name: "a", Zone: "z1"}
	for _, tc := range []struct {
		name string
		svc  *Service
		eps  []Endpoint
		node Node

		cluster, local, internal, external, reachable []string
		has                                           bool
		iv, ev                                        Verdict
		clusterFallback, localFallback, zone          bool
	}{
		{
			name: "ready only",
			svc:  svc4(),
			eps:  []Endpoint{ep("192.0.2.2", "b", "", "ready"), ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.3", "a", "", "notready"), ep("192.0.2.4", "a", "", "terminating")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			name: "graceful termination fallback",
			svc:  svc4(),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "terminating"), ep("192.0.2.2", "b", "", "dying"), ep("192.0.2.3", "b", "", "notready")},
			node: nodeA, has: true, iv: VerdictForward, clusterFallback: true,
			cluster: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "no usable endpoint rejects",
			svc:  svc4(nodePortSvc),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "notready"), ep("192.0.2.2", "a", "", "dying")},
			node: nodeA, has: false, iv: VerdictReject, ev: VerdictReject,
		},
		{
			name: "no endpoints at all rejects",
			svc:  svc4(),
			node: nodeA, iv: VerdictReject,
		},
		{
			name: "publishNotReadyAddresses",
			svc:  svc4(func(s *Service) { s.PublishNotReadyAddresses = true }),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "notready"), ep("192.0.2.2", "a", "", "dying")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			// The EndpointSlice controller sets ready = publishNotReady ||
			// (serving && !terminating): a terminating pod of such a service
			// is ready and terminating at once, and stays a backend.
			name: "publishNotReadyAddresses with a ready terminating endpoint",
			svc:  svc4(func(s *Service) { s.PublishNotReadyAddresses = true }),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "ready-terminating"), ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			name: "ready and terminating counts as ready",
			svc:  svc4(),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "ready-terminating"), ep("192.0.2.2", "b", "", "terminating")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "internal Local",
			svc:  svc4(func(s *Service) { s.InternalTrafficPolicy = TrafficPolicyLocal }),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			local: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "internal Local without local endpoints drops",
			svc:  svc4(func(s *Service) { s.InternalTrafficPolicy = TrafficPolicyLocal }),
			eps:  []Endpoint{ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictDrop,
		},
		{
			name: "local terminating fallback",
			svc:  svc4(func(s *Service) { s.InternalTrafficPolicy = TrafficPolicyLocal }),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "terminating"), ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward, localFallback: true,
			local: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "external Local keeps Cluster for internal and short-circuit traffic",
			svc:  svc4(nodePortSvc, func(s *Service) { s.ExternalTrafficPolicy = TrafficPolicyLocal }),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward, ev: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, local: []string{"192.0.2.1:8080"},
			internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, external: []string{"192.0.2.1:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			name: "external Local without local endpoints drops external only",
			svc:  svc4(nodePortSvc, func(s *Service) { s.ExternalTrafficPolicy = TrafficPolicyLocal }),
			eps:  []Endpoint{ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward, ev: VerdictDrop,
			cluster: []string{"192.0.2.2:8080"}, internal: []string{"192.0.2.2:8080"}, reachable: []string{"192.0.2.2:8080"},
		},
		{
			name: "both Local on an external service",
			svc: svc4(nodePortSvc, func(s *Service) {
				s.ExternalTrafficPolicy, s.InternalTrafficPolicy = TrafficPolicyLocal, TrafficPolicyLocal
			}),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "b", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward, ev: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, local: []string{"192.0.2.1:8080"},
			internal: []string{"192.0.2.1:8080"}, external: []string{"192.0.2.1:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			name: "same zone preferred",
			svc:  svc4(func(s *Service) { s.TrafficDistribution = PreferSameZone }),
			eps:  []Endpoint{ep("192.0.2.1", "b", "z1", "ready"), ep("192.0.2.2", "c", "z2", "ready"), ep("192.0.2.3", "d", "z1", "terminating")},
			node: nodeA, has: true, iv: VerdictForward, zone: true,
			cluster: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "zone without endpoints falls back to all",
			svc:  svc4(func(s *Service) { s.TrafficDistribution = PreferClose }),
			eps:  []Endpoint{ep("192.0.2.1", "b", "z2", "ready"), ep("192.0.2.2", "c", "z3", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			// kube-proxy's canUseTopology turns topology off when a ready
			// endpoint has no zone hint, and the EndpointSlice controller
			// gives an endpoint without a zone no hint.
			name: "a ready endpoint without a zone turns the preference off",
			svc:  svc4(func(s *Service) { s.TrafficDistribution = PreferSameZone }),
			eps:  []Endpoint{ep("192.0.2.1", "b", "z1", "ready"), ep("192.0.2.2", "c", "z2", "ready"), ep("192.0.2.3", "d", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster:   []string{"192.0.2.1:8080", "192.0.2.2:8080", "192.0.2.3:8080"},
			internal:  []string{"192.0.2.1:8080", "192.0.2.2:8080", "192.0.2.3:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080", "192.0.2.3:8080"},
		},
		{
			name: "an endpoint without a zone that is not ready does not count",
			svc:  svc4(func(s *Service) { s.TrafficDistribution = PreferSameZone }),
			eps:  []Endpoint{ep("192.0.2.1", "b", "z1", "ready"), ep("192.0.2.2", "c", "z2", "ready"), ep("192.0.2.3", "d", "", "terminating"), ep("192.0.2.4", "d", "", "notready")},
			node: nodeA, has: true, iv: VerdictForward, zone: true,
			cluster: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
		{
			name: "zone ignored without a preference",
			svc:  svc4(),
			eps:  []Endpoint{ep("192.0.2.1", "b", "z1", "ready"), ep("192.0.2.2", "c", "z2", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080", "192.0.2.2:8080"}, internal: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
			reachable: []string{"192.0.2.1:8080", "192.0.2.2:8080"},
		},
		{
			name: "other family left out",
			svc:  svc4(),
			eps:  []Endpoint{ep("2001:db8::1", "a", "", "ready"), ep("192.0.2.1", "a", "", "ready")},
			node: nodeA, has: true, iv: VerdictForward,
			cluster: []string{"192.0.2.1:8080"}, internal: []string{"192.0.2.1:8080"}, reachable: []string{"192.0.2.1:8080"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := resolveOne(t, tc.svc, tc.eps, tc.node)
			sel := rp.Endpoints
			for _, c := range []struct {
				what      string
				got, want []Target
				wantAddrs []string
			}{
				{"Cluster", sel.Cluster, nil, tc.cluster},
				{"Local", sel.Local, nil, tc.local},
				{"Internal", sel.Internal, nil, tc.internal},
				{"External", sel.External, nil, tc.external},
				{"Reachable", sel.Reachable, nil, tc.reachable},
			} {
				want := c.wantAddrs
				if want == nil {
					want = []string{}
				}
				if got := addrs(c.got); !slices.Equal(got, want) {
					t.Errorf("%s = %v, want %v", c.what, got, want)
				}
			}
			// Serving: every serving endpoint of the port's family, on any
			// node, each address once; a superset of Reachable.
			var wantServing, gotServing []netip.Addr
			for _, e := range tc.eps {
				if (e.IsServing() || tc.svc.PublishNotReadyAddresses) && e.Addr.Is4() == (rp.Family == IPv4) && !slices.Contains(wantServing, e.Addr) {
					wantServing = append(wantServing, e.Addr)
				}
			}
			slices.SortFunc(wantServing, netip.Addr.Compare)
			for _, st := range sel.Serving {
				gotServing = append(gotServing, st.AddrPort.Addr())
			}
			if !slices.Equal(gotServing, wantServing) {
				t.Errorf("Serving = %v, want %v", gotServing, wantServing)
			}
			for _, r := range sel.Reachable {
				if !slices.Contains(sel.Serving, r) {
					t.Errorf("Reachable %v is not in Serving %v", r, sel.Serving)
				}
			}
			if sel.HasEndpoints != tc.has || sel.InternalVerdict != tc.iv || sel.ExternalVerdict != tc.ev {
				t.Errorf("has=%v internal=%q external=%q, want %v %q %q", sel.HasEndpoints, sel.InternalVerdict, sel.ExternalVerdict, tc.has, tc.iv, tc.ev)
			}
			if sel.ClusterFallback != tc.clusterFallback || sel.LocalFallback != tc.localFallback || sel.ZoneFiltered != tc.zone {
				t.Errorf("fallbacks cluster=%v local=%v zone=%v, want %v %v %v", sel.ClusterFallback, sel.LocalFallback, sel.ZoneFiltered, tc.clusterFallback, tc.localFallback, tc.zone)
			}
		})
	}
}

func TestNamedTargetPorts(t *testing.T) {
	s := svc4(func(s *Service) {
		s.Ports = []ServicePort{
			{Name: "http", Port: 80, TargetPort: PortName("web")},
			{Name: "dns", Port: 53, Protocol: UDP, TargetPort: PortName("dns")},
			{Name: "same", Port: 443},
		}
	})
	eps := []Endpoint{
		{Addr: a4("192.0.2.1"), Ready: true, Ports: []EndpointPort{{Name: "web", Port: 8080}, {Name: "dns", Protocol: UDP, Port: 5353}}},
		{Addr: a4("192.0.2.2"), Ready: true, Ports: []EndpointPort{{Name: "web", Port: 9090}, {Name: "dns", Port: 5353}}}, // dns is TCP here
		{Addr: a4("192.0.2.3"), Ready: true},
	}
	rps, err := Resolve(s, eps, Node{})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"192.0.2.1:8080", "192.0.2.2:9090"},
		{"192.0.2.1:5353"},
		{"192.0.2.1:443", "192.0.2.2:443", "192.0.2.3:443"},
	}
	for i, rp := range rps {
		if got := addrs(rp.Endpoints.Cluster); !slices.Equal(got, want[i]) {
			t.Errorf("port %s: %v, want %v", rp.Name, got, want[i])
		}
	}
	// A named port nobody has: no endpoints, reject.
	s.Ports = []ServicePort{{Name: "x", Port: 1, TargetPort: PortName("nope")}}
	rp := resolveOne(t, s, eps, Node{})
	if rp.Endpoints.HasEndpoints || rp.Endpoints.InternalVerdict != VerdictReject {
		t.Errorf("unresolvable port: %+v", rp.Endpoints)
	}
}

func TestResolveDualStackFrontends(t *testing.T) {
	s := validLB()
	eps := []Endpoint{
		{Addr: a4("192.0.2.1"), Ready: true, NodeName: "a", Weight: 3, Ports: []EndpointPort{{Name: "http", Port: 8080}}},
		{Addr: a4("2001:db8::1"), Ready: true, NodeName: "b", Ports: []EndpointPort{{Name: "http", Port: 8081}}},
	}
	rps, err := Resolve(s, eps, Node{Name: "a", Zone: "z1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rps) != 4 {
		t.Fatalf("%d ports, want 2 ports × 2 families", len(rps))
	}
	v4, v6 := rps[0], rps[1]
	if v4.Family != IPv4 || v6.Family != IPv6 || rps[2].Family != IPv4 || rps[2].Name.Port != "dns" {
		t.Fatalf("order: %s/%s %s/%s %s/%s", v4.Name, v4.Family, v6.Name, v6.Family, rps[2].Name, rps[2].Family)
	}
	if v4.Name.String() != "default/web:http" || v4.Name.Key() != "default/web:http/tcp" || rps[2].Name.Key() != "default/web:dns/udp" {
		t.Errorf("names %q %q %q", v4.Name, v4.Name.Key(), rps[2].Name.Key())
	}
	wantV4 := []Frontend{
		{Kind: FrontendClusterIP, Addr: a4("198.51.100.10"), Port: 80},
		{Kind: FrontendNodePort, Port: 30080},
		{Kind: FrontendExternalIP, Addr: a4("203.0.113.5"), Port: 80},
		{Kind: FrontendLoadBalancer, Addr: a4("203.0.113.100"), Port: 80, IPMode: IPModeVIP},
		{Kind: FrontendLoadBalancer, Addr: a4("192.0.2.50"), Port: 80, IPMode: IPModeProxy},
	}
	if !slices.Equal(v4.Frontends, wantV4) {
		t.Errorf("IPv4 frontends\n got %+v\nwant %+v", v4.Frontends, wantV4)
	}
	wantV6 := []Frontend{
		{Kind: FrontendClusterIP, Addr: a4("2001:db8::10"), Port: 80},
		{Kind: FrontendNodePort, Port: 30080},
		{Kind: FrontendLoadBalancer, Addr: a4("2001:db8:1::100"), Port: 80, IPMode: IPModeVIP},
	}
	if !slices.Equal(v6.Frontends, wantV6) {
		t.Errorf("IPv6 frontends\n got %+v\nwant %+v", v6.Frontends, wantV6)
	}
	if lbs := v4.FrontendsOf(FrontendLoadBalancer); len(lbs) != 2 || !lbs[0].Intercept() || lbs[1].Intercept() {
		t.Errorf("ipMode Proxy must not be intercepted: %+v", lbs)
	}
	if !slices.Equal(v4.SourceRanges, []netip.Prefix{p4("192.0.2.0/24")}) || !v4.RestrictSources ||
		!slices.Equal(v6.SourceRanges, []netip.Prefix{p4("2001:db8::/32")}) {
		t.Errorf("source ranges %v / %v", v4.SourceRanges, v6.SourceRanges)
	}
	if v4.Affinity != (SessionAffinity{Type: AffinityClientIP, TimeoutSeconds: 60}) || v4.HealthCheckNodePort != 32000 {
		t.Errorf("affinity %+v health %d", v4.Affinity, v4.HealthCheckNodePort)
	}
	if v4.ExternalPolicy != TrafficPolicyLocal || v4.MasqueradeExternal() || !v4.ExternallyAccessible {
		t.Errorf("policy %s masquerade %v", v4.ExternalPolicy, v4.MasqueradeExternal())
	}
	// Endpoints per family, target port resolved, weight kept.
	if got := v4.Endpoints.External; len(got) != 1 || got[0].AddrPort != netip.MustParseAddrPort("192.0.2.1:8080") || got[0].Weight != 3 || !got[0].Local {
		t.Errorf("IPv4 external %+v", got)
	}
	// IPv6: the only endpoint is on node b, external Local drops, cluster
	// traffic forwards.
	if v6.Endpoints.ExternalVerdict != VerdictDrop || v6.Endpoints.InternalVerdict != VerdictForward ||
		addrs(v6.Endpoints.Internal)[0] != "[2001:db8::1]:8081" || v6.Endpoints.Internal[0].Weight != 1 {
		t.Errorf("IPv6 selection %+v", v6.Endpoints)
	}
}

func TestResolveDefaultsAndShape(t *testing.T) {
	s := svc4(func(s *Service) {
		s.SessionAffinity.Type = AffinityClientIP
		s.Ports[0].TargetPort = TargetPort{}
		s.Ports[0].Protocol = ""
	})
	rp := resolveOne(t, s, []Endpoint{ep("192.0.2.1", "", "", "ready")}, Node{})
	if rp.Affinity.TimeoutSeconds != DefaultAffinityTimeoutSeconds || rp.Name.Protocol != TCP {
		t.Errorf("defaults: %+v %s", rp.Affinity, rp.Name.Protocol)
	}
	if got := addrs(rp.Endpoints.Cluster); !slices.Equal(got, []string{"192.0.2.1:80"}) {
		t.Errorf("target port defaults to the port: %v", got)
	}
	if rp.ExternallyAccessible || rp.Endpoints.External != nil || rp.Endpoints.ExternalVerdict != VerdictNone || rp.MasqueradeExternal() {
		t.Errorf("internal-only port: %+v", rp)
	}
	if rp.RestrictSources || len(rp.FrontendsOf(FrontendNodePort)) != 0 {
		t.Errorf("shape %+v", rp)
	}

	// A family without source ranges stays closed when the service has
	// ranges in the other family.
	lb := validLB()
	lb.LoadBalancerSourceRanges = lb.LoadBalancerSourceRanges[1:]
	rps, err := Resolve(lb, nil, Node{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !rps[0].RestrictSources || len(rps[0].SourceRanges) != 0 {
		t.Errorf("IPv4 with only IPv6 ranges: restrict=%v ranges=%v", rps[0].RestrictSources, rps[0].SourceRanges)
	}

	// Headless: nothing to program.
	if rps, err := Resolve(&Service{Namespace: "ns", Name: "h"}, nil, Node{}); err != nil || rps != nil {
		t.Errorf("headless: %v %v", rps, err)
	}
}

func TestResolveRejects(t *testing.T) {
	local := svc4(func(s *Service) { s.InternalTrafficPolicy = TrafficPolicyLocal })
	bad := []Endpoint{{Addr: a4("192.0.2.1"), Ready: true, Zone: "bad zone"}}
	_, err := Resolve(local, bad, Node{Zone: "bad zone"})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{"node.name", "node.zone", "endpoints[0].zone"} {
		if ve.Field(f) == nil {
			t.Errorf("no error for %s in %v", f, err)
		}
	}
	if _, err := Resolve(svc4(func(s *Service) { s.Ports[0].Port = 0 }), nil, Node{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid service resolved: %v", err)
	}
	r := Resolver{Node: Node{Name: "a"}, Validation: ValidateOptions{NodePortRange: PortRange{Min: 80, Max: 90}}}
	if _, err := r.Resolve(svc4(nodePortSvc), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("node port outside the resolver's range accepted: %v", err)
	}
}

// TestResolvePendingLoadBalancerLocal: a LoadBalancer service with
// externalTrafficPolicy Local resolves before its IP is assigned. With node
// ports, the node ports carry the Local policy; without them
// (allocateLoadBalancerNodePorts=false) and with only a Proxy-mode IP, no
// frontend in the family takes external traffic yet, so the port is not
// externally accessible and its effective external policy is Cluster.
func TestResolvePendingLoadBalancerLocal(t *testing.T) {
	eps := []Endpoint{ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "b", "", "ready")}
	for _, tc := range []struct {
		name       string
		edit       func(*Service)
		accessible bool
		policy     TrafficPolicy
		ev         Verdict
		external   []string
		reachable  []string
	}{
		{"node ports, no IP yet", func(s *Service) { s.Ports[0].NodePort = 30080 },
			true, TrafficPolicyLocal, VerdictForward, []string{"192.0.2.1:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
		{"no node ports, no IP yet", func(*Service) {},
			false, TrafficPolicyCluster, VerdictNone, nil, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
		{"no node ports, Proxy-mode IP only", func(s *Service) {
			s.LoadBalancerIngress = []LoadBalancerIngress{{IP: a4("203.0.113.7"), IPMode: IPModeProxy}}
		}, false, TrafficPolicyCluster, VerdictNone, nil, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
		{"no node ports, VIP-mode IP", func(s *Service) {
			s.LoadBalancerIngress = []LoadBalancerIngress{{IP: a4("203.0.113.7")}}
		}, true, TrafficPolicyLocal, VerdictForward, []string{"192.0.2.1:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svc4(func(s *Service) {
				s.Type, s.ExternalTrafficPolicy = ServiceTypeLoadBalancer, TrafficPolicyLocal
			}, tc.edit)
			if !s.ExternallyAccessible() {
				t.Error("a LoadBalancer service is externally accessible by type")
			}
			rp := resolveOne(t, s, eps, Node{Name: "a"})
			if rp.ExternallyAccessible != tc.accessible || rp.ExternalPolicy != tc.policy || rp.Endpoints.ExternalVerdict != tc.ev {
				t.Errorf("accessible=%v policy=%s verdict=%q, want %v %s %q",
					rp.ExternallyAccessible, rp.ExternalPolicy, rp.Endpoints.ExternalVerdict, tc.accessible, tc.policy, tc.ev)
			}
			if rp.MasqueradeExternal() {
				t.Error("MasqueradeExternal with a Local policy or no external frontend")
			}
			want := tc.external
			if want == nil {
				want = []string{}
			}
			if got := addrs(rp.Endpoints.External); !slices.Equal(got, want) {
				t.Errorf("External = %v, want %v", got, want)
			}
			if got := addrs(rp.Endpoints.Reachable); !slices.Equal(got, tc.reachable) {
				t.Errorf("Reachable = %v, want %v", got, tc.reachable)
			}
		})
	}
}

// TestResolveExternalAccessPerFamily: whether a port takes external traffic,
// its effective external policy and masquerading are decided per family,
// from that family's frontends, as kube-proxy filters external and VIP
// ingress IPs by family first. A dual-stack service with only an IPv4
// external IP takes no external traffic on IPv6.
func TestResolveExternalAccessPerFamily(t *testing.T) {
	eps := []Endpoint{
		ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "b", "", "ready"),
		{Addr: a4("2001:db8::1"), NodeName: "a", Ready: true}, {Addr: a4("2001:db8::2"), NodeName: "b", Ready: true},
	}
	dual := func(edit ...func(*Service)) *Service {
		return svc4(append([]func(*Service){func(s *Service) {
			s.ClusterIPs = append(s.ClusterIPs, a4("2001:db8::10"))
		}}, edit...)...)
	}
	type want struct {
		accessible, masquerade bool
		policy                 TrafficPolicy
		ev                     Verdict
		external, reachable    []string
	}
	for _, tc := range []struct {
		name   string
		svc    *Service
		v4, v6 want
	}{
		{
			name: "IPv4 external IP only, policies Cluster",
			svc:  dual(func(s *Service) { s.ExternalIPs = []netip.Addr{a4("203.0.113.5")} }),
			v4: want{true, true, TrafficPolicyCluster, VerdictForward,
				[]string{"192.0.2.1:8080", "192.0.2.2:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
			v6: want{false, false, TrafficPolicyCluster, VerdictNone,
				nil, []string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		},
		{
			name: "IPv4 external IP only, both policies Local",
			svc: dual(func(s *Service) {
				s.ExternalIPs = []netip.Addr{a4("203.0.113.5")}
				s.ExternalTrafficPolicy, s.InternalTrafficPolicy = TrafficPolicyLocal, TrafficPolicyLocal
			}),
			// IPv4 keeps Cluster for short-circuited external traffic.
			v4: want{true, false, TrafficPolicyLocal, VerdictForward,
				[]string{"192.0.2.1:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
			// IPv6 uses the Local internal policy only.
			v6: want{false, false, TrafficPolicyCluster, VerdictNone,
				nil, []string{"[2001:db8::1]:8080"}},
		},
		{
			name: "IPv4 VIP-mode and IPv6 Proxy-mode load-balancer IPs, no node port",
			svc: dual(func(s *Service) {
				s.Type, s.ExternalTrafficPolicy = ServiceTypeLoadBalancer, TrafficPolicyLocal
				s.LoadBalancerIngress = []LoadBalancerIngress{{IP: a4("203.0.113.5")}, {IP: a4("2001:db8:1::5"), IPMode: IPModeProxy}}
			}),
			v4: want{true, false, TrafficPolicyLocal, VerdictForward,
				[]string{"192.0.2.1:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
			v6: want{false, false, TrafficPolicyCluster, VerdictNone,
				nil, []string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		},
		{
			name: "a node port makes both families external",
			svc: dual(nodePortSvc, func(s *Service) {
				s.ExternalIPs = []netip.Addr{a4("203.0.113.5")}
			}),
			v4: want{true, true, TrafficPolicyCluster, VerdictForward,
				[]string{"192.0.2.1:8080", "192.0.2.2:8080"}, []string{"192.0.2.1:8080", "192.0.2.2:8080"}},
			v6: want{true, true, TrafficPolicyCluster, VerdictForward,
				[]string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}, []string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rps, err := Resolve(tc.svc, eps, Node{Name: "a"})
			if err != nil {
				t.Fatal(err)
			}
			if len(rps) != 2 || rps[0].Family != IPv4 || rps[1].Family != IPv6 {
				t.Fatalf("resolved %d ports", len(rps))
			}
			for i, w := range []want{tc.v4, tc.v6} {
				rp := rps[i]
				if rp.ExternallyAccessible != w.accessible || rp.MasqueradeExternal() != w.masquerade ||
					rp.ExternalPolicy != w.policy || rp.Endpoints.ExternalVerdict != w.ev {
					t.Errorf("%s: accessible=%v masquerade=%v policy=%s verdict=%q, want %v %v %s %q", rp.Family,
						rp.ExternallyAccessible, rp.MasqueradeExternal(), rp.ExternalPolicy, rp.Endpoints.ExternalVerdict,
						w.accessible, w.masquerade, w.policy, w.ev)
				}
				if got := tc.svc.PortExternallyAccessible(tc.svc.Ports[0], rp.Family); got != rp.ExternallyAccessible {
					t.Errorf("%s: Service.PortExternallyAccessible = %v, ResolvedPort says %v", rp.Family, got, rp.ExternallyAccessible)
				}
				if got := tc.svc.ExternalPolicy(tc.svc.Ports[0], rp.Family); got != rp.ExternalPolicy {
					t.Errorf("%s: Service.ExternalPolicy = %s, ResolvedPort says %s", rp.Family, got, rp.ExternalPolicy)
				}
				external := w.external
				if external == nil {
					external = []string{}
				}
				if got := addrs(rp.Endpoints.External); !slices.Equal(got, external) {
					t.Errorf("%s: External = %v, want %v", rp.Family, got, external)
				}
				if got := addrs(rp.Endpoints.Reachable); !slices.Equal(got, w.reachable) {
					t.Errorf("%s: Reachable = %v, want %v", rp.Family, got, w.reachable)
				}
			}
		})
	}
}

// TestResolveDuplicateEndpoints: an address may appear in several
// endpoints, as Kubernetes produces it. Endpoints that resolve to the same
// address and port for a service port become one target: one that is not
// terminating (kube-proxy prefers it too: with a reused pod IP it is the
// pod that owns the address now), then one that is ready, then the first.
// Different ports on one address stay separate targets.
func TestResolveDuplicateEndpoints(t *testing.T) {
	named := svc4(func(s *Service) { s.Ports[0].TargetPort = PortName("web") })
	withPort := func(e Endpoint, port uint16) Endpoint {
		e.Ports = []EndpointPort{{Name: "web", Port: port}}
		return e
	}
	for _, tc := range []struct {
		name string
		svc  *Service
		eps  []Endpoint
		// cluster lists the Cluster targets as "addr:port node".
		cluster  []string
		fallback bool
	}{
		{
			name:    "identical endpoints in two slices are merged",
			svc:     svc4(),
			eps:     []Endpoint{ep("192.0.2.1", "a", "z1", "ready"), ep("192.0.2.2", "b", "z1", "ready"), ep("192.0.2.1", "a", "z1", "ready")},
			cluster: []string{"192.0.2.1:8080 a", "192.0.2.2:8080 b"},
		},
		{
			name:    "hostNetwork pods share the node address on different ports",
			svc:     named,
			eps:     []Endpoint{withPort(ep("192.0.2.1", "a", "", "ready"), 8080), withPort(ep("192.0.2.1", "a", "", "ready"), 8081)},
			cluster: []string{"192.0.2.1:8080 a", "192.0.2.1:8081 a"},
		},
		{
			name:    "a pod that is not terminating wins over a terminating one",
			svc:     svc4(),
			eps:     []Endpoint{ep("192.0.2.1", "a", "", "ready-terminating"), ep("192.0.2.1", "b", "", "ready")},
			cluster: []string{"192.0.2.1:8080 b"},
		},
		{
			name: "even when it is not ready yet (a reused pod IP)",
			svc:  svc4(),
			eps:  []Endpoint{ep("192.0.2.1", "a", "", "terminating"), ep("192.0.2.1", "b", "", "notready"), ep("192.0.2.2", "b", "", "ready")},
			// The terminating pod would have been the fallback, but the
			// address belongs to the new pod, which is not ready.
			cluster: []string{"192.0.2.2:8080 b"},
		},
		{
			name:    "a ready duplicate wins over one that is not",
			svc:     svc4(),
			eps:     []Endpoint{ep("192.0.2.1", "b", "", "notready"), ep("192.0.2.1", "a", "", "ready")},
			cluster: []string{"192.0.2.1:8080 a"},
		},
		{
			name:    "of two equal duplicates the first stays",
			svc:     svc4(),
			eps:     []Endpoint{ep("192.0.2.1", "b", "z2", "ready"), ep("192.0.2.1", "a", "z1", "ready")},
			cluster: []string{"192.0.2.1:8080 b"},
		},
		{
			name:     "of two terminating duplicates the first stays",
			svc:      svc4(),
			eps:      []Endpoint{ep("192.0.2.1", "a", "", "terminating"), ep("192.0.2.1", "b", "", "terminating")},
			cluster:  []string{"192.0.2.1:8080 a"},
			fallback: true,
		},
		{
			name: "duplicates only where the resolved ports meet",
			svc:  named,
			eps: []Endpoint{
				withPort(ep("192.0.2.1", "b", "", "terminating"), 8080),
				withPort(ep("192.0.2.1", "a", "", "ready"), 8081),
				withPort(ep("192.0.2.1", "a", "", "ready"), 8080),
			},
			cluster: []string{"192.0.2.1:8080 a", "192.0.2.1:8081 a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateEndpoints(tc.eps); err != nil {
				t.Fatalf("Kubernetes produces these endpoints: %v", err)
			}
			rp := resolveOne(t, tc.svc, tc.eps, Node{Name: "a"})
			got := []string{}
			for _, tg := range rp.Endpoints.Cluster {
				got = append(got, tg.String()+" "+tg.NodeName)
			}
			if !slices.Equal(got, tc.cluster) || rp.Endpoints.ClusterFallback != tc.fallback {
				t.Errorf("Cluster = %v fallback=%v, want %v %v", got, rp.Endpoints.ClusterFallback, tc.cluster, tc.fallback)
			}
			if !slices.Equal(rp.Endpoints.Reachable, rp.Endpoints.Cluster) {
				t.Errorf("Reachable %v differs from Cluster", addrs(rp.Endpoints.Reachable))
			}
		})
	}
}

// TestResolveRepeatedFrontendAddresses: Kubernetes does not reject an
// external IP listed twice, nor a load-balancer status that repeats an IP;
// each address gives one frontend (the first listing wins, ipMode
// included).
func TestResolveRepeatedFrontendAddresses(t *testing.T) {
	s := svc4(func(s *Service) {
		s.Type = ServiceTypeLoadBalancer
		s.ExternalIPs = []netip.Addr{a4("203.0.113.5"), a4("203.0.113.6"), a4("203.0.113.5")}
		s.LoadBalancerIngress = []LoadBalancerIngress{
			{IP: a4("203.0.113.7"), IPMode: IPModeProxy}, {IP: a4("203.0.113.8")}, {IP: a4("203.0.113.7"), IPMode: IPModeVIP},
		}
	})
	if err := s.Validate(); err != nil {
		t.Fatalf("Kubernetes accepts repeated addresses: %v", err)
	}
	rp := resolveOne(t, s, []Endpoint{ep("192.0.2.1", "a", "", "ready")}, Node{Name: "a"})
	want := []Frontend{
		{Kind: FrontendClusterIP, Addr: a4("198.51.100.1"), Port: 80},
		{Kind: FrontendExternalIP, Addr: a4("203.0.113.5"), Port: 80},
		{Kind: FrontendExternalIP, Addr: a4("203.0.113.6"), Port: 80},
		{Kind: FrontendLoadBalancer, Addr: a4("203.0.113.7"), Port: 80, IPMode: IPModeProxy},
		{Kind: FrontendLoadBalancer, Addr: a4("203.0.113.8"), Port: 80, IPMode: IPModeVIP},
	}
	if !slices.Equal(rp.Frontends, want) {
		t.Errorf("frontends\n got %+v\nwant %+v", rp.Frontends, want)
	}
}

// TestResolveIgnoresAddressesOfAMissingFamily: an external IP or a VIP-mode
// ingress IP of a family the service has no cluster IP for is accepted, as
// Kubernetes accepts it, and left out of the resolution, as kube-proxy
// leaves it out.
func TestResolveIgnoresAddressesOfAMissingFamily(t *testing.T) {
	s := svc4(func(s *Service) {
		s.Type = ServiceTypeLoadBalancer
		s.ExternalIPs = []netip.Addr{a4("2001:db8::5")}
		s.LoadBalancerIngress = []LoadBalancerIngress{{IP: a4("2001:db8:1::5")}}
	})
	rp := resolveOne(t, s, []Endpoint{ep("192.0.2.1", "a", "", "ready")}, Node{Name: "a"})
	want := []Frontend{{Kind: FrontendClusterIP, Addr: a4("198.51.100.1"), Port: 80}}
	if !slices.Equal(rp.Frontends, want) {
		t.Errorf("frontends %+v, want only the cluster IP", rp.Frontends)
	}
	if rp.ExternallyAccessible || rp.Endpoints.ExternalVerdict != VerdictNone || rp.Endpoints.External != nil {
		t.Errorf("IPv4 port externally accessible through IPv6 addresses: %+v", rp)
	}
}

// TestTargetPortConventions: an endpoint's port for a service port comes,
// in this order, from the endpoint port named after the service port (the
// EndpointSlice convention kube-proxy reads: slice ports carry the service
// port's name and the resolved number), from the endpoint port named by a
// named target port (the container-port convention), or from the numeric
// target port (or the service port).
func TestTargetPortConventions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		port  ServicePort
		ports []EndpointPort
		want  string // "" when the endpoint is not a backend of the port
	}{
		{"slice port named after the service port", ServicePort{Name: "http", Port: 80, TargetPort: PortName("web")},
			[]EndpointPort{{Name: "http", Port: 8080}}, "192.0.2.1:8080"},
		{"slice port wins over a numeric target port", ServicePort{Name: "http", Port: 80, TargetPort: PortNumber(8080)},
			[]EndpointPort{{Name: "http", Port: 9090}}, "192.0.2.1:9090"},
		{"slice port of an unnamed service port", ServicePort{Port: 80, TargetPort: PortNumber(8080)},
			[]EndpointPort{{Port: 9090}}, "192.0.2.1:9090"},
		{"slice port name longer than a container port name", ServicePort{Name: "metrics-for-prometheus", Port: 9100, TargetPort: PortName("metrics")},
			[]EndpointPort{{Name: "metrics-for-prometheus", Port: 19100}}, "192.0.2.1:19100"},
		{"slice port name that is a number", ServicePort{Name: "8443", Port: 443},
			[]EndpointPort{{Name: "8443", Port: 8443}}, "192.0.2.1:8443"},
		{"slice port of another protocol does not count", ServicePort{Name: "dns", Protocol: UDP, Port: 53, TargetPort: PortNumber(5353)},
			[]EndpointPort{{Name: "dns", Port: 1053}}, "192.0.2.1:5353"},
		{"service-port name wins over the named container port", ServicePort{Name: "http", Port: 80, TargetPort: PortName("web")},
			[]EndpointPort{{Name: "web", Port: 8080}, {Name: "http", Port: 9090}}, "192.0.2.1:9090"},
		{"container port named by the target port", ServicePort{Name: "http", Port: 80, TargetPort: PortName("web")},
			[]EndpointPort{{Name: "web", Port: 8080}, {Name: "admin", Port: 9000}}, "192.0.2.1:8080"},
		{"container port of another protocol does not count", ServicePort{Name: "dns", Protocol: UDP, Port: 53, TargetPort: PortName("dns-port")},
			[]EndpointPort{{Name: "dns-port", Protocol: TCP, Port: 5353}}, ""},
		{"numeric target port when no name matches", ServicePort{Name: "http", Port: 80, TargetPort: PortNumber(8080)},
			[]EndpointPort{{Name: "admin", Port: 9000}}, "192.0.2.1:8080"},
		{"service port when no target port is set", ServicePort{Name: "http", Port: 80}, nil, "192.0.2.1:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svc4(func(s *Service) { s.Ports = []ServicePort{tc.port} })
			eps := []Endpoint{{Addr: a4("192.0.2.1"), Ready: true, Ports: tc.ports}}
			rp := resolveOne(t, s, eps, Node{})
			want := []string{}
			if tc.want != "" {
				want = []string{tc.want}
			}
			if got := addrs(rp.Endpoints.Cluster); !slices.Equal(got, want) {
				t.Errorf("Cluster = %v, want %v", got, want)
			}
		})
	}
}

// TestEndpointSelectionListsDoNotShareSpareCapacity: the lists of an
// EndpointSelection may share storage, but none has spare capacity, so a
// caller that appends to two of them gets two separate lists instead of
// one append overwriting the other.
func TestEndpointSelectionListsDoNotShareSpareCapacity(t *testing.T) {
	s := svc4(nodePortSvc, func(s *Service) { s.ExternalTrafficPolicy = TrafficPolicyLocal })
	// A duplicate and an endpoint of the other family leave the list of
	// all targets shorter than the endpoints; every endpoint is ready and
	// local, so Cluster, Local and Serving are all of them.
	eps := []Endpoint{
		ep("192.0.2.1", "a", "", "ready"), ep("192.0.2.2", "a", "", "ready"),
		ep("192.0.2.1", "a", "", "ready"), ep("2001:db8::1", "a", "", "ready"),
	}
	sel := resolveOne(t, s, eps, Node{Name: "a"}).Endpoints
	lists := []struct {
		name string
		ts   []Target
	}{
		{"Cluster", sel.Cluster}, {"Local", sel.Local}, {"Internal", sel.Internal},
		{"External", sel.External}, {"Reachable", sel.Reachable}, {"Serving", sel.Serving},
	}
	want := []string{"192.0.2.1:8080", "192.0.2.2:8080"}
	grown := make([][]Target, len(lists))
	for i, l := range lists {
		if got := addrs(l.ts); !slices.Equal(got, want) {
			t.Fatalf("%s = %v, want %v", l.name, got, want)
		}
		marker := Target{AddrPort: netip.AddrPortFrom(a4("203.0.113.1"), uint16(i+1))}
		grown[i] = append(l.ts, marker)
	}
	for i, l := range lists {
		if got := grown[i][len(grown[i])-1].AddrPort.Port(); got != uint16(i+1) {
			t.Errorf("appending to %s was overwritten by an append to another list (port %d, want %d)", l.name, got, i+1)
		}
		if got := addrs(l.ts); !slices.Equal(got, want) {
			t.Errorf("%s changed to %v after the appends", l.name, got)
		}
	}
}
