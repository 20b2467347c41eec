package nftables_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/lbkit/lbkit/nftables"
)

// service returns a ruleset that balances TCP 203.0.113.10:80 over the
// given backends: a verdict map dispatches the VIP to a service chain,
// which picks a slot of the endpoint map at random.
func service(backends ...string) *nftables.Ruleset {
	eps := nftables.Set{Name: "endpoints", Key: []nftables.Type{nftables.TypeInteger},
		Data: []nftables.Type{nftables.TypeIPv4Addr, nftables.TypeInetService}}
	for i, b := range backends {
		eps.Elements = append(eps.Elements, nftables.MapElem([]nftables.Value{nftables.Int(uint32(i))},
			nftables.Addr(netip.MustParseAddr(b)), nftables.Port(8080)))
	}
	return &nftables.Ruleset{
		Sets: []nftables.Set{
			{Name: "services", Key: []nftables.Type{nftables.TypeIPv4Addr, nftables.TypeInetProto, nftables.TypeInetService},
				Data: []nftables.Type{nftables.TypeVerdict},
				Elements: []nftables.Element{nftables.VMapElem(nftables.Goto("svc-web"),
					nftables.Addr(netip.MustParseAddr("203.0.113.10")), nftables.Proto(6), nftables.Port(80))}},
			eps,
		},
		Chains: []nftables.Chain{
			{Name: "prerouting", Base: &nftables.BaseChain{Type: nftables.ChainTypeNAT, Hook: nftables.HookPrerouting, Priority: nftables.PriorityDstNAT},
				Rules: []nftables.Rule{nftables.R(nftables.VMap{
					Key: nftables.Concat{nftables.FieldIPDaddr, nftables.FieldL4Proto, nftables.FieldTHDport}, Map: "services"})}},
			{Name: "svc-web", Rules: []nftables.Rule{nftables.R(
				nftables.Match{Field: nftables.FieldL4Proto, Values: []nftables.Value{nftables.Proto(6)}},
				nftables.DNATMap{Family: nftables.FamilyIPv4, Key: nftables.Numgen{Mod: uint32(len(backends))}, Map: "endpoints"})}},
		},
	}
}

// Render shows what the engine would program, as an nft script.
func ExampleRender() {
	t := nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"}
	fmt.Print(nftables.Render(t, service("192.0.2.21", "192.0.2.22")))
	// Output:
	// table inet lbkit {
	// 	map endpoints {
	// 		typeof numgen random mod 1 : ip daddr . th dport
	// 		elements = { 0 : 192.0.2.21 . 8080,
	// 			     1 : 192.0.2.22 . 8080 }
	// 	}
	//
	// 	map services {
	// 		type ipv4_addr . inet_proto . inet_service : verdict
	// 		elements = { 203.0.113.10 . tcp . 80 : goto svc-web }
	// 	}
	//
	// 	chain prerouting {
	// 		type nat hook prerouting priority -100; policy accept;
	// 		ip daddr . meta l4proto . th dport vmap @services
	// 	}
	//
	// 	chain svc-web {
	// 		meta l4proto tcp dnat ip to numgen random mod 2 map @endpoints
	// 	}
	// }
}

// Diff computes the batch that moves from one ruleset to the next: here a
// backend is replaced, which is one element out and one in.
func ExampleDiff() {
	t := nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"}
	tx := nftables.Diff(service("192.0.2.21", "192.0.2.22"), service("192.0.2.21", "192.0.2.23"))
	fmt.Print(tx.Render(t))
	// Output:
	// add table inet lbkit
	// delete element inet lbkit endpoints { 1 }
	// add element inet lbkit endpoints { 1 : 192.0.2.23 . 8080 }
}

// A Fake behaves like the kernel engine without root: code built on the
// engine syncs through the Interface and tests read the result.
func ExampleFake() {
	ctx := context.Background()
	var eng nftables.Interface = nftables.NewFake(nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"})
	if _, err := eng.Sync(ctx, service("192.0.2.21")); err != nil {
		fmt.Println(err)
		return
	}
	tx, err := eng.Sync(ctx, service("192.0.2.21", "192.0.2.22"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(tx.Render(eng.Table()))
	// Output:
	// add table inet lbkit
	// flush chain inet lbkit svc-web
	// add rule inet lbkit svc-web meta l4proto tcp dnat ip to numgen random mod 2 map @endpoints
	// add element inet lbkit endpoints { 1 : 192.0.2.22 . 8080 }
}

// Dial programs the kernel. Run as root; WithNetNS picks a namespace.
func ExampleDial() {
	t := nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"}
	eng, err := nftables.Dial(t)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()
	ctx := context.Background()
	if _, err := eng.Sync(ctx, service("192.0.2.21", "192.0.2.22")); err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Cleanup(ctx)
	fmt.Println(eng.LastStats().Messages > 0)
}

// Validation refuses bad input before anything is sent, with the path of
// the offending object.
func ExampleValidationError() {
	rs := service("192.0.2.21")
	rs.Chains[1].Rules[0].Comment = `web"; flush ruleset; "` // would break out of the script
	err := nftables.Validate(nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"}, rs)
	var ve *nftables.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Path)
	}
	// Output:
	// chains["svc-web"].rules[0].comment
}
