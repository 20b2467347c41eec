package nat

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nftables"
)

// The fixed chains of the nftables layout. The table is lbkit's own, so the
// names need no prefix; they follow kube-proxy's nftables mode.
const (
	nftFilterPrerouting = "filter-prerouting"        // base: firewall-check for new connections
	nftFilterInput      = "filter-input"             // base: external-endpoints-check
	nftFilterForward    = "filter-forward"           // base: endpoints-check, external-endpoints-check
	nftFilterOutput     = "filter-output"            // base: endpoints-check, firewall-check
	nftNATPrerouting    = "nat-prerouting"           // base: jump services
	nftNATOutput        = "nat-output"               // base: jump services
	nftNATPostrouting   = "nat-postrouting"          // base: jump masquerading
	nftServicesChain    = "services"                 // dispatch: frontends and node ports
	nftMasquerading     = "masquerading"             // hairpin mark, masquerade marked packets
	nftEndpointsCheck   = "endpoints-check"          // cluster IPs: reject or drop without (local) endpoints
	nftExternalCheck    = "external-endpoints-check" // external and load-balancer IPs: the same
	nftNodePortCheck    = "nodeport-endpoints-check" // node ports (local addresses: input only): the same
	nftFirewallCheck    = "firewall-check"           // load-balancer source ranges
	nftRejectChain      = "reject-chain"             // reject, the verdict of no-endpoint elements
)

// Priority of the filter base chains: before DNAT (dstnat - 10), so that
// they see the frontend address, as kube-proxy's.
const nftFilterPriority = nftables.PriorityDstNAT - 10

// The maps and sets shared by all service ports, one of each per family
// (the family's suffix, "4" or "6", is appended).
const (
	nftServiceIPs          = "service-ips"           // daddr . proto . port : goto <port chain>
	nftServiceNodePorts    = "service-nodeports"     // proto . port : goto <external chain>
	nftNoEndpointServices  = "no-endpoint-services"  // cluster IPs: daddr . proto . port : goto reject-chain | drop
	nftNoEndpointExternal  = "no-endpoint-external"  // external and load-balancer IPs: the same
	nftNoEndpointNodePorts = "no-endpoint-nodeports" // proto . port : goto reject-chain | drop
	nftFirewallIPs         = "firewall-ips"          // daddr . proto . port : goto <firewall chain>
	nftHairpin             = "hairpin"               // endpoint . endpoint: masquerade hairpin traffic
	nftEndpointMaps        = "endpoints"             // endpointsN-SSS: slot : endpoint address . port
)

// nftShared indexes the shared maps a service port adds elements to.
type nftShared uint8

const (
	nftSetServiceIPs nftShared = iota
	nftSetServiceNodePorts
	nftSetNoEndpointServices
	nftSetNoEndpointExternal
	nftSetNoEndpointNodePorts
	nftSetFirewallIPs
	nftNumShared
)

var nftSharedNames = [nftNumShared]string{nftServiceIPs, nftServiceNodePorts, nftNoEndpointServices, nftNoEndpointExternal, nftNoEndpointNodePorts, nftFirewallIPs}

// Per-port chain and set kinds, as kube-proxy's nftables mode names them
// (with the family, since one inet table holds both).
const (
	nftKindService  = "service"  // cluster endpoints
	nftKindLocal    = "local"    // local endpoints
	nftKindExternal = "external" // external traffic
	nftKindFirewall = "firewall" // load-balancer source ranges
	nftKindEndpoint = "endpoint" // one endpoint (ClientIP affinity only)
	nftKindAffinity = "affinity" // the clients of one endpoint (ClientIP affinity only)
	// The slot maps of ClientIP affinity: slot : goto endpoint chain, one
	// per service or local chain.
	nftKindServiceSlots = "service-slots"
	nftKindLocalSlots   = "local-slots"
)

// nftSlotsPerChain is the key space one balancing chain owns in its
// endpoint map: chain id i of shard s owns slots [(i/S)<<16, +65536). It
// bounds the slots a chain can use: weights whose sum (divided by their
// greatest common divisor) exceeds it are apportioned (see nftSlots), and a
// chain with more endpoints than that is refused. The slot maps of ClientIP
// affinity have the same bound.
const nftSlotsPerChain = 1 << 16

