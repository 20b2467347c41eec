package lb_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/lbkit/lbkit/lb"
)

func ExampleService_Validate() {
	svc := &lb.Service{
		Namespace:  "default",
		Name:       "web",
		Type:       lb.ServiceTypeNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("198.51.100.10")},
		Ports: []lb.ServicePort{
			{Name: "http", Port: 80, NodePort: 30080},
			{Name: "https", Port: 443, NodePort: 80},
		},
		SessionAffinity: lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: 90000},
	}
	err := svc.Validate()
	var ve *lb.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			fmt.Println(fe)
		}
	}
	fmt.Println(errors.Is(err, lb.ErrInvalid))
	// Output:
	// spec.ports[1].nodePort: 80 is outside 30000-32767
	// spec.sessionAffinityConfig.clientIP.timeoutSeconds: 90000 is outside 1-86400
	// true
}

func ExampleResolve() {
	svc := &lb.Service{
		Namespace:             "shop",
		Name:                  "cart",
		Type:                  lb.ServiceTypeLoadBalancer,
		ClusterIPs:            []netip.Addr{netip.MustParseAddr("198.51.100.20")},
		LoadBalancerIngress:   []lb.LoadBalancerIngress{{IP: netip.MustParseAddr("203.0.113.7")}},
		Ports:                 []lb.ServicePort{{Name: "http", Port: 80, TargetPort: lb.PortName("web"), NodePort: 31000}},
		ExternalTrafficPolicy: lb.TrafficPolicyLocal,
	}
	web := func(port uint16) []lb.EndpointPort { return []lb.EndpointPort{{Name: "web", Port: port}} }
	endpoints := []lb.Endpoint{
		{Addr: netip.MustParseAddr("192.0.2.11"), Ready: true, NodeName: "node-a", Ports: web(8080), Weight: 2},
		{Addr: netip.MustParseAddr("192.0.2.12"), Ready: true, NodeName: "node-b", Ports: web(8081)},
		{Addr: netip.MustParseAddr("192.0.2.13"), Serving: true, Terminating: true, NodeName: "node-a", Ports: web(8080)},
		{Addr: netip.MustParseAddr("192.0.2.14"), Ready: true, NodeName: "node-a"}, // no "web" port
	}
	ports, err := lb.Resolve(svc, endpoints, lb.Node{Name: "node-a"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range ports {
		fmt.Println(p.Name, p.Family, p.Name.Protocol)
		for _, f := range p.Frontends {
			fmt.Println(" ", f.Kind, f.Addr, f.Port, f.Intercept())
		}
		sel := p.Endpoints
		fmt.Println("  internal", sel.InternalVerdict, sel.Internal)
		fmt.Println("  external", sel.ExternalVerdict, sel.External, "masquerade:", p.MasqueradeExternal())
	}
	// Output:
	// shop/cart:http IPv4 TCP
	//   ClusterIP 198.51.100.20 80 true
	//   NodePort invalid IP 31000 true
	//   LoadBalancer 203.0.113.7 80 true
	//   internal Forward [192.0.2.11:8080 192.0.2.12:8081]
	//   external Forward [192.0.2.11:8080] masquerade: false
}

func ExampleProbabilityChain() {
	equal, _ := lb.ProbabilityChain([]uint32{1, 1, 1})
	fmt.Println(equal)
	weighted, _ := lb.ProbabilityChain([]uint32{1, 2, 3})
	for _, p := range weighted {
		fmt.Printf("-m statistic --mode random --probability %s\n", p)
	}
	// Output:
	// [0.33333333349 0.50000000000]
	// -m statistic --mode random --probability 0.16666666651
	// -m statistic --mode random --probability 0.39999999991
}

func ExampleNewMaglev() {
	table, err := lb.NewMaglev([]lb.MaglevBackend{
		{Key: "192.0.2.1:80", Weight: 1},
		{Key: "192.0.2.2:80", Weight: 1},
		{Key: "192.0.2.3:80", Weight: 2},
	}, 251)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(table.Size(), table.Counts())
	// A 32-bit flow hash (for example nftables' jhash) picks slot
	// (hash × 251) >> 32, as "jhash ... mod 251" does in the kernel.
	h := uint32(0xdeadbeef)
	fmt.Println(table.Slot32(h), table.Backend(table.Lookup32(h)).Key)
	// Output:
	// 251 [63 63 125]
	// 218 192.0.2.3:80
}

func ExampleMaglev_Update() {
	var backends []lb.MaglevBackend
	for i := range 100 {
		backends = append(backends, lb.MaglevBackend{Key: fmt.Sprintf("192.0.2.%d:80", i+1), Weight: 1})
	}
	before, _ := lb.NewMaglev(backends, lb.DefaultMaglevSize)
	gone := before.Counts()[42]

	after, _ := before.Update(append(backends[:42:42], backends[43:]...))
	rebuilt, _ := lb.NewMaglev(append(backends[:42:42], backends[43:]...), lb.DefaultMaglevSize)
	fmt.Println("slots of the removed backend:", gone)
	fmt.Println("moved by Update:", before.Changed(after))
	fmt.Println("Update moves fewer than a rebuild:", before.Changed(after) < before.Changed(rebuilt))
	// Output:
	// slots of the removed backend: 655
	// moved by Update: 655
	// Update moves fewer than a rebuild: true
}

func ExampleNewScheduler() {
	backend := func(last byte, weight uint32) lb.Backend {
		return lb.Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, last}), 80), Weight: weight}
	}
	for _, smooth := range []bool{false, true} {
		s, _ := lb.NewScheduler(lb.WeightedRoundRobin, lb.SchedulerOptions{Smooth: smooth})
		_ = s.Update([]lb.Backend{backend(1, 5), backend(2, 1), backend(3, 1)})
		for range 7 {
			i, _ := s.Pick(lb.Flow{}, nil)
			fmt.Print(i)
		}
		fmt.Println()
	}
	// Output:
	// 0000012
	// 0010200
}

func ExampleParseSchedulerName() {
	for _, s := range []string{"wlc", "mh", "random"} {
		n, _ := lb.ParseSchedulerName(s)
		fmt.Printf("%s ipvs=%q\n", n, n.IPVSName())
	}
	_, err := lb.ParseSchedulerName("lblc")
	fmt.Println(err)
	// Output:
	// wlc ipvs="wlc"
	// mh ipvs="mh"
	// random ipvs=""
	// lb: unknown scheduler "lblc" (want one of rr, wrr, lc, wlc, sh, dh, sed, nq, mh, random): lb: invalid input
}
