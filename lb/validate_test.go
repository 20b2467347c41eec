package lb

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

var (
	a4 = netip.MustParseAddr
	p4 = netip.MustParsePrefix
)

// validLB is a dual-stack LoadBalancer service using every feature.
func validLB() *Service {
	return &Service{
		Namespace:   "default",
		Name:        "web",
		Type:        ServiceTypeLoadBalancer,
		ClusterIPs:  []netip.Addr{a4("198.51.100.10"), a4("2001:db8::10")},
		ExternalIPs: []netip.Addr{a4("203.0.113.5")},
		LoadBalancerIngress: []LoadBalancerIngress{
			{IP: a4("203.0.113.100")},
			{IP: a4("2001:db8:1::100"), IPMode: IPModeVIP},
			{IP: a4("192.0.2.50"), IPMode: IPModeProxy},
		},
		LoadBalancerSourceRanges: []netip.Prefix{p4("192.0.2.0/24"), p4("2001:db8::/32")},
		Ports: []ServicePort{
			{Name: "http", Port: 80, TargetPort: PortName("http"), NodePort: 30080},
			{Name: "dns", Protocol: UDP, Port: 53, TargetPort: PortNumber(5353), NodePort: 30053},
		},
		SessionAffinity:       SessionAffinity{Type: AffinityClientIP, TimeoutSeconds: 60},
		ExternalTrafficPolicy: TrafficPolicyLocal,
		InternalTrafficPolicy: TrafficPolicyCluster,
		TrafficDistribution:   PreferSameZone,
		HealthCheckNodePort:   32000,
	}
}