// nftMaxTableSize is the largest consistent-hashing table: the largest
// prime that fits the slots of one chain.
const nftMaxTableSize = 65521

// nftFam is what the layout needs to know of one IP family.
type nftFam struct {
	fam          lb.IPFamily
	suffix       string // "4" or "6"
	saddr, daddr nftables.Field
	addr         nftables.Type
	nat          nftables.Family // family of DNAT data
	loopback     netip.Prefix    // never a node-port address
}

var (
	nftFam4 = &nftFam{fam: lb.IPv4, suffix: "4", saddr: nftables.FieldIPSaddr, daddr: nftables.FieldIPDaddr,
		addr: nftables.TypeIPv4Addr, nat: nftables.FamilyIPv4, loopback: netip.MustParsePrefix("127.0.0.0/8")}
	nftFam6 = &nftFam{fam: lb.IPv6, suffix: "6", saddr: nftables.FieldIP6Saddr, daddr: nftables.FieldIP6Daddr,
		addr: nftables.TypeIPv6Addr, nat: nftables.FamilyIPv6, loopback: netip.MustParsePrefix("::1/128")}
	nftFams = []*nftFam{nftFam4, nftFam6}
)

func nftFamOf(f lb.IPFamily) *nftFam {
	if f == lb.IPv6 {
		return nftFam6
	}
	return nftFam4
}

func (f *nftFam) set(base string) string { return base + f.suffix }

// shardMap names endpoint map s of the family.
func (f *nftFam) shardMap(s uint32) string {
	return fmt.Sprintf("%s%s-%03d", nftEndpointMaps, f.suffix, s)
}

// frontendKey is the key of a frontend in the address maps.
func (f *nftFam) frontendKey(addr netip.Addr, proto lb.Protocol, port uint16) []nftables.Value {
	return []nftables.Value{nftables.Addr(addr), nftables.Proto(proto.Number()), nftables.Port(port)}
}

// nftName builds a chain or set name the way kube-proxy's nftables mode
// does: kind, a hash of the rest (so that truncation keeps names unique and
// similar names look different), and the readable rest, e.g.
// "service4-ULMVA6XW-default/web/tcp/http". Characters nft names cannot
// hold (":" of IPv6 addresses) become ".".
func nftName(kind string, f *nftFam, readable string) string {
	sum := sha256.Sum256([]byte(readable))
	name := kind + f.suffix + "-" + base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" + strings.ReplaceAll(readable, ":", ".")
	const max = 128
	if len(name) > max {
		name = name[:max-3] + "..."
	}
	return name
}

// portReadable is "namespace/name/protocol/port", the readable part of a
// port's chain names.
func portReadable(p *Port) string {
	n := p.Name
	return n.Namespace + "/" + n.Name + "/" + n.Protocol.Lower() + "/" + n.Port
}

// nftFragment is what one service port contributes to the table: its own
// chains and sets, its elements in the shared maps, its endpoint slots and
// the endpoint addresses it needs hairpin masquerading for.
type nftFragment struct {
	key     string     // Port.Key
	flows   *portFlows // UDP and SCTP: what conntrack cleanup compares
	family  *nftFam
	chains  []nftables.Chain
	sets    []nftables.Set // affinity sets
	shared  [nftNumShared][]nftables.Element
	slots   []nftSlot
	hairpin []netip.Addr // distinct
}

// nftSlot is one balancing chain's share of an endpoint map.
type nftSlot struct {
	chain string
	id    uint32
	elems []nftables.Element
}

// nftOptions are the layout settings that are not part of Config.
type nftOptions struct {
	shards     uint32
	consistent *ConsistentHashing
}

// nftBuilder turns plan ports into fragments.
type nftBuilder struct {
	cfg  Config
	opts nftOptions
	// slotID returns the id of a balancing chain's slots: the one it had,
	// or a new one (an error when none is left).
	slotID func(chain string) (uint32, error)
}

