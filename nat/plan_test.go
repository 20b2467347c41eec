package nat

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/lbkit/lbkit/lb"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func clusterIPService(ns, name string, cip string, port uint16, eps ...string) ServiceEndpoints {
	s := ServiceEndpoints{Service: lb.Service{
		Namespace: ns, Name: name,
		ClusterIPs: []netip.Addr{ip(cip)},
		Ports:      []lb.ServicePort{{Name: "http", Protocol: lb.TCP, Port: port, TargetPort: lb.PortNumber(8080)}},
	}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, lb.Endpoint{Addr: ip(e), Ready: true})
	}
	return s
}

func TestCompileSortsByFamilyThenKey(t *testing.T) {
	dual := clusterIPService("default", "dual", "198.51.100.20", 80, "192.0.2.11", "2001:db8::11")
	dual.Service.ClusterIPs = append([]netip.Addr{ip("2001:db8:100::20")}, dual.Service.ClusterIPs...)
	plan, err := Compile(Config{}, []ServiceEndpoints{
		clusterIPService("zeta", "web", "198.51.100.10", 80, "192.0.2.10"),
		dual,
		clusterIPService("alpha", "web", "198.51.100.11", 80, "192.0.2.12"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range plan.Ports {
		got = append(got, string(p.Family)+" "+p.Key)
	}
	want := []string{
		"IPv4 alpha/web:http/tcp", "IPv4 default/dual:http/tcp", "IPv4 zeta/web:http/tcp",
		"IPv6 default/dual:http/tcp",
	}
	if len(got) != len(want) {
		t.Fatalf("ports %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ports %q, want %q", got, want)
		}
	}
	if plan.Config.Prefix != DefaultPrefix || plan.Config.MasqueradeMark != DefaultMasqueradeMark {
		t.Errorf("defaults not filled: %+v", plan.Config)
	}
	v6 := plan.Family(lb.IPv6)
	if len(v6) != 1 || len(v6[0].Endpoints.Cluster) != 1 || v6[0].Endpoints.Cluster[0].AddrPort.String() != "[2001:db8::11]:8080" {
		t.Errorf("IPv6 port endpoints: %+v", v6)
	}
}

func TestCompileRejectsEverythingBadAtOnce(t *testing.T) {
	bad := clusterIPService("default", "bad", "198.51.100.30", 80)
	bad.Service.Ports[0].NodePort = 80 // a ClusterIP service with an out-of-range node port
	a := clusterIPService("default", "a", "198.51.100.40", 80)
	b := clusterIPService("default", "b", "198.51.100.40", 80) // same cluster IP and port as a
	_, err := Compile(Config{Prefix: "lower-"}, []ServiceEndpoints{bad, a, b, a})
	if err == nil {
		t.Fatal("Compile accepted invalid input")
	}
	if !errors.Is(err, lb.ErrInvalid) {
		t.Errorf("error does not match lb.ErrInvalid: %v", err)
	}
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.First != "default/a:http/tcp" || conflict.Second != "default/b:http/tcp" {
		t.Errorf("conflict not reported: %v", err)
	}
	var dup *DuplicateServiceError
	if !errors.As(err, &dup) || dup.Service.Name != "a" {
		t.Errorf("duplicate not reported: %v", err)
	}
	var problems []*lb.ValidationError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ve *lb.ValidationError
		if errors.As(e, &ve) {
			problems = append(problems, ve)
		}
	}
	if len(problems) != 2 {
		t.Fatalf("want a validation error for the config and one for the service, got %v", err)
	}
	if problems[0].Field("config.prefix") == nil {
		t.Errorf("config prefix not reported: %v", problems[0])
	}
	if problems[1].Field("spec.ports[0].nodePort") == nil {
		t.Errorf("node port not reported: %v", problems[1])
	}
}

func TestCompileNodePortConflictAndProxyModeIPs(t *testing.T) {
	mk := func(name string, lbIP string, mode lb.IPMode) ServiceEndpoints {
		s := clusterIPService("default", name, "198.51.100."+name[len(name)-1:], 80, "192.0.2.10")
		s.Service.Type = lb.ServiceTypeLoadBalancer
		s.Service.Ports[0].NodePort = 30080
		s.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{{IP: ip(lbIP), IPMode: mode}}
		return s
	}
	_, err := Compile(Config{}, []ServiceEndpoints{mk("s1", "203.0.113.1", lb.IPModeVIP), mk("s2", "203.0.113.2", lb.IPModeVIP)})
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Frontend != "nodePort 30080/tcp (IPv4)" {
		t.Fatalf("node port conflict: %v", err)
	}
	// Two services may list the same Proxy-mode IP: the node does not
	// intercept it, so there is nothing to conflict over.
	s1, s2 := mk("s1", "203.0.113.1", lb.IPModeProxy), mk("s2", "203.0.113.1", lb.IPModeProxy)
	s2.Service.Ports[0].NodePort = 30081
	if _, err := Compile(Config{}, []ServiceEndpoints{s1, s2}); err != nil {
		t.Fatalf("proxy-mode IPs conflicted: %v", err)
	}
}

func TestCompileKeepsOneFrontendPerAddress(t *testing.T) {
	svc := clusterIPService("default", "both", "198.51.100.10", 80, "192.0.2.10")
	svc.Service.Type = lb.ServiceTypeLoadBalancer
	svc.Service.Ports[0].NodePort = 30080
	svc.Service.ExternalIPs = []netip.Addr{ip("203.0.113.5")}
	svc.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{{IP: ip("203.0.113.5")}}
	plan, err := Compile(Config{}, []ServiceEndpoints{svc})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range plan.Ports[0].Frontends {
		if f.Addr == ip("203.0.113.5") {
			n++
			if f.Kind != lb.FrontendExternalIP {
				t.Errorf("kept the %s frontend, want the first (external IP)", f.Kind)
			}
		}
	}
	if n != 1 {
		t.Errorf("203.0.113.5 appears in %d frontends, want 1", n)
	}
}