func TestValidateServiceValid(t *testing.T) {
	for name, s := range map[string]*Service{
		"load balancer": validLB(),
		"minimal":       {Namespace: "ns", Name: "a", ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 80}}},
		"headless":      {Namespace: "ns", Name: "h"},
		"headless port": {Namespace: "ns", Name: "h", Ports: []ServicePort{{Name: "x", Port: 1}}},
		"proxy-mode other family": {Namespace: "ns", Name: "p", Type: ServiceTypeLoadBalancer,
			ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 80}},
			LoadBalancerIngress: []LoadBalancerIngress{{IP: a4("2001:db8::1"), IPMode: IPModeProxy}}},
		"sctp nodeport": {Namespace: "ns", Name: "s", Type: ServiceTypeNodePort, ClusterIPs: []netip.Addr{a4("2001:db8::1")},
			Ports: []ServicePort{{Port: 9, Protocol: SCTP, NodePort: 30009}}},
		"same port two protocols": {Namespace: "ns", Name: "d", ClusterIPs: []netip.Addr{a4("198.51.100.1")},
			Ports: []ServicePort{{Name: "t", Port: 53}, {Name: "u", Port: 53, Protocol: UDP}}},
		// externalTrafficPolicy Local is allowed by type, as Kubernetes
		// decides it, not by what the status holds right now.
		"Local LoadBalancer, IP not assigned yet": {Namespace: "ns", Name: "l", Type: ServiceTypeLoadBalancer,
			ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 80, NodePort: 30080}},
			ExternalTrafficPolicy: TrafficPolicyLocal, HealthCheckNodePort: 32000},
		"Local LoadBalancer without node ports (allocateLoadBalancerNodePorts=false)": {Namespace: "ns", Name: "l",
			Type: ServiceTypeLoadBalancer, ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 80}},
			ExternalTrafficPolicy: TrafficPolicyLocal},
		"Local LoadBalancer with only a Proxy-mode IP": {Namespace: "ns", Name: "l", Type: ServiceTypeLoadBalancer,
			ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 80}},
			LoadBalancerIngress: []LoadBalancerIngress{{IP: a4("203.0.113.9"), IPMode: IPModeProxy}}, ExternalTrafficPolicy: TrafficPolicyLocal},
		// Kubernetes accepts addresses of a family the service has no
		// cluster IP for, and kube-proxy ignores them; so does Resolve.
		"external IP of a missing family": {Namespace: "ns", Name: "x", ClusterIPs: []netip.Addr{a4("198.51.100.1")},
			ExternalIPs: []netip.Addr{a4("2001:db8::5"), a4("203.0.113.5")}, Ports: []ServicePort{{Port: 80}}},
		"VIP-mode ingress IP of a missing family": {Namespace: "ns", Name: "x", Type: ServiceTypeLoadBalancer,
			ClusterIPs: []netip.Addr{a4("2001:db8::1")}, Ports: []ServicePort{{Port: 80}},
			LoadBalancerIngress: []LoadBalancerIngress{{IP: a4("203.0.113.5")}, {IP: a4("2001:db8:1::5")}}},
		"Local ClusterIP with an external IP": {Namespace: "ns", Name: "l", ClusterIPs: []netip.Addr{a4("198.51.100.1")},
			ExternalIPs: []netip.Addr{a4("203.0.113.9")}, Ports: []ServicePort{{Port: 80}}, ExternalTrafficPolicy: TrafficPolicyLocal},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateServiceRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Service)
		field string
		typ   ErrorType
	}{
		{"no namespace", func(s *Service) { s.Namespace = "" }, "metadata.namespace", ErrorTypeRequired},
		{"bad namespace", func(s *Service) { s.Namespace = "Default" }, "metadata.namespace", ErrorTypeInvalid},
		{"name with digit first", func(s *Service) { s.Name = "1web" }, "metadata.name", ErrorTypeInvalid},
		{"name with newline", func(s *Service) { s.Name = "web\n-A INPUT" }, "metadata.name", ErrorTypeInvalid},
		{"bad type", func(s *Service) { s.Type = "ExternalName" }, "spec.type", ErrorTypeNotSupported},
		{"two IPv4 cluster IPs", func(s *Service) { s.ClusterIPs[1] = a4("198.51.100.11") }, "spec.clusterIPs[1]", ErrorTypeInvalid},
		{"three cluster IPs", func(s *Service) { s.ClusterIPs = append(s.ClusterIPs, a4("198.51.100.12")) }, "spec.clusterIPs", ErrorTypeInvalid},
		{"zero cluster IP", func(s *Service) { s.ClusterIPs[0] = netip.Addr{} }, "spec.clusterIPs[0]", ErrorTypeRequired},
		{"unspecified cluster IP", func(s *Service) { s.ClusterIPs[0] = a4("0.0.0.0") }, "spec.clusterIPs[0]", ErrorTypeInvalid},
		{"mapped cluster IP", func(s *Service) { s.ClusterIPs[0] = a4("::ffff:198.51.100.10") }, "spec.clusterIPs[0]", ErrorTypeInvalid},
		{"zoned cluster IP", func(s *Service) { s.ClusterIPs[1] = a4("fe80::1%eth0") }, "spec.clusterIPs[1]", ErrorTypeInvalid},
		{"loopback external IP", func(s *Service) { s.ExternalIPs[0] = a4("127.0.0.1") }, "spec.externalIPs[0]", ErrorTypeInvalid},
		{"multicast external IP", func(s *Service) { s.ExternalIPs[0] = a4("224.0.0.1") }, "spec.externalIPs[0]", ErrorTypeInvalid},
		{"headless nodeport", func(s *Service) { s.Type = ServiceTypeNodePort; s.ClusterIPs = nil }, "spec.clusterIPs", ErrorTypeRequired},
		{"headless external IP", func(s *Service) { s.Type = ""; s.ClusterIPs = nil; s.LoadBalancerIngress = nil }, "spec.externalIPs[0]", ErrorTypeForbidden},
		{"ipMode on a ClusterIP service", func(s *Service) { s.Type = ServiceTypeClusterIP }, "status.loadBalancer.ingress[1].ipMode", ErrorTypeForbidden},
		{"ingress on a NodePort service", func(s *Service) { s.Type = ServiceTypeNodePort }, "status.loadBalancer.ingress[0]", ErrorTypeForbidden},
		{"bad ipMode", func(s *Service) { s.LoadBalancerIngress[0].IPMode = "vip" }, "status.loadBalancer.ingress[0].ipMode", ErrorTypeNotSupported},
		{"host bits in range", func(s *Service) { s.LoadBalancerSourceRanges[0] = p4("192.0.2.1/24") }, "spec.loadBalancerSourceRanges[0]", ErrorTypeInvalid},
		{"zero range", func(s *Service) { s.LoadBalancerSourceRanges[1] = netip.Prefix{} }, "spec.loadBalancerSourceRanges[1]", ErrorTypeInvalid},
		{"range on NodePort", func(s *Service) { s.Type = ServiceTypeNodePort; s.LoadBalancerIngress = nil }, "spec.loadBalancerSourceRanges[0]", ErrorTypeForbidden},
		{"no ports", func(s *Service) { s.Ports = nil }, "spec.ports", ErrorTypeRequired},
		{"unnamed of two", func(s *Service) { s.Ports[1].Name = "" }, "spec.ports[1].name", ErrorTypeRequired},
		{"duplicate names", func(s *Service) { s.Ports[1].Name = "http" }, "spec.ports[1].name", ErrorTypeDuplicate},
		{"upper-case name", func(s *Service) { s.Ports[0].Name = "HTTP" }, "spec.ports[0].name", ErrorTypeInvalid},
		{"bad protocol", func(s *Service) { s.Ports[0].Protocol = "tcp" }, "spec.ports[0].protocol", ErrorTypeNotSupported},
		{"port 0", func(s *Service) { s.Ports[0].Port = 0 }, "spec.ports[0].port", ErrorTypeInvalid},
		{"duplicate port", func(s *Service) { s.Ports[1].Port, s.Ports[1].Protocol = 80, "" }, "spec.ports[1]", ErrorTypeDuplicate},
		{"both target kinds", func(s *Service) { s.Ports[0].TargetPort.Number = 8080 }, "spec.ports[0].targetPort", ErrorTypeInvalid},
		{"long target name", func(s *Service) { s.Ports[0].TargetPort = PortName("a-very-long-port-name") }, "spec.ports[0].targetPort", ErrorTypeInvalid},
		{"numeric target name", func(s *Service) { s.Ports[0].TargetPort = PortName("8080") }, "spec.ports[0].targetPort", ErrorTypeInvalid},
		{"node port out of range", func(s *Service) { s.Ports[1].NodePort = 80 }, "spec.ports[1].nodePort", ErrorTypeInvalid},
		{"node port on ClusterIP", func(s *Service) {
			s.Type, s.LoadBalancerIngress, s.LoadBalancerSourceRanges = ServiceTypeClusterIP, nil, nil
		}, "spec.ports[0].nodePort", ErrorTypeForbidden},
		{"duplicate node port", func(s *Service) { s.Ports[1].NodePort, s.Ports[1].Protocol = 30080, TCP }, "spec.ports[1].nodePort", ErrorTypeDuplicate},
		{"NodePort without node port", func(s *Service) {
			s.Type, s.LoadBalancerIngress, s.LoadBalancerSourceRanges, s.HealthCheckNodePort = ServiceTypeNodePort, nil, nil, 0
			s.Ports[0].NodePort = 0
		}, "spec.ports[0].nodePort", ErrorTypeRequired},
		{"bad affinity", func(s *Service) { s.SessionAffinity.Type = "Cookie" }, "spec.sessionAffinity", ErrorTypeNotSupported},
		{"affinity timeout too long", func(s *Service) { s.SessionAffinity.TimeoutSeconds = 86401 }, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", ErrorTypeInvalid},
		{"affinity timeout negative", func(s *Service) { s.SessionAffinity.TimeoutSeconds = -1 }, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", ErrorTypeInvalid},
		{"timeout without affinity", func(s *Service) { s.SessionAffinity.Type = AffinityNone }, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", ErrorTypeForbidden},
		{"bad external policy", func(s *Service) { s.ExternalTrafficPolicy = "local" }, "spec.externalTrafficPolicy", ErrorTypeNotSupported},
		{"Local on an internal service", func(s *Service) {
			s.Type, s.ExternalIPs, s.LoadBalancerIngress, s.LoadBalancerSourceRanges, s.HealthCheckNodePort = ServiceTypeClusterIP, nil, nil, nil, 0
			s.Ports[0].NodePort, s.Ports[1].NodePort = 0, 0
		}, "spec.externalTrafficPolicy", ErrorTypeForbidden},
		{"bad internal policy", func(s *Service) { s.InternalTrafficPolicy = "Node" }, "spec.internalTrafficPolicy", ErrorTypeNotSupported},
		{"bad distribution", func(s *Service) { s.TrafficDistribution = "PreferNode" }, "spec.trafficDistribution", ErrorTypeNotSupported},
		{"health port with Cluster", func(s *Service) { s.ExternalTrafficPolicy = TrafficPolicyCluster }, "spec.healthCheckNodePort", ErrorTypeForbidden},
		{"health port out of range", func(s *Service) { s.HealthCheckNodePort = 8080 }, "spec.healthCheckNodePort", ErrorTypeInvalid},
		{"health port reused", func(s *Service) { s.HealthCheckNodePort = 30053 }, "spec.healthCheckNodePort", ErrorTypeDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validLB()
			tc.edit(s)
			err := s.Validate()
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Error("the error does not match ErrInvalid")
			}
			fe := ve.Field(tc.field)
			if fe == nil {
				t.Fatalf("no error for %s in %v", tc.field, err)
			}
			if fe.Type != tc.typ {
				t.Errorf("%s: type %s, want %s (%s)", tc.field, fe.Type, tc.typ, fe.Detail)
			}
		})
	}
}

