package nat_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/lbkit/lbkit/nat"
	"github.com/lbkit/lbkit/nftables"
)

// An NFTables syncer programs services into lbkit's inet table, one
// netlink batch per sync. Here it runs against nftables.Fake; on a node,
// pass nftables.Dial(nat.DefaultNFTablesTable).
func ExampleNFTables() {
	ctx := context.Background()
	fake := nftables.NewFake(nat.DefaultNFTablesTable)
	syncer, err := nat.NewNFTables(nat.Config{}, fake, nat.NFTablesOptions{})
	if err != nil {
		panic(err)
	}
	st, err := syncer.Sync(ctx, []nat.ServiceEndpoints{exampleService()})
	if err != nil {
		panic(err)
	}
	fmt.Printf("full sync: %v, %d service port\n", st.Full, st.Ports)
	for _, line := range strings.Split(fake.Dump(), "\n") {
		if strings.Contains(line, "dnat") || strings.Contains(line, " : 192.0.2.") {
			fmt.Println(strings.TrimSpace(line))
		}
	}
	// Weights 1 and 3: the endpoint map holds the first once and the
	// second three times, and numgen picks one of the four slots.
	// Output:
	// full sync: true, 1 service port
	// elements = { 0 : 192.0.2.10 . 8080,
	// 1 : 192.0.2.11 . 8080,
	// 2 : 192.0.2.11 . 8080,
	// 3 : 192.0.2.11 . 8080 }
	// meta l4proto tcp dnat ip to numgen random mod 4 map @endpoints4-000 comment "default/web:http"
}

// Render is the dry run: the whole table as an nft script, which
// `nft -f` loads.
func ExampleNFTables_Render() {
	syncer, err := nat.NewNFTables(nat.Config{}, nftables.NewFake(nat.DefaultNFTablesTable), nat.NFTablesOptions{})
	if err != nil {
		panic(err)
	}
	script, err := syncer.Render([]nat.ServiceEndpoints{exampleService()})
	if err != nil {
		panic(err)
	}
	for _, line := range strings.Split(script, "\n") {
		if strings.Contains(line, "vmap @service-ips4") || strings.Contains(line, "goto service4-") {
			fmt.Println(strings.TrimSpace(line))
		}
	}
	// Output:
	// elements = { 198.51.100.10 . tcp . 80 : goto service4-SUSTUHLJ-default/web/tcp/http }
	// ip daddr . meta l4proto . th dport vmap @service-ips4
}

// In consistent mode the endpoint is chosen by a hash of the flow into a
// Maglev table, the same on every node with the same endpoints.
func ExampleConsistentHashing() {
	syncer, err := nat.NewNFTables(nat.Config{}, nftables.NewFake(nat.DefaultNFTablesTable),
		nat.NFTablesOptions{Consistent: &nat.ConsistentHashing{TableSize: 7}})
	if err != nil {
		panic(err)
	}
	script, err := syncer.Render([]nat.ServiceEndpoints{exampleService()})
	if err != nil {
		panic(err)
	}
	for _, line := range strings.Split(script, "\n") {
		if strings.Contains(line, "dnat ip to") {
			fmt.Println(strings.TrimSpace(line))
		}
	}
	// Output:
	// dnat ip to jhash ip saddr . tcp sport mod 7 seed 0x6c626b74 map @endpoints4-000 comment "default/web:http"
}