func (b *nftBuilder) clusterCIDR(f *nftFam) (netip.Prefix, bool) {
	for _, p := range b.cfg.ClusterCIDRs {
		if f.fam.Matches(p.Addr()) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (b *nftBuilder) masqMark() nftables.Stmt {
	return nftables.SetMark{Op: nftables.MarkOr, Value: b.cfg.MasqueradeMark}
}

// port builds the fragment of one service port, with the semantics of the
// iptables layout (see ipBuilder.port), in nftables' terms: frontends are
// elements of the shared maps, endpoints slots of an endpoint map, and
// only ClientIP affinity needs a chain per endpoint.
func (b *nftBuilder) port(p *Port) (*nftFragment, error) {
	f := nftFamOf(p.Family)
	fr := &nftFragment{family: f, flows: flowsOf(p)}
	sel := &p.Endpoints
	readable := portReadable(p)
	comment := p.Comment()
	svcChain := nftName(nftKindService, f, readable)
	svlChain := nftName(nftKindLocal, f, readable)
	extChain := nftName(nftKindExternal, f, readable)
	fwChain := nftName(nftKindFirewall, f, readable)

	// As the iptables layout (and kube-proxy): the external chain exists
	// whenever the port is externally accessible and has endpoints
	// anywhere, even when a Local policy finds none on this node, because
	// traffic from pods and from the node itself is short-circuited to the
	// cluster endpoints; other external traffic then falls through it and
	// meets the filter chains' drop.
	usesEXT := sel.HasEndpoints && p.ExternallyAccessible
	localExternal := usesEXT && p.ExternalPolicy == lb.TrafficPolicyLocal && len(sel.Local) > 0
	usesSVC := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyCluster || usesEXT
	usesSVL := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyLocal || localExternal
	usesFW := false

	internalChain := svcChain
	if p.InternalPolicy == lb.TrafficPolicyLocal {
		internalChain = svlChain
	}
	proto := p.Name.Protocol
	reject := nftables.Goto(nftRejectChain)
	add := func(s nftShared, e nftables.Element) { fr.shared[s] = append(fr.shared[s], e) }
	for _, fe := range p.Frontends {
		if !fe.Intercept() {
			continue // ipMode Proxy: the node must not touch this address
		}
		key := f.frontendKey(fe.Addr, proto, fe.Port)
		switch fe.Kind {
		case lb.FrontendClusterIP:
			switch sel.InternalVerdict {
			case lb.VerdictForward:
				add(nftSetServiceIPs, nftables.VMapElem(nftables.Goto(internalChain), key...))
			case lb.VerdictReject:
				add(nftSetNoEndpointServices, nftElem(reject, comment+" has no endpoints", key))
			case lb.VerdictDrop:
				add(nftSetNoEndpointServices, nftElem(nftables.Drop(), comment+" has no local endpoints", key))
			}
			continue
		case lb.FrontendNodePort:
			key = key[1:] // protocol . port
		}
		// External traffic: to the external chain whenever there are
		// endpoints anywhere; what it cannot send anywhere is rejected (no
		// endpoints) or dropped (none on this node under Local) by the
		// filter chains.
		forward, none := nftSetServiceIPs, nftSetNoEndpointExternal
		if fe.Kind == lb.FrontendNodePort {
			forward, none = nftSetServiceNodePorts, nftSetNoEndpointNodePorts
		}
		if usesEXT {
			add(forward, nftables.VMapElem(nftables.Goto(extChain), key...))
			if fe.Kind == lb.FrontendLoadBalancer && p.RestrictSources {
				usesFW = true
				add(nftSetFirewallIPs, nftElem(nftables.Goto(fwChain), comment+" loadbalancer IP", key))
			}
		}
		switch sel.ExternalVerdict {
		case lb.VerdictReject:
			add(none, nftElem(reject, comment+" has no endpoints", key))
		case lb.VerdictDrop:
			add(none, nftElem(nftables.Drop(), comment+" has no local endpoints", key))
		}
	}

	// Affinity: one set and one chain per endpoint a list in use sends
	// traffic to, shared by the service and local chains.
	var epChains map[netip.AddrPort]string
	var affSets map[netip.AddrPort]string
	hairpin := map[netip.Addr]bool{}
	useTargets := func(ts []lb.Target) {
		for _, t := range ts {
			a := t.AddrPort.Addr()
			if !hairpin[a] {
				hairpin[a] = true
				fr.hairpin = append(fr.hairpin, a)
			}
			if p.Affinity.Enabled() && epChains[t.AddrPort] == "" {
				if epChains == nil {
					epChains, affSets = map[netip.AddrPort]string{}, map[netip.AddrPort]string{}
				}
				r := readable + "__" + t.AddrPort.Addr().String() + "/" + fmt.Sprint(t.AddrPort.Port())
				epChains[t.AddrPort] = nftName(nftKindEndpoint, f, r)
				affSets[t.AddrPort] = nftName(nftKindAffinity, f, r)
			}
		}
	}
	if usesSVC {
		useTargets(sel.Cluster)
	}
	if usesSVL {
		useTargets(sel.Local)
	}

	// Cluster-IP traffic from outside the cluster CIDR (or all of it, with
	// MasqueradeAll) is marked for masquerading first thing in the
	// internal chain, whichever of service and local that is.
	var masq []nftables.Rule
	if cip, ok := clusterIPOf(p); ok && sel.InternalVerdict == lb.VerdictForward {
		dst := nftables.Match{Field: f.daddr, Values: []nftables.Value{nftables.Addr(cip)}}
		if b.cfg.MasqueradeAll {
			masq = []nftables.Rule{{Stmts: []nftables.Stmt{dst, b.masqMark()}, Comment: "masquerade " + comment + " cluster IP"}}
		} else if cidr, ok := b.clusterCIDR(f); ok {
			src := nftables.Match{Field: f.saddr, Neg: true, Values: []nftables.Value{nftables.Prefix(cidr)}}
			masq = []nftables.Rule{{Stmts: []nftables.Stmt{dst, src, b.masqMark()}, Comment: "masquerade " + comment + " cluster IP"}}
		}
	}
	for _, c := range []struct {
		uses    bool
		name    string
		slots   string // the slot map, with affinity
		targets []lb.Target
		policy  lb.TrafficPolicy
	}{
		{usesSVC, svcChain, nftName(nftKindServiceSlots, f, readable), sel.Cluster, lb.TrafficPolicyCluster},
		{usesSVL, svlChain, nftName(nftKindLocalSlots, f, readable), sel.Local, lb.TrafficPolicyLocal},
	} {
		if !c.uses {
			continue
		}
		var first []nftables.Rule
		if p.InternalPolicy == c.policy {
			first = masq
		}
		rules, err := b.balance(fr, p, c.name, c.slots, c.targets, epChains, affSets)
		if err != nil {
			return nil, err
		}
		fr.chains = append(fr.chains, nftables.Chain{Name: c.name, Rules: append(slices.Clip(first), rules...)})
	}
	if usesEXT {
		ext := nftables.Chain{Name: extChain}
		if p.ExternalPolicy == lb.TrafficPolicyCluster {
			ext.Rules = []nftables.Rule{{Stmts: []nftables.Stmt{b.masqMark(), nftables.Goto(svcChain)},
				Comment: "masquerade " + comment + " external destinations"}}
		} else {
			if cidr, ok := b.clusterCIDR(f); ok {
				ext.Rules = append(ext.Rules, nftables.Rule{Stmts: []nftables.Stmt{
					nftables.Match{Field: f.saddr, Values: []nftables.Value{nftables.Prefix(cidr)}}, nftables.Goto(svcChain)},
					Comment: "short-circuit pod traffic"})
			}
			ext.Rules = append(ext.Rules,
				nftables.Rule{Stmts: []nftables.Stmt{nftables.FibLocal{Source: true}, b.masqMark(), nftables.Goto(svcChain)},
					Comment: "masquerade and short-circuit local traffic"})
			if localExternal {
				ext.Rules = append(ext.Rules, nftables.R(nftables.Goto(svlChain)))
			}
		}
		fr.chains = append(fr.chains, ext)
	}
	if usesFW {
		drop := []nftables.Stmt{nftables.Drop()}
		if len(p.SourceRanges) > 0 {
			vals := make([]nftables.Value, len(p.SourceRanges))
			for i, r := range p.SourceRanges {
				vals[i] = nftables.Prefix(r.Masked())
			}
			drop = []nftables.Stmt{nftables.Match{Field: f.saddr, Neg: true, Values: vals}, nftables.Drop()}
		}
		fr.chains = append(fr.chains, nftables.Chain{Name: fwChain, Rules: []nftables.Rule{{Stmts: drop, Comment: comment + " loadbalancer source ranges"}}})
	}

	// Endpoint chains and affinity sets, in address order.
	if epChains != nil {
		timeout := time.Duration(p.Affinity.Timeout()) * time.Second
		for _, t := range sel.Reachable {
			ch, ok := epChains[t.AddrPort]
			if !ok {
				continue
			}
			fr.sets = append(fr.sets, nftables.Set{Name: affSets[t.AddrPort], Key: []nftables.Type{f.addr},
				Dynamic: true, Timeout: true, DefaultTimeout: timeout})
			fr.chains = append(fr.chains, nftables.Chain{Name: ch, Rules: []nftables.Rule{
				nftables.R(nftables.SetUpdate{Op: nftables.OpUpdate, Set: affSets[t.AddrPort], Key: []nftables.Field{f.saddr}}),
				{Stmts: []nftables.Stmt{
					nftables.Match{Field: nftables.FieldL4Proto, Values: []nftables.Value{nftables.Proto(proto.Number())}},
					nftables.DNAT{Addr: t.AddrPort.Addr(), Port: t.AddrPort.Port()},
				}, Comment: comment + " -> " + t.String()},
			}})
		}
	}
	return fr, nil
}

func nftElem(v nftables.Verdict, comment string, key []nftables.Value) nftables.Element {
	e := nftables.VMapElem(v, key...)
	e.Comment = comment
	return e
}

// balance writes the rules of a service or local chain: ClientIP affinity
// checks, then the choice of an endpoint among targets. Without affinity
// the choice is one DNAT through the port's slots in an endpoint map, so an
// endpoint change is an element change; with it, a lookup in the chain's
// own verdict map slotMap (slot : goto endpoint chain, the endpoint chains
// remembering the client), sized as the endpoint slots are, so that an
// endpoint change is an element change there too.
func (b *nftBuilder) balance(fr *nftFragment, p *Port, chain, slotMap string, targets []lb.Target, epChains, affSets map[netip.AddrPort]string) ([]nftables.Rule, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	f := fr.family
	comment := p.Comment()
	var rules []nftables.Rule
	if p.Affinity.Enabled() {
		for _, t := range targets {
			rules = append(rules, nftables.Rule{Stmts: []nftables.Stmt{
				nftables.Lookup{Fields: []nftables.Field{f.saddr}, Set: affSets[t.AddrPort]}, nftables.Goto(epChains[t.AddrPort])},
				Comment: comment + " -> " + t.String() + " affinity"})
		}
		key, slots, err := b.pick(p, f, targets, true)
		if err != nil {
			return nil, err
		}
		m := nftables.Set{Name: slotMap, Key: []nftables.Type{nftables.TypeInteger}, Data: []nftables.Type{nftables.TypeVerdict},
			Elements: make([]nftables.Element, len(slots))}
		for i, ti := range slots {
			m.Elements[i] = nftables.VMapElem(nftables.Goto(epChains[targets[ti].AddrPort]), nftables.Int(uint32(i)))
		}
		fr.sets = append(fr.sets, m)
		return append(rules, nftables.R(nftables.VMap{Key: key, Map: slotMap})), nil
	}
	key, slots, err := b.pick(p, f, targets, false)
	if err != nil {
		return nil, err
	}
	id, err := b.slotID(chain)
	if err != nil {
		return nil, portCapacityError(p, "endpointMaps", err.Error())
	}
	shard, base := id%b.opts.shards, (id/b.opts.shards)*nftSlotsPerChain
	slot := nftSlot{chain: chain, id: id, elems: make([]nftables.Element, len(slots))}
	for i, ti := range slots {
		t := targets[ti]
		slot.elems[i] = nftables.MapElem([]nftables.Value{nftables.Int(base + uint32(i))}, nftables.Addr(t.AddrPort.Addr()), nftables.Port(t.AddrPort.Port()))
	}
	fr.slots = append(fr.slots, slot)
	switch k := key.(type) {
	case nftables.Numgen:
		k.Offset = base
		key = k
	case nftables.JHash:
		k.Offset = base
		key = k
	}
	// The DNAT to address . port needs a protocol match; a hash of the
	// source port (tcp sport, ...) is one already, and nft lists the rule
	// without the explicit match then.
	stmts := []nftables.Stmt{nftables.DNATMap{Family: f.nat, Key: key, Map: f.shardMap(shard)}}
	if k, ok := key.(nftables.JHash); !ok || len(k.Fields) == 1 {
		stmts = append([]nftables.Stmt{nftables.Match{Field: nftables.FieldL4Proto, Values: []nftables.Value{nftables.Proto(p.Name.Protocol.Number())}}}, stmts...)
	}
	return append(rules, nftables.Rule{Stmts: stmts, Comment: comment}), nil
}

// pick returns the key that chooses a slot and, for each slot, the index
// of its target. In random mode (numgen) the slots honour the weights
// exactly (each target owns weight/gcd slots) up to nftSlotsPerChain
// slots; in consistent mode (jhash of the flow) they are a Maglev table,
// the same on every node given the same targets. A port whose endpoints do
// not fit is refused with a *lb.ValidationError naming it.
func (b *nftBuilder) pick(p *Port, f *nftFam, targets []lb.Target, affinity bool) (nftables.Key, []int, error) {
	proto := p.Name.Protocol
	c := b.opts.consistent
	if c == nil {
		if len(targets) > nftSlotsPerChain {
			return nil, nil, portCapacityError(p, "endpoints", fmt.Sprintf("%d endpoints do not fit the %d slots of one port", len(targets), nftSlotsPerChain))
		}
		weights := make([]uint32, len(targets))
		for i, t := range targets {
			weights[i] = t.Weight
		}
		counts := nftSlots(weights, nftSlotsPerChain)
		var slots []int
		for i, n := range counts {
			for range n {
				slots = append(slots, i)
			}
		}
		return nftables.Numgen{Mod: uint32(len(slots))}, slots, nil
	}
	size := c.tableSize(len(targets))
	if len(targets) > size {
		return nil, nil, portCapacityError(p, "endpoints", fmt.Sprintf("%d endpoints do not fit the largest consistent-hashing table (%d slots)", len(targets), size))
	}
	backends := make([]lb.MaglevBackend, len(targets))
	index := make(map[string]int, len(targets))
	for i, t := range targets {
		backends[i] = lb.MaglevBackend{Key: t.String(), Weight: t.Weight}
		index[t.String()] = i
	}
	m, err := lb.NewMaglev(backends, size)
	if err != nil {
		return nil, nil, fmt.Errorf("nat: %s: %w", p.Key, err)
	}
	slots := make([]int, size)
	for s := range slots {
		slots[s] = index[m.Backend(m.Entry(s)).Key]
	}
	fields := []nftables.Field{f.saddr, sportField(proto)}
	if c.SourceOnly || affinity {
		fields = fields[:1]
	}
	return nftables.JHash{Fields: fields, Mod: uint32(size), Seed: c.seed()}, slots, nil
}

// nftSlots returns how many slots each weight gets: the weights divided by
// their greatest common divisor, so that the shares are exact, when their
// sum fits max; otherwise max slots apportioned by the largest remainder
// (each within one slot of its exact share), with at least one slot each
// (an endpoint whose share is below one slot gets one, taken from the
// largest; with max endpoints or more, each gets one).
func nftSlots(weights []uint32, max int) []uint32 {
	g := uint64(0)
	for _, w := range weights {
		g = gcd(g, uint64(w))
	}
	out := make([]uint32, len(weights))
	sum := uint64(0)
	for i, w := range weights {
		out[i] = uint32(uint64(w) / g)
		sum += uint64(out[i])
	}
	if sum <= uint64(max) {
		return out
	}
	if len(out) >= max {
		for i := range out {
			out[i] = 1
		}
		return out
	}
	rems := make([]uint64, len(weights))
	given := uint64(0)
	for i := range out {
		q := uint64(out[i]) * uint64(max)
		out[i], rems[i] = uint32(q/sum), q%sum
		given += q / sum
	}
	for left := uint64(max) - given; left > 0; left-- {
		best := 0
		for j := range rems {
			if rems[j] > rems[best] {
				best = j
			}
		}
		out[best]++
		rems[best] = 0
	}
	for i := range out {
		if out[i] == 0 {
			out[i] = 1
			out[slices.Index(out, slices.Max(out))]--
		}
	}
	return out
}

// portCapacityError is the error of a port the layout cannot hold: a
// *lb.ValidationError (matching lb.ErrInvalid) that names the port.
func portCapacityError(p *Port, field, detail string) error {
	return &lb.ValidationError{Object: fmt.Sprintf("service port %s (%s)", p.Key, p.Family),
		Errors: []*lb.FieldError{{Field: field, Type: lb.ErrorTypeForbidden, Detail: detail}}}
}

// sportField is the source port field of a protocol.
func sportField(p lb.Protocol) nftables.Field {
	switch p {
	case lb.UDP:
		return nftables.FieldUDPSport
	case lb.SCTP:
		return nftables.FieldSCTPSport
	}
	return nftables.FieldTCPSport
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func smallestPrimeAtLeast(n int) int {
	for !isPrime(n) {
		n++
	}
	return n
}

// globals returns the fixed part of the table: base chains, the dispatch
// and check chains, and the shared maps (empty).
func (b *nftBuilder) globals() ([]nftables.Chain, []nftables.Set) {
	base := func(name string, typ nftables.ChainType, hook nftables.Hook, prio int32, rules ...nftables.Rule) nftables.Chain {
		return nftables.Chain{Name: name, Base: &nftables.BaseChain{Type: typ, Hook: hook, Priority: prio}, Rules: rules}
	}
	newConn := nftables.CtState{States: nftables.CtNew}
	flt, nat := nftables.ChainTypeFilter, nftables.ChainTypeNAT
	chains := []nftables.Chain{
		base(nftFilterPrerouting, flt, nftables.HookPrerouting, nftFilterPriority, nftables.R(newConn, nftables.Jump(nftFirewallCheck))),
		base(nftFilterInput, flt, nftables.HookInput, nftFilterPriority,
			nftables.R(newConn, nftables.Jump(nftExternalCheck)), nftables.R(newConn, nftables.Jump(nftNodePortCheck))),
		base(nftFilterForward, flt, nftables.HookForward, nftFilterPriority,
			nftables.R(newConn, nftables.Jump(nftEndpointsCheck)), nftables.R(newConn, nftables.Jump(nftExternalCheck))),
		base(nftFilterOutput, flt, nftables.HookOutput, nftFilterPriority,
			nftables.R(newConn, nftables.Jump(nftEndpointsCheck)), nftables.R(newConn, nftables.Jump(nftFirewallCheck))),
		base(nftNATPrerouting, nat, nftables.HookPrerouting, nftables.PriorityDstNAT, nftables.R(nftables.Jump(nftServicesChain))),
		base(nftNATOutput, nat, nftables.HookOutput, nftables.PriorityDstNAT, nftables.R(nftables.Jump(nftServicesChain))),
		base(nftNATPostrouting, nat, nftables.HookPostrouting, nftables.PrioritySrcNAT, nftables.R(nftables.Jump(nftMasquerading))),
		{Name: nftRejectChain, Rules: []nftables.Rule{nftables.R(nftables.Reject{})}},
	}
	services := nftables.Chain{Name: nftServicesChain}
	check := nftables.Chain{Name: nftEndpointsCheck}
	extCheck := nftables.Chain{Name: nftExternalCheck}
	// Node ports are local addresses, which only the input hook sees: the
	// forward hook need not pay the fib lookup.
	npCheck := nftables.Chain{Name: nftNodePortCheck}
	firewall := nftables.Chain{Name: nftFirewallCheck}
	masq := nftables.Chain{Name: nftMasquerading}
	mark := b.cfg.MasqueradeMark
	var sets []nftables.Set
	for _, f := range nftFams {
		addrKey := nftables.Concat{f.daddr, nftables.FieldL4Proto, nftables.FieldTHDport}
		portKey := nftables.Concat{nftables.FieldL4Proto, nftables.FieldTHDport}
		services.Rules = append(services.Rules, nftables.R(nftables.VMap{Key: addrKey, Map: f.set(nftServiceIPs)}))
		check.Rules = append(check.Rules, nftables.R(nftables.VMap{Key: addrKey, Map: f.set(nftNoEndpointServices)}))
		extCheck.Rules = append(extCheck.Rules, nftables.R(nftables.VMap{Key: addrKey, Map: f.set(nftNoEndpointExternal)}))
		firewall.Rules = append(firewall.Rules, nftables.R(nftables.VMap{Key: addrKey, Map: f.set(nftFirewallIPs)}))
		for _, m := range b.nodePortMatches(f) {
			services.Rules = append(services.Rules, nftables.R(append(m, nftables.VMap{Key: portKey, Map: f.set(nftServiceNodePorts)})...))
			npCheck.Rules = append(npCheck.Rules, nftables.R(append(m, nftables.VMap{Key: portKey, Map: f.set(nftNoEndpointNodePorts)})...))
		}
		masq.Rules = append(masq.Rules, nftables.Rule{Stmts: []nftables.Stmt{
			nftables.CtStatus{Bits: nftables.CtStatusDNAT},
			nftables.Lookup{Fields: []nftables.Field{f.saddr, f.daddr}, Set: f.set(nftHairpin)},
			nftables.SetMark{Op: nftables.MarkOr, Value: mark}}, Comment: "hairpin: an endpoint reached itself"})

		addrProtoPort := []nftables.Type{f.addr, nftables.TypeInetProto, nftables.TypeInetService}
		protoPort := []nftables.Type{nftables.TypeInetProto, nftables.TypeInetService}
		verdict := []nftables.Type{nftables.TypeVerdict}
		sets = append(sets,
			nftables.Set{Name: f.set(nftServiceIPs), Key: addrProtoPort, Data: verdict, Comment: "ClusterIP, ExternalIP and LoadBalancer IP traffic"},
			nftables.Set{Name: f.set(nftServiceNodePorts), Key: protoPort, Data: verdict, Comment: "NodePort traffic"},
			nftables.Set{Name: f.set(nftNoEndpointServices), Key: addrProtoPort, Data: verdict, Comment: "cluster IPs without (local) endpoints"},
			nftables.Set{Name: f.set(nftNoEndpointExternal), Key: addrProtoPort, Data: verdict, Comment: "external IPs without (local) endpoints"},
			nftables.Set{Name: f.set(nftNoEndpointNodePorts), Key: protoPort, Data: verdict, Comment: "node ports without (local) endpoints"},
			nftables.Set{Name: f.set(nftFirewallIPs), Key: addrProtoPort, Data: verdict, Comment: "load-balancer IPs with source ranges"},
			nftables.Set{Name: f.set(nftHairpin), Key: []nftables.Type{f.addr, f.addr}, Comment: "endpoint . endpoint"},
		)
	}
	masq.Rules = append(masq.Rules,
		nftables.R(nftables.MarkMatch{Mask: mark, Value: 0}, nftables.Return()),
		nftables.R(nftables.SetMark{Op: nftables.MarkXor, Value: mark}),
		nftables.Rule{Stmts: []nftables.Stmt{nftables.Masquerade{FullyRandom: b.cfg.RandomFully}}, Comment: "lbkit service traffic requiring SNAT"})
	chains = append(chains, services, check, extCheck, npCheck, firewall, masq)
	return chains, sets
}

// nodePortMatches returns, per rule, the matches that select traffic to a
// node-port address of family f: a local address (fib), not loopback, and
// inside Config.NodePortAddresses when set (no rule when none of them is of
// the family).
func (b *nftBuilder) nodePortMatches(f *nftFam) [][]nftables.Stmt {
	local := nftables.FibLocal{}
	if len(b.cfg.NodePortAddresses) == 0 {
		return [][]nftables.Stmt{{
			nftables.Match{Field: f.daddr, Neg: true, Values: []nftables.Value{nftables.Prefix(f.loopback)}}, local}}
	}
	prefixes := lb.FilterPrefixes(b.cfg.NodePortAddresses, f.fam)
	if len(prefixes) == 0 {
		return nil
	}
	vals := make([]nftables.Value, len(prefixes))
	for i, p := range prefixes {
		vals[i] = nftables.Prefix(p.Masked())
	}
	return [][]nftables.Stmt{{nftables.Match{Field: f.daddr, Values: vals}, local}}
}