func TestValidationErrorListsEverything(t *testing.T) {
	s := validLB()
	s.Ports[1].NodePort = 80
	s.SessionAffinity.TimeoutSeconds = 100000
	s.Name = ""
	err := s.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "metadata.name" {
		t.Errorf("errors.As(*FieldError) = %v", fe)
	}
	want := `invalid Service "default/": metadata.name: required; spec.ports[1].nodePort: 80 is outside 30000-32767; spec.sessionAffinityConfig.clientIP.timeoutSeconds: 100000 is outside 1-86400`
	if err.Error() != want {
		t.Errorf("message\n got %s\nwant %s", err, want)
	}
}

func TestValidateNodePortRange(t *testing.T) {
	s := validLB()
	s.Ports[0].NodePort = 8080
	s.Ports[1].NodePort = 8053
	s.HealthCheckNodePort = 8000
	if err := ValidateService(s, ValidateOptions{NodePortRange: PortRange{Min: 8000, Max: 9000}}); err != nil {
		t.Errorf("custom range: %v", err)
	}
	err := ValidateService(s, ValidateOptions{NodePortRange: PortRange{Min: 9000, Max: 8000}})
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field("options.nodePortRange") == nil {
		t.Errorf("inverted range accepted: %v", err)
	}
}

func TestValidateEndpoints(t *testing.T) {
	good := []Endpoint{
		{Addr: a4("192.0.2.1"), Ready: true, Serving: true, NodeName: "node-a.example", Zone: "zone-1",
			Ports: []EndpointPort{{Name: "http", Port: 8080}, {Name: "http", Protocol: UDP, Port: 8080}}},
		{Addr: a4("2001:db8::1"), Serving: true, Terminating: true, Weight: MaxWeight},
		{Addr: a4("127.0.0.1")},
		// Ready and terminating: a terminating pod of a service with
		// publishNotReadyAddresses, as the EndpointSlice controller writes it.
		{Addr: a4("192.0.2.7"), Ready: true, Serving: true, Terminating: true},
		// The same endpoint listed twice (two EndpointSlices during a
		// move), and a second endpoint on the same address with other
		// ports (hostNetwork pods share the node's address).
		{Addr: a4("192.0.2.7"), Ready: true, Serving: true, Terminating: true},
		{Addr: a4("192.0.2.1"), Ready: true, Ports: []EndpointPort{{Name: "http", Port: 9090}}},
	}
	if err := ValidateEndpoints(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func([]Endpoint) []Endpoint
		field string
	}{
		{"no address", func(e []Endpoint) []Endpoint { e[0].Addr = netip.Addr{}; return e }, "endpoints[0].addr"},
		{"unspecified", func(e []Endpoint) []Endpoint { e[1].Addr = a4("::"); return e }, "endpoints[1].addr"},
		{"mapped", func(e []Endpoint) []Endpoint { e[1].Addr = a4("::ffff:192.0.2.9"); return e }, "endpoints[1].addr"},
		{"weight", func(e []Endpoint) []Endpoint { e[2].Weight = MaxWeight + 1; return e }, "endpoints[2].weight"},
		{"node name", func(e []Endpoint) []Endpoint { e[0].NodeName = "Node A"; return e }, "endpoints[0].nodeName"},
		{"zone", func(e []Endpoint) []Endpoint { e[0].Zone = "zone 1"; return e }, "endpoints[0].zone"},
		{"port name", func(e []Endpoint) []Endpoint { e[0].Ports[0].Name = "Http"; return e }, "endpoints[0].ports[0].name"},
		{"port name with a space", func(e []Endpoint) []Endpoint { e[0].Ports[0].Name = "a b"; return e }, "endpoints[0].ports[0].name"},
		{"duplicate unnamed port", func(e []Endpoint) []Endpoint {
			e[1].Ports = []EndpointPort{{Port: 80}, {Protocol: TCP, Port: 81}}
			return e
		}, "endpoints[1].ports[1].name"},
		{"port 0", func(e []Endpoint) []Endpoint { e[0].Ports[1].Port = 0; return e }, "endpoints[0].ports[1].port"},
		{"port protocol", func(e []Endpoint) []Endpoint { e[0].Ports[1].Protocol = "ICMP"; return e }, "endpoints[0].ports[1].protocol"},
		{"duplicate port", func(e []Endpoint) []Endpoint { e[0].Ports[1].Protocol = TCP; return e }, "endpoints[0].ports[1].name"},
	} {
		eps := make([]Endpoint, len(good))
		for i, e := range good {
			e.Ports = append([]EndpointPort(nil), e.Ports...)
			eps[i] = e
		}
		err := ValidateEndpoints(tc.edit(eps))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field(tc.field) == nil {
			t.Errorf("%s: want an error for %s, got %v", tc.name, tc.field, err)
		}
	}
}

