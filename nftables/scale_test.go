package nftables

import (
	"fmt"
	"net/netip"
)

// scaleTable is the table of the scale tests and benchmarks.
var scaleTable = Table{Family: FamilyINet, Name: "lbkit-scale"}

// scaleVIP returns the address and port of service i: 750 addresses of
// the three IPv4 documentation ranges times as many ports as needed.
func scaleVIP(i int) (netip.Addr, uint16) {
	nets := []string{"192.0.2.0", "198.51.100.0", "203.0.113.0"}
	slot := i % 750
	base := netip.MustParseAddr(nets[slot/250]).As4()
	base[3] = byte(slot%250 + 1)
	return netip.AddrFrom4(base), uint16(1000 + i/750)
}

// scaleBackend returns the address and port of endpoint j of service i.
func scaleBackend(i, j int) (netip.Addr, uint16) {
	k := i*16 + j
	return netip.AddrFrom4([4]byte{203, 0, 113, byte(k%250 + 1)}), uint16(10000 + k/250%50000)
}

// svcChain names the chain of service i (kube-proxy-like: prefix and a
// number that no nft keyword can be).
func svcChain(i int) string { return fmt.Sprintf("svc-%05d", i) }

// scaleRuleset is the ruleset shape these notes recommend for nat: one
// verdict map dispatching VIP . proto . port to a chain per service, each
// chain choosing an endpoint with numgen in one shared data map of slots
// (service i owns slots [i*m, i*m+m)), so that the number of chains grows
// with services, not endpoints, and an endpoint change is an element
// change.
func scaleRuleset(n, m int) *Ruleset { return shardedRuleset(n, m, scaleShards) }

// scaleShards is how many endpoint maps the scale ruleset spreads services
// over. Every rule that looks a map up is a binding of the map, and the
// kernel checks each new element against every binding, so one map shared
// by 10 000 service chains makes a cold sync quadratic; shards bound that.
const scaleShards = 128

// epMap names the endpoint map of service i.
func epMap(i, shards int) string { return fmt.Sprintf("endpoints4-%03d", i%shards) }

func shardedRuleset(n, m, shards int) *Ruleset {
	services := Set{Name: "services4", Key: []Type{TypeIPv4Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
		Elements: make([]Element, 0, n)}
	eps := make([]Set, shards)
	for k := range eps {
		eps[k] = Set{Name: epMap(k, shards), Key: []Type{TypeInteger}, Data: []Type{TypeIPv4Addr, TypeInetService}}
	}
	chains := make([]Chain, 0, n+4)
	dispatch := VMap{Key: Concat{FieldIPDaddr, FieldL4Proto, FieldTHDport}, Map: "services4"}
	chains = append(chains,
		Chain{Name: "prerouting", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityDstNAT}, Rules: []Rule{R(dispatch)}},
		Chain{Name: "output", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookOutput, Priority: PriorityDstNAT}, Rules: []Rule{R(dispatch)}},
		Chain{Name: "postrouting", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT}, Rules: []Rule{
			R(MarkMatch{Mask: 0x4000, Value: 0}, Return()),
			R(SetMark{Op: MarkXor, Value: 0x4000}),
			R(Masquerade{FullyRandom: true}),
		}},
	)
	clusterCIDR := Prefix(netip.MustParsePrefix("198.51.100.0/24"))
	for i := 0; i < n; i++ {
		vip, port := scaleVIP(i)
		services.Elements = append(services.Elements, VMapElem(Goto(svcChain(i)), Addr(vip), Proto(tcp), Port(port)))
		ep := &eps[i%shards]
		for j := 0; j < m; j++ {
			a, p := scaleBackend(i, j)
			ep.Elements = append(ep.Elements, MapElem([]Value{Int(uint32(i*m + j))}, Addr(a), Port(p)))
		}
		chains = append(chains, Chain{Name: svcChain(i), Rules: []Rule{
			R(Match{Field: FieldIPSaddr, Neg: true, Values: []Value{clusterCIDR}}, SetMark{Op: MarkOr, Value: 0x4000}),
			R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: uint32(m), Offset: uint32(i * m)}, Map: ep.Name}),
		}})
	}
	return &Ruleset{Sets: append([]Set{services}, eps...), Chains: chains}
}

// kubeProxyRuleset is the shape kube-proxy's nftables mode uses: a chain
// per service and a chain per endpoint, the endpoint picked by an
// anonymous numgen verdict map. It is here to measure what the per-chain
// costs do to it.
func kubeProxyRuleset(n, m int) *Ruleset {
	rs := scaleRuleset(n, m)
	rs.Sets = rs.Sets[:1]
	chains := rs.Chains[:3]
	for i := 0; i < n; i++ {
		entries := make([]Element, m)
		for j := 0; j < m; j++ {
			ep := fmt.Sprintf("ep-%05d-%02d", i, j)
			entries[j] = VMapElem(Goto(ep), Int(uint32(j)))
			a, p := scaleBackend(i, j)
			chains = append(chains, Chain{Name: ep, Rules: []Rule{
				R(Match{Field: FieldIPSaddr, Values: []Value{Addr(a)}}, SetMark{Op: MarkOr, Value: 0x4000}),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNAT{Addr: a, Port: p}),
			}})
		}
		chains = append(chains, Chain{Name: svcChain(i), Rules: []Rule{
			R(VMap{Key: Numgen{Mod: uint32(m)}, Entries: entries}),
		}})
	}
	rs.Chains = chains
	return rs
}

// flipEndpoint returns the transaction that replaces endpoint j of service
// i in a scaleRuleset by another backend: one element out, one in.
func flipEndpoint(i, j, m int, gen int) *Transaction {
	slot := []Value{Int(uint32(i*m + j))}
	oldA, oldP := scaleBackend(i, j)
	if gen%2 == 1 {
		oldA = netip.AddrFrom4([4]byte{192, 0, 2, 200})
	}
	newA, newP := netip.AddrFrom4([4]byte{192, 0, 2, 200}), oldP
	if gen%2 == 1 {
		newA, _ = scaleBackend(i, j)
	}
	tx := &Transaction{}
	tx.DeleteElements(epMap(i, scaleShards), MapElem(slot, Addr(oldA), Port(oldP)))
	tx.AddElements(epMap(i, scaleShards), MapElem(slot, Addr(newA), Port(newP)))
	return tx
}
