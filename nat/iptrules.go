package nat

import (
	"fmt"
	"net/netip"

	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
)

// The well-known chains lbkit owns in the iptables engine, after the
// prefix. They mirror kube-proxy's KUBE-SERVICES, KUBE-NODEPORTS, ...
const (
	chainServices         = "SERVICES"          // nat: frontends → per-port chains; filter: internal rejects
	chainNodePorts        = "NODEPORTS"         // nat: node ports → EXT chains
	chainPostrouting      = "POSTROUTING"       // nat: masquerade marked packets
	chainMarkMasq         = "MARK-MASQ"         // nat: set the masquerade mark
	chainExternalServices = "EXTERNAL-SERVICES" // filter: external rejects and drops
	chainFirewall         = "FIREWALL"          // filter: load-balancer source ranges
	chainForward          = "FORWARD"           // filter: accept marked and established forwarded traffic
)

// Per-port chain kinds, as kube-proxy names them.
const (
	kindSVC = "SVC-" // cluster endpoints
	kindSVL = "SVL-" // local endpoints
	kindEXT = "EXT-" // external traffic
	kindFW  = "FW-"  // load-balancer source ranges
	kindSEP = "SEP-" // one endpoint
)

// iptFamily maps an lb family to the iptables one.
func iptFamily(f lb.IPFamily) iptables.Family {
	if f == lb.IPv6 {
		return iptables.IPv6
	}
	return iptables.IPv4
}

// names holds the fixed chain names for one configuration.
type names struct {
	namer                                      iptables.ChainNamer
	services, nodePorts, postrouting, markMasq iptables.ChainName
	externalServices, firewall, forward        iptables.ChainName
}

func newNames(cfg Config) (*names, error) {
	n := &names{namer: iptables.ChainNamer{Prefix: cfg.Prefix}}
	for _, f := range []struct {
		dst    *iptables.ChainName
		suffix string
	}{
		{&n.services, chainServices}, {&n.nodePorts, chainNodePorts}, {&n.postrouting, chainPostrouting},
		{&n.markMasq, chainMarkMasq}, {&n.externalServices, chainExternalServices},
		{&n.firewall, chainFirewall}, {&n.forward, chainForward},
	} {
		c, err := n.namer.Fixed(f.suffix)
		if err != nil {
			return nil, fmt.Errorf("nat: chain names for prefix %q: %w", cfg.Prefix, err)
		}
		*f.dst = c
	}
	return n, nil
}

// portRules is what a sync remembers of one service port: the names of
// its own nat chains, and the rules it adds to the shared chains. The rules
// of its own chains are written straight into the restore buffer and not
// kept: an unchanged port is not rendered again.
type portRules struct {
	hash   uint64
	chains []iptables.ChainName // SVC, SVL, EXT, FW and SEP chains (nat table)
	flows  *portFlows           // for UDP and SCTP: what conntrack cleanup compares

	natServices  []iptables.Rule // LBK-SERVICES (nat)
	natNodePorts []iptables.Rule // LBK-NODEPORTS (nat)
	fltServices  []iptables.Rule // LBK-SERVICES (filter)
	fltExternal  []iptables.Rule // LBK-EXTERNAL-SERVICES (filter)
	fltFirewall  []iptables.Rule // LBK-FIREWALL (filter)
}

// ipBuilder turns plan ports into iptables rules for one family.
//
// It is written to allocate little, because a cold sync of a large cluster
// builds hundreds of thousands of rules: match lists are carved from shared
// slabs, and values that many rules hold (the jump to the masquerade chain,
// the probabilities of statistic matches, a port's comment) are boxed into
// their interface once and reused.
type ipBuilder struct {
	cfg  Config
	fam  lb.IPFamily
	n    *names
	host int // address bits of the family: 32 or 128

	clusterCIDR netip.Prefix // of this family, if any

	keepSlab []iptables.Match // matches of rules that outlive the sync (entries)
	tmpSlab  []iptables.Match // matches of one port's own chains, reused per port
	ruleSlab []iptables.Rule  // rules of one port's own chains, reused per port
	chains   []iptables.Chain // one port's own chains, reused per port
	toMasq   iptables.Target
	stats    map[lb.Probability]iptables.Match
}

func newIPBuilder(cfg Config, fam lb.IPFamily, n *names) *ipBuilder {
	b := &ipBuilder{cfg: cfg, fam: fam, n: n, host: fam.Bits(),
		toMasq: iptables.Jump{Chain: n.markMasq},
		stats:  map[lb.Probability]iptables.Match{},
	}
	for _, p := range cfg.ClusterCIDRs {
		if fam.Matches(p.Addr()) {
			b.clusterCIDR = p
			break
		}
	}
	return b
}