func TestValidationNamesAreInjectionSafe(t *testing.T) {
	// Names end up in iptables comments and nft rules: every accepted name
	// must be free of quotes, spaces and control characters.
	for _, name := range []string{`a"b`, "a b", "a\tb", "a\x00", "a'b", "a;b", "ä"} {
		s := &Service{Namespace: "ns", Name: name, ClusterIPs: []netip.Addr{a4("198.51.100.1")}, Ports: []ServicePort{{Port: 1}}}
		if s.Validate() == nil {
			t.Errorf("name %q accepted", name)
		}
		s.Name, s.Ports[0].Name = "ok", strings.ToLower(name)
		if s.Validate() == nil {
			t.Errorf("port name %q accepted", name)
		}
	}
}

// TestValidateEndpointsAllocatesNothing: ValidateEndpoints runs for every
// endpoint of every service on every sync, so valid input costs no
// allocation, as its implementation promises (node names included).
func TestValidateEndpointsAllocatesNothing(t *testing.T) {
	eps := make([]Endpoint, 100)
	for i := range eps {
		eps[i] = Endpoint{
			Addr:  netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
			Ready: true, Serving: true,
			NodeName: "node-" + strconv.Itoa(i) + ".rack-1.example",
			Zone:     "zone-1",
			Ports:    []EndpointPort{{Name: "http", Port: 8080}, {Name: "dns", Protocol: UDP, Port: 53}},
		}
	}
	var err error
	allocs := testing.AllocsPerRun(20, func() { err = ValidateEndpoints(eps) })
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("ValidateEndpoints of %d valid endpoints: %v allocations, want 0", len(eps), allocs)
	}
}
