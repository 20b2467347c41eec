package nat_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nat"
)

func exampleService() nat.ServiceEndpoints {
	return nat.ServiceEndpoints{
		Service: lb.Service{
			Namespace: "default", Name: "web",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("198.51.100.10")},
			Ports:      []lb.ServicePort{{Name: "http", Protocol: lb.TCP, Port: 80, TargetPort: lb.PortNumber(8080)}},
		},
		Endpoints: []lb.Endpoint{
			{Addr: netip.MustParseAddr("192.0.2.10"), Ready: true, Weight: 1},
			{Addr: netip.MustParseAddr("192.0.2.11"), Ready: true, Weight: 3},
		},
	}
}

// Compile resolves services for one node into an engine-neutral plan.
func ExampleCompile() {
	plan, err := nat.Compile(nat.Config{Node: lb.Node{Name: "node-a"}}, []nat.ServiceEndpoints{exampleService()})
	if err != nil {
		panic(err)
	}
	for _, p := range plan.Ports {
		fmt.Println(p.Key, p.Family, p.Endpoints.InternalVerdict)
		for _, t := range p.Endpoints.Internal {
			fmt.Println("  ->", t, "weight", t.Weight)
		}
	}
	// Output:
	// default/web:http/tcp IPv4 Forward
	//   -> 192.0.2.10:8080 weight 1
	//   -> 192.0.2.11:8080 weight 3
}

// An IPTables syncer programs services with one iptables-restore per sync.
// Here it runs against iptables.Fake; on a node, pass iptables.New's Client.
func ExampleIPTables() {
	ctx := context.Background()
	fake := iptables.NewFake(iptables.IPv4)
	syncer, err := nat.NewIPTables(nat.Config{}, fake, nil, nat.IPTablesOptions{})
	if err != nil {
		panic(err)
	}
	if _, err := syncer.Sync(ctx, []nat.ServiceEndpoints{exampleService()}); err != nil {
		panic(err)
	}
	save, _ := fake.SaveText(ctx, iptables.TableNAT)
	for _, line := range strings.Split(string(save), "\n") {
		if strings.HasPrefix(line, "-A LBK-SVC-") {
			fmt.Println(line)
		}
	}
	// Output:
	// -A LBK-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 192.0.2.10:8080" -m statistic --mode random --probability 0.25000000000 -j LBK-SEP-G6R22FYR2GEGVEJA
	// -A LBK-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 192.0.2.11:8080" -j LBK-SEP-RP2M6QRLSSIGMIQF
}

// A dry run: the restore text a full sync would apply, per family.
func ExampleIPTables_Render() {
	syncer, err := nat.NewIPTables(nat.Config{}, iptables.NewFake(iptables.IPv4), nil, nat.IPTablesOptions{})
	if err != nil {
		panic(err)
	}
	text, err := syncer.Render([]nat.ServiceEndpoints{exampleService()})
	if err != nil {
		panic(err)
	}
	for _, line := range strings.Split(string(text[lb.IPv4]), "\n") {
		if strings.Contains(line, "DNAT") {
			fmt.Println(line)
		}
	}
	// Output:
	// -A LBK-SEP-G6R22FYR2GEGVEJA -p tcp -m comment --comment "default/web:http" -j DNAT --to-destination 192.0.2.10:8080
	// -A LBK-SEP-RP2M6QRLSSIGMIQF -p tcp -m comment --comment "default/web:http" -j DNAT --to-destination 192.0.2.11:8080
}