// carve appends ms to *slab and returns them as a slice with its capacity
// capped, so that an append by the caller cannot overwrite the neighbour. A
// full slab is replaced, never grown, so slices handed out stay valid.
func carve(slab *[]iptables.Match, ms []iptables.Match) []iptables.Match {
	if len(*slab)+len(ms) > cap(*slab) {
		*slab = make([]iptables.Match, 0, max(4096, len(ms)))
	}
	start := len(*slab)
	*slab = append(*slab, ms...)
	return (*slab)[start:len(*slab):len(*slab)]
}

// matches holds the matches of a rule of the current port's own chains;
// they are reused by the next port.
func (b *ipBuilder) matches(ms ...iptables.Match) []iptables.Match { return carve(&b.tmpSlab, ms) }

// kmatches holds the matches of a rule that is kept across syncs.
func (b *ipBuilder) kmatches(ms ...iptables.Match) []iptables.Match { return carve(&b.keepSlab, ms) }

// rules returns an empty slice with room for n rules of the current port's
// own chains, reused by the next port.
func (b *ipBuilder) rules(n int) []iptables.Rule {
	if len(b.ruleSlab)+n > cap(b.ruleSlab) {
		b.ruleSlab = make([]iptables.Rule, 0, max(1024, n))
	}
	start := len(b.ruleSlab)
	b.ruleSlab = b.ruleSlab[:start+n]
	return b.ruleSlab[start : start : start+n]
}

// statistic returns the boxed statistic match of probability p, shared by
// every rule that uses it: services with the same number of equal-weight
// endpoints share their whole chain of probabilities, and converting one
// to the kernel's fixed point the way kube-proxy's text does is not free.
func (b *ipBuilder) statistic(p lb.Probability) iptables.Match {
	m, ok := b.stats[p]
	if !ok {
		m = iptables.Statistic{Probability: iptables.Probability(p.Fixed())}
		b.stats[p] = m
	}
	return m
}

func (b *ipBuilder) hostPrefix(a netip.Addr) iptables.Addr {
	return iptables.Addr{Prefix: netip.PrefixFrom(a, b.host)}
}

func proto(p lb.Protocol) iptables.ProtoMatch {
	return iptables.ProtoMatch{Proto: iptables.Protocol(p.Lower())}
}

func dport(port uint16) iptables.Ports { return iptables.Ports{Dst: iptables.Port(port)} }

// frontendRule matches traffic to addr:port of the port's protocol. Its
// matches are kept: frontend rules go into the shared chains.
func (b *ipBuilder) frontendRule(p *Port, addr netip.Addr, port uint16, comment string, target iptables.Target) iptables.Rule {
	return iptables.Rule{
		Dst:     b.hostPrefix(addr),
		Proto:   proto(p.Name.Protocol),
		Matches: b.kmatches(iptables.Comment(comment), dport(port)),
		Target:  target,
	}
}

func (b *ipBuilder) jump(c iptables.ChainName) iptables.Target { return iptables.Jump{Chain: c} }

// sepInfo is what the rules of one endpoint share.
type sepInfo struct {
	chain  iptables.ChainName
	jump   iptables.Target // Jump{chain}, boxed once
	arrow  iptables.Match  // Comment("ns/svc:port -> addr:port"), boxed once
	weight uint32
	used   bool // some list in use sends traffic to it
}

