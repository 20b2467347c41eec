package pool_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/lb/pool"
)

// mustRanges is a helper for the examples; real code handles the error.
func mustRanges(addresses ...string) []pool.Range {
	rs, err := pool.ParseRanges(addresses...)
	if err != nil {
		panic(err)
	}
	return rs
}

func ExampleParseRange() {
	for _, s := range []string{"192.0.2.0/24", "192.0.2.10 - 192.0.2.20", "2001:db8::/64", "198.51.100.0-198.51.100.127", "192.0.2.300/24"} {
		r, err := pool.ParseRange(s)
		if err != nil {
			fmt.Println(err, errors.Is(err, pool.ErrInvalid))
			continue
		}
		fmt.Println(r.First, r.Last, r)
	}
	// Output:
	// 192.0.2.0 192.0.2.255 192.0.2.0/24
	// 192.0.2.10 192.0.2.20 192.0.2.10-192.0.2.20
	// 2001:db8:: 2001:db8::ffff:ffff:ffff:ffff 2001:db8::/64
	// 198.51.100.0 198.51.100.127 198.51.100.0/25
	// pool: invalid range "192.0.2.300/24": IPv4 field has value >255 true
}

func ExampleAllocator_Allocate() {
	a, err := pool.New([]pool.AddressPool{
		// Tried first, but only when asked for by name or address.
		{Name: "public", Ranges: mustRanges("203.0.113.0/30"), DisableAutoAssign: true},
		{Name: "default", Ranges: mustRanges("192.0.2.0/24", "2001:db8::/64"), AvoidBuggyIPs: true},
	})
	if err != nil {
		panic(err)
	}
	show := func(req pool.Request) {
		got, err := a.Allocate(req)
		if err != nil {
			fmt.Println(req.Service, "error:", err)
			return
		}
		fmt.Println(got.Service, got.Pool, got.IPs)
	}
	show(pool.Request{Service: "shop/web"})                                                       // first free, .0 avoided
	show(pool.Request{Service: "shop/api", Family: pool.DualStack})                               // one of each family
	show(pool.Request{Service: "shop/pay", Pool: "public"})                                       // a pool by name
	show(pool.Request{Service: "shop/dns", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}) // spec.loadBalancerIP
	show(pool.Request{Service: "shop/bad", IPs: []netip.Addr{netip.MustParseAddr("198.51.100.1")}})
	// Output:
	// shop/web default [192.0.2.1]
	// shop/api default [192.0.2.2 2001:db8::]
	// shop/pay public [203.0.113.0]
	// shop/dns default [192.0.2.53]
	// shop/bad error: pool: service "shop/bad": 198.51.100.1: address not in any eligible pool (no configured pool contains it)
}

func ExampleAllocator_Allocate_sharing() {
	a, _ := pool.New([]pool.AddressPool{{Name: "default", Ranges: mustRanges("192.0.2.0/24")}})
	tcp := func(port uint16) []pool.Port { return []pool.Port{{Protocol: lb.TCP, Port: port}} }

	// Same sharing key, different ports, both Cluster: they share.
	web, _ := a.Allocate(pool.Request{Service: "web", SharingKey: "front", Ports: tcp(80)})
	tls, _ := a.Allocate(pool.Request{Service: "tls", SharingKey: "front", Ports: tcp(443)})
	fmt.Println(web.IPs, tls.IPs, a.Holders(web.IPs[0]))

	// Asking for that address with a colliding port is refused, and the
	// error names the rule.
	_, err := a.Allocate(pool.Request{Service: "alt", SharingKey: "front", Ports: tcp(443), IPs: web.IPs})
	var se *pool.SharingError
	if errors.As(err, &se) {
		fmt.Println(se.Rule, se.Holder, se.Port, errors.Is(err, pool.ErrAddressInUse))
	}
	// Output:
	// [192.0.2.0] [192.0.2.0] [tls web]
	// port-collision tls TCP/443 true
}

func ExampleCanShare() {
	web := pool.Request{Service: "web", SharingKey: "k", TrafficPolicy: lb.TrafficPolicyLocal, EndpointsSelector: "app=web"}
	db := pool.Request{Service: "db", SharingKey: "k", TrafficPolicy: lb.TrafficPolicyLocal, EndpointsSelector: "app=db"}
	metrics := pool.Request{Service: "metrics", SharingKey: "k", TrafficPolicy: lb.TrafficPolicyLocal, EndpointsSelector: "app=web"}
	fmt.Println(pool.CanShare(web, db))
	fmt.Println(pool.CanShare(web, metrics))
	// Output:
	// pool: the address is held by "web" and cannot be shared (rule endpoints-selector): endpoints selector "app=db" differs from "app=web"
	// <nil>
}

func ExampleAllocator_SetPools() {
	a, _ := pool.New([]pool.AddressPool{{Name: "default", Ranges: mustRanges("192.0.2.0/29")}})
	a.Allocate(pool.Request{Service: "a"}) // 192.0.2.0
	a.Allocate(pool.Request{Service: "b"}) // 192.0.2.1
	a.Allocate(pool.Request{Service: "c", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}})

	// The pool shrinks: b and c lose their addresses. b is re-allocated;
	// c asked for its address, so it cannot be.
	changes, err := a.SetPools([]pool.AddressPool{{Name: "default", Ranges: mustRanges("192.0.2.0/32", "192.0.2.2-192.0.2.5")}})
	if err != nil {
		panic(err)
	}
	for _, ch := range changes {
		fmt.Println(ch.Service, ch.Kind, "left:", ch.Left, "now:", ch.New.IPs, "err:", ch.Err)
	}
	// Output:
	// b reallocated left: [192.0.2.1] now: [192.0.2.2] err: <nil>
	// c revoked left: [192.0.2.7] now: [] err: pool: service "c": 192.0.2.7: address not in any eligible pool (no configured pool contains it)
}

func ExampleAllocator_Restore() {
	pools := []pool.AddressPool{{Name: "default", Ranges: mustRanges("192.0.2.0/24")}}
	a, _ := pool.New(pools)
	// After a restart, rebuild the state from what the services' status
	// says they hold (oldest first), before allocating anything new.
	results := a.Restore([]pool.Assignment{
		{Service: "shop/web", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.40")}},
		{Service: "shop/old", IPs: []netip.Addr{netip.MustParseAddr("198.51.100.9")}}, // pool since removed
	})
	for _, r := range results {
		fmt.Println(r.Service, r.Assignment.IPs, r.NotInPool, errors.Is(r.Err, pool.ErrNotInPool))
	}
	// New services do not take restored addresses.
	got, _ := a.Allocate(pool.Request{Service: "shop/new"})
	fmt.Println(got.IPs)
	// Output:
	// shop/web [192.0.2.40] [] false
	// shop/old [] [198.51.100.9] true
	// [192.0.2.0]
}

func ExampleFamilyFromIPFamilies() {
	// A dual-stack lb.Service asks for one address of each of its families.
	svc := &lb.Service{ClusterIPs: []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::1")}}
	fam := pool.FamilyFromIPFamilies(svc.Families()...)
	fmt.Println(fam, fam.IPFamilies())
	// Output:
	// DualStack [IPv4 IPv6]
}