// port builds the rules of one service port: the entries it adds to the
// shared chains (kept in the result) and its own chains, returned in a
// slice that is valid until the next call.
func (b *ipBuilder) port(p *Port) (*portRules, []iptables.Chain, error) {
	b.tmpSlab, b.ruleSlab, b.chains = b.tmpSlab[:0], b.ruleSlab[:0], b.chains[:0]
	n := b.n
	proto := p.Name.Protocol.Lower()
	key := p.Name.String()
	svcChain, err := n.namer.Name(kindSVC, key, proto)
	if err != nil {
		return nil, nil, err
	}
	sel := &p.Endpoints
	comment := p.Comment()
	pr := &portRules{flows: flowsOf(p)}

	// As kube-proxy: the external chain exists whenever the port is
	// externally accessible and has endpoints anywhere, even when a Local
	// policy finds none on this node, because traffic from pods and from
	// the node itself is short-circuited to the cluster endpoints; other
	// external traffic then falls through it and meets the filter table's
	// DROP.
	usesEXT := sel.HasEndpoints && p.ExternallyAccessible
	localExternal := usesEXT && p.ExternalPolicy == lb.TrafficPolicyLocal && len(sel.Local) > 0
	usesSVC := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyCluster || usesEXT
	usesSVL := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyLocal || localExternal
	var svlChain, extChain, fwChain iptables.ChainName
	if usesSVL || p.InternalPolicy == lb.TrafficPolicyLocal {
		svlChain, _ = n.namer.Name(kindSVL, key, proto)
	}
	if usesEXT {
		extChain, _ = n.namer.Name(kindEXT, key, proto)
		if p.RestrictSources {
			fwChain, _ = n.namer.Name(kindFW, key, proto)
		}
	}

	// One entry per reachable endpoint, in the order of Reachable (sorted
	// by address, as are the Cluster and Local lists it is the union of).
	seps := make([]sepInfo, len(sel.Reachable))
	for i, t := range sel.Reachable {
		ts := t.String()
		c, err := n.namer.Name(kindSEP, key, proto, ts)
		if err != nil {
			return nil, nil, err
		}
		seps[i] = sepInfo{chain: c, jump: iptables.Jump{Chain: c}, arrow: iptables.Comment(comment + " -> " + ts), weight: t.Weight}
	}
	// sepsOf returns the entries of targets, a sorted subset of Reachable.
	sepsOf := func(targets []lb.Target) []*sepInfo {
		out := make([]*sepInfo, 0, len(targets))
		j := 0
		for _, t := range targets {
			for j < len(sel.Reachable) && sel.Reachable[j].AddrPort != t.AddrPort {
				j++
			}
			if j == len(sel.Reachable) {
				break // not reachable: cannot happen with lb's selection
			}
			seps[j].used = true
			out = append(out, &seps[j])
		}
		return out
	}

	// Entry rules in the shared chains, frontend by frontend.
	internalChain := svcChain
	if p.InternalPolicy == lb.TrafficPolicyLocal {
		internalChain = svlChain
	}
	for _, f := range p.Frontends {
		if !f.Intercept() {
			continue // ipMode Proxy: the node must not touch this address
		}
		switch f.Kind {
		case lb.FrontendClusterIP:
			switch sel.InternalVerdict {
			case lb.VerdictForward:
				pr.natServices = append(pr.natServices, b.frontendRule(p, f.Addr, f.Port, comment+" cluster IP", b.jump(internalChain)))
			case lb.VerdictReject:
				pr.fltServices = append(pr.fltServices, b.frontendRule(p, f.Addr, f.Port, comment+" has no endpoints", iptables.Reject{}))
			case lb.VerdictDrop:
				pr.fltServices = append(pr.fltServices, b.frontendRule(p, f.Addr, f.Port, comment+" has no local endpoints", iptables.Drop))
			}
		case lb.FrontendExternalIP, lb.FrontendLoadBalancer:
			what := " external IP"
			entry := extChain
			if f.Kind == lb.FrontendLoadBalancer {
				what = " loadbalancer IP"
				if p.RestrictSources {
					entry = fwChain
				}
			}
			if usesEXT {
				pr.natServices = append(pr.natServices, b.frontendRule(p, f.Addr, f.Port, comment+what, b.jump(entry)))
				if entry == fwChain {
					pr.fltFirewall = append(pr.fltFirewall, b.frontendRule(p, f.Addr, f.Port,
						comment+" traffic not accepted by "+string(fwChain), iptables.Drop))
				}
			}
			switch sel.ExternalVerdict {
			case lb.VerdictReject:
				pr.fltExternal = append(pr.fltExternal, b.frontendRule(p, f.Addr, f.Port, comment+" has no endpoints", iptables.Reject{}))
			case lb.VerdictDrop:
				pr.fltExternal = append(pr.fltExternal, b.frontendRule(p, f.Addr, f.Port, comment+" has no local endpoints", iptables.Drop))
			}
		case lb.FrontendNodePort:
			rule := iptables.Rule{Proto: iptables.ProtoMatch{Proto: iptables.Protocol(proto)}}
			if usesEXT {
				pr.natNodePorts = append(pr.natNodePorts, iptables.Rule{
					Proto:   rule.Proto,
					Matches: b.kmatches(iptables.Comment(comment), dport(f.Port)),
					Target:  b.jump(extChain),
				})
			}
			switch sel.ExternalVerdict {
			case lb.VerdictReject, lb.VerdictDrop:
				c, t := comment+" has no endpoints", iptables.Target(iptables.Reject{})
				if sel.ExternalVerdict == lb.VerdictDrop {
					c, t = comment+" has no local endpoints", iptables.Drop
				}
				rule.Matches = b.kmatches(iptables.Comment(c), iptables.AddrType{Dst: iptables.AddrLocal}, dport(f.Port))
				rule.Target = t
				pr.fltExternal = append(pr.fltExternal, rule)
			}
		}
	}

	// The per-port chains. Cluster-IP traffic from outside the cluster
	// CIDR (or all of it, with MasqueradeAll) is marked for masquerading
	// first thing in the internal chain, whichever of SVC and SVL that is.
	var masq *iptables.Rule
	if cip, ok := clusterIPOf(p); ok && sel.InternalVerdict == lb.VerdictForward {
		switch {
		case b.cfg.MasqueradeAll:
			r := b.frontendRule(p, cip, p.Port, comment+" cluster IP", b.toMasq)
			masq = &r
		case b.clusterCIDR.IsValid():
			r := b.frontendRule(p, cip, p.Port, comment+" cluster IP", b.toMasq)
			r.Src = iptables.Addr{Prefix: b.clusterCIDR, Invert: true}
			masq = &r
		}
	}
	internalMasq := func(policy lb.TrafficPolicy) *iptables.Rule {
		if p.InternalPolicy == policy {
			return masq
		}
		return nil
	}
	if usesSVC {
		ch := iptables.Chain{Name: svcChain}
		if ch.Rules, err = b.balance(p, sepsOf(sel.Cluster), internalMasq(lb.TrafficPolicyCluster)); err != nil {
			return nil, nil, err
		}
		b.chains = append(b.chains, ch)
	}
	if usesSVL {
		rules, err := b.balance(p, sepsOf(sel.Local), internalMasq(lb.TrafficPolicyLocal))
		if err != nil {
			return nil, nil, err
		}
		b.chains = append(b.chains, iptables.Chain{Name: svlChain, Rules: rules})
	}
	if usesEXT {
		ch := iptables.Chain{Name: extChain}
		svcJump := b.jump(svcChain)
		if p.ExternalPolicy == lb.TrafficPolicyCluster {
			ch.Rules = append(b.rules(2),
				iptables.Rule{Matches: b.matches(iptables.Comment("masquerade traffic for " + comment + " external destinations")), Target: b.toMasq},
				iptables.Rule{Target: svcJump},
			)
		} else {
			ch.Rules = b.rules(4)
			if b.clusterCIDR.IsValid() {
				ch.Rules = append(ch.Rules, iptables.Rule{
					Src:     iptables.Addr{Prefix: b.clusterCIDR},
					Matches: b.matches(iptables.Comment("pod traffic for " + comment + " external destinations")),
					Target:  svcJump,
				})
			}
			local := iptables.AddrType{Src: iptables.AddrLocal}
			ch.Rules = append(ch.Rules,
				iptables.Rule{Matches: b.matches(iptables.Comment("masquerade LOCAL traffic for "+comment+" external destinations"), local), Target: b.toMasq},
				iptables.Rule{Matches: b.matches(iptables.Comment("route LOCAL traffic for "+comment+" external destinations"), local), Target: svcJump},
			)
			if localExternal {
				ch.Rules = append(ch.Rules, iptables.Rule{Target: b.jump(svlChain)})
			}
		}
		b.chains = append(b.chains, ch)
		if fwChain != "" {
			fw := iptables.Chain{Name: fwChain, Rules: b.rules(len(p.SourceRanges))}
			lbComment := iptables.Match(iptables.Comment(comment + " loadbalancer IP"))
			extJump := b.jump(extChain)
			for _, src := range p.SourceRanges {
				fw.Rules = append(fw.Rules, iptables.Rule{
					Src:     iptables.Addr{Prefix: src.Masked()},
					Matches: b.matches(lbComment),
					Target:  extJump,
				})
			}
			b.chains = append(b.chains, fw)
		}
	}

	// One SEP chain per endpoint some list in use sends traffic to, in
	// address order.
	portComment := iptables.Match(iptables.Comment(comment))
	protoMatch := iptables.ProtoMatch{Proto: iptables.Protocol(proto)}
	sepRules := b.rules(2 * len(seps))
	for i := range seps {
		sp := &seps[i]
		if !sp.used {
			continue
		}
		t := sel.Reachable[i]
		dnat := iptables.Rule{
			Proto:   protoMatch,
			Matches: b.matches(portComment),
			Target:  iptables.DNAT{Addr: t.AddrPort.Addr(), Ports: iptables.Port(t.AddrPort.Port())},
		}
		if p.Affinity.Enabled() {
			dnat.Matches = b.matches(portComment, iptables.Recent{Mode: iptables.RecentSet, Name: string(sp.chain)})
		}
		start := len(sepRules)
		sepRules = append(sepRules,
			iptables.Rule{Src: b.hostPrefix(t.AddrPort.Addr()), Matches: dnat.Matches[:1:1], Target: b.toMasq},
			dnat)
		b.chains = append(b.chains, iptables.Chain{Name: sp.chain, Rules: sepRules[start:len(sepRules):len(sepRules)]})
	}
	pr.chains = make([]iptables.ChainName, len(b.chains))
	for i := range b.chains {
		pr.chains[i] = b.chains[i].Name
	}
	return pr, b.chains, nil
}

// balance writes the rules of a service chain: first (optionally) the
// masquerade rule, then the ClientIP affinity checks, then the statistic
// chain that spreads new connections over the endpoints by weight.
func (b *ipBuilder) balance(p *Port, seps []*sepInfo, first *iptables.Rule) ([]iptables.Rule, error) {
	n := len(seps)
	if p.Affinity.Enabled() {
		n *= 2
	}
	if first != nil {
		n++
	}
	rules := b.rules(n)
	if first != nil {
		rules = append(rules, *first)
	}
	if len(seps) == 0 {
		return rules, nil
	}
	if p.Affinity.Enabled() {
		timeout := uint32(p.Affinity.Timeout())
		for _, sp := range seps {
			rules = append(rules, iptables.Rule{
				Matches: b.matches(sp.arrow, iptables.Recent{Mode: iptables.RecentCheck, Seconds: timeout, Reap: true, Name: string(sp.chain)}),
				Target:  sp.jump,
			})
		}
	}
	weights := make([]uint32, len(seps))
	for i, sp := range seps {
		weights[i] = sp.weight
	}
	probs, err := lb.ProbabilityChain(weights)
	if err != nil {
		return nil, fmt.Errorf("nat: %s: %w", p.Key, err)
	}
	for i, sp := range seps {
		r := iptables.Rule{Target: sp.jump}
		if i < len(probs) {
			r.Matches = b.matches(sp.arrow, b.statistic(probs[i]))
		} else {
			r.Matches = b.matches(sp.arrow)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func clusterIPOf(p *Port) (netip.Addr, bool) {
	for _, f := range p.Frontends {
		if f.Kind == lb.FrontendClusterIP {
			return f.Addr, true
		}
	}
	return netip.Addr{}, false
}

// globalChains builds the shared chains from every port's contributions,
// in plan order.
func (b *ipBuilder) globalChains(ports []*portRules) (nat, filter []iptables.Chain) {
	n := b.n
	cfg := b.cfg
	natSvc := iptables.Chain{Name: n.services}
	natNP := iptables.Chain{Name: n.nodePorts}
	fltSvc := iptables.Chain{Name: n.services}
	fltExt := iptables.Chain{Name: n.externalServices}
	fltFW := iptables.Chain{Name: n.firewall}
	for _, pr := range ports {
		natSvc.Rules = append(natSvc.Rules, pr.natServices...)
		natNP.Rules = append(natNP.Rules, pr.natNodePorts...)
		fltSvc.Rules = append(fltSvc.Rules, pr.fltServices...)
		fltExt.Rules = append(fltExt.Rules, pr.fltExternal...)
		fltFW.Rules = append(fltFW.Rules, pr.fltFirewall...)
	}
	// Node ports last: traffic to a local address that no frontend above
	// claimed may be for a node port.
	npComment := iptables.Comment("lbkit service nodeports; NOTE: this must be the last rule in this chain")
	local := iptables.AddrType{Dst: iptables.AddrLocal}
	npPrefixes := lb.FilterPrefixes(cfg.NodePortAddresses, b.fam)
	switch {
	case len(cfg.NodePortAddresses) == 0:
		// Node ports are not served on loopback: DNAT of a 127/8
		// destination to a remote endpoint would need route_localnet, and
		// the kernel does not route ::1 off the host at all.
		loopback := netip.MustParsePrefix("127.0.0.0/8")
		if b.fam == lb.IPv6 {
			loopback = netip.MustParsePrefix("::1/128")
		}
		r := iptables.Rule{Dst: iptables.Addr{Prefix: loopback, Invert: true}, Matches: []iptables.Match{npComment, local}, Target: b.jump(n.nodePorts)}
		natSvc.Rules = append(natSvc.Rules, r)
	default:
		for _, pfx := range npPrefixes {
			natSvc.Rules = append(natSvc.Rules, iptables.Rule{Dst: iptables.Addr{Prefix: pfx.Masked()}, Matches: []iptables.Match{npComment, local}, Target: b.jump(n.nodePorts)})
		}
	}
	// Node ports of services without (local) endpoints are rejected or
	// dropped on the same addresses.
	if len(cfg.NodePortAddresses) > 0 {
		var scoped []iptables.Rule
		for _, r := range fltExt.Rules {
			if r.Dst.IsZero() { // a node-port rule
				for _, pfx := range npPrefixes {
					rr := r
					rr.Dst = iptables.Addr{Prefix: pfx.Masked()}
					scoped = append(scoped, rr)
				}
				continue
			}
			scoped = append(scoped, r)
		}
		fltExt.Rules = scoped
	}

	markMasq := iptables.Chain{Name: n.markMasq, Rules: []iptables.Rule{{Target: iptables.OrMark(cfg.MasqueradeMark)}}}
	post := iptables.Chain{Name: n.postrouting, Rules: []iptables.Rule{
		{Matches: []iptables.Match{iptables.MarkMatch{Value: cfg.MasqueradeMark, Mask: cfg.MasqueradeMark, Invert: true}}, Target: iptables.Return},
		{Target: iptables.XorMark(cfg.MasqueradeMark)},
		{Matches: []iptables.Match{iptables.Comment("lbkit service traffic requiring SNAT")}, Target: iptables.Masquerade{RandomFully: cfg.RandomFully}},
	}}
	fwd := iptables.Chain{Name: n.forward, Rules: []iptables.Rule{
		{Matches: []iptables.Match{iptables.Comment("lbkit forwarding rules"), iptables.MarkMatch{Value: cfg.MasqueradeMark, Mask: cfg.MasqueradeMark}}, Target: iptables.Accept},
		{Matches: []iptables.Match{iptables.Comment("lbkit forwarding conntrack rule"), iptables.Conntrack{States: iptables.CTRelated | iptables.CTEstablished}}, Target: iptables.Accept},
	}}
	nat = []iptables.Chain{natSvc, natNP, markMasq, post}
	filter = []iptables.Chain{fltSvc, fltExt, fltFW, fwd}
	return nat, filter
}

// hook is a rule lbkit keeps in a built-in chain so that packets reach its
// own chains.
type hook struct {
	table iptables.Table
	chain iptables.ChainName
	rule  iptables.Rule
}

// hooks lists the jumps from the built-in chains, in kube-proxy's layout.
func (n *names) hooks() []hook {
	newConn := iptables.Conntrack{States: iptables.CTNew}
	j := func(table iptables.Table, from iptables.ChainName, comment string, to iptables.ChainName, onlyNew bool) hook {
		r := iptables.Rule{Target: iptables.Jump{Chain: to}}
		if onlyNew {
			r.Matches = append(r.Matches, newConn)
		}
		r.Matches = append(r.Matches, iptables.Comment(comment))
		return hook{table, from, r}
	}
	nat, filter := iptables.TableNAT, iptables.TableFilter
	return []hook{
		j(nat, iptables.ChainPrerouting, "lbkit service portals", n.services, false),
		j(nat, iptables.ChainOutput, "lbkit service portals", n.services, false),
		j(nat, iptables.ChainPostrouting, "lbkit postrouting rules", n.postrouting, false),
		j(filter, iptables.ChainInput, "lbkit load balancer firewall", n.firewall, true),
		j(filter, iptables.ChainInput, "lbkit externally-visible service portals", n.externalServices, true),
		j(filter, iptables.ChainForward, "lbkit load balancer firewall", n.firewall, true),
		j(filter, iptables.ChainForward, "lbkit forwarding rules", n.forward, false),
		j(filter, iptables.ChainForward, "lbkit service portals", n.services, true),
		j(filter, iptables.ChainForward, "lbkit externally-visible service portals", n.externalServices, true),
		j(filter, iptables.ChainOutput, "lbkit load balancer firewall", n.firewall, true),
		j(filter, iptables.ChainOutput, "lbkit service portals", n.services, true),
	}
}
