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

// portRules is what one service port contributes to the ruleset: its own
// nat chains, and the rules it adds to the shared chains.
type portRules struct {
	hash   uint64
	chains []iptables.Chain // SVC, SVL, EXT, FW and SEP chains (nat table)

	natServices  []iptables.Rule // LBK-SERVICES (nat)
	natNodePorts []iptables.Rule // LBK-NODEPORTS (nat)
	fltServices  []iptables.Rule // LBK-SERVICES (filter)
	fltExternal  []iptables.Rule // LBK-EXTERNAL-SERVICES (filter)
	fltFirewall  []iptables.Rule // LBK-FIREWALL (filter)
}

// ipBuilder turns plan ports into iptables rules for one family.
type ipBuilder struct {
	cfg  Config
	fam  lb.IPFamily
	n    *names
	host int // address bits of the family: 32 or 128

	clusterCIDR netip.Prefix // of this family, if any
}

func newIPBuilder(cfg Config, fam lb.IPFamily, n *names) *ipBuilder {
	b := &ipBuilder{cfg: cfg, fam: fam, n: n, host: fam.Bits()}
	for _, p := range cfg.ClusterCIDRs {
		if fam.Matches(p.Addr()) {
			b.clusterCIDR = p
			break
		}
	}
	return b
}

func (b *ipBuilder) hostPrefix(a netip.Addr) iptables.Addr {
	return iptables.Addr{Prefix: netip.PrefixFrom(a, b.host)}
}

func proto(p lb.Protocol) iptables.ProtoMatch {
	return iptables.ProtoMatch{Proto: iptables.Protocol(p.Lower())}
}

func dport(port uint16) iptables.Ports { return iptables.Ports{Dst: iptables.Port(port)} }

// frontendRule matches traffic to addr:port of the port's protocol.
func (b *ipBuilder) frontendRule(p *Port, addr netip.Addr, port uint16, comment string, target iptables.Target) iptables.Rule {
	return iptables.Rule{
		Dst:     b.hostPrefix(addr),
		Proto:   proto(p.Name.Protocol),
		Matches: []iptables.Match{iptables.Comment(comment), dport(port)},
		Target:  target,
	}
}

func (b *ipBuilder) jump(c iptables.ChainName) iptables.Target { return iptables.Jump{Chain: c} }

// port builds the rules of one service port.
func (b *ipBuilder) port(p *Port) (*portRules, error) {
	n := b.n
	proto := p.Name.Protocol.Lower()
	key := p.Name.String()
	svcChain, err := n.namer.Name(kindSVC, key, proto)
	if err != nil {
		return nil, err
	}
	svlChain, _ := n.namer.Name(kindSVL, key, proto)
	extChain, _ := n.namer.Name(kindEXT, key, proto)
	fwChain, _ := n.namer.Name(kindFW, key, proto)
	sel := &p.Endpoints
	comment := p.Comment()
	pr := &portRules{}

	usesSVC := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyCluster ||
		sel.ExternalVerdict == lb.VerdictForward
	usesSVL := sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyLocal ||
		sel.ExternalVerdict == lb.VerdictForward && p.ExternalPolicy == lb.TrafficPolicyLocal
	usesEXT := sel.ExternalVerdict == lb.VerdictForward

	sepOf := map[netip.AddrPort]iptables.ChainName{}
	sep := func(t lb.Target) iptables.ChainName {
		if c, ok := sepOf[t.AddrPort]; ok {
			return c
		}
		c, _ := n.namer.Name(kindSEP, key, proto, t.String())
		sepOf[t.AddrPort] = c
		return c
	}

	// Entry rules in the shared chains, frontend by frontend.
	internalChain := svcChain
	if p.InternalPolicy == lb.TrafficPolicyLocal {
		internalChain = svlChain
	}
	extEntry := extChain
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
			entry := extEntry
			if f.Kind == lb.FrontendLoadBalancer {
				what = " loadbalancer IP"
				if p.RestrictSources {
					entry = fwChain
				}
			}
			switch sel.ExternalVerdict {
			case lb.VerdictForward:
				pr.natServices = append(pr.natServices, b.frontendRule(p, f.Addr, f.Port, comment+what, b.jump(entry)))
				if entry == fwChain {
					pr.fltFirewall = append(pr.fltFirewall, b.frontendRule(p, f.Addr, f.Port,
						comment+" traffic not accepted by "+string(fwChain), iptables.Drop))
				}
			case lb.VerdictReject:
				pr.fltExternal = append(pr.fltExternal, b.frontendRule(p, f.Addr, f.Port, comment+" has no endpoints", iptables.Reject{}))
			case lb.VerdictDrop:
				pr.fltExternal = append(pr.fltExternal, b.frontendRule(p, f.Addr, f.Port, comment+" has no local endpoints", iptables.Drop))
			}
		case lb.FrontendNodePort:
			rule := iptables.Rule{Proto: iptables.ProtoMatch{Proto: iptables.Protocol(proto)}}
			switch sel.ExternalVerdict {
			case lb.VerdictForward:
				rule.Matches = []iptables.Match{iptables.Comment(comment), dport(f.Port)}
				rule.Target = b.jump(extChain)
				pr.natNodePorts = append(pr.natNodePorts, rule)
			case lb.VerdictReject, lb.VerdictDrop:
				c, t := comment+" has no endpoints", iptables.Target(iptables.Reject{})
				if sel.ExternalVerdict == lb.VerdictDrop {
					c, t = comment+" has no local endpoints", iptables.Drop
				}
				rule.Matches = []iptables.Match{iptables.Comment(c), iptables.AddrType{Dst: iptables.AddrLocal}, dport(f.Port)}
				rule.Target = t
				pr.fltExternal = append(pr.fltExternal, rule)
			}
		}
	}

	// The per-port chains.
	if usesSVC {
		ch := iptables.Chain{Name: svcChain}
		if cip, ok := clusterIPOf(p); ok && sel.InternalVerdict == lb.VerdictForward && p.InternalPolicy == lb.TrafficPolicyCluster {
			switch {
			case b.cfg.MasqueradeAll:
				r := b.frontendRule(p, cip, p.Port, comment+" cluster IP", b.jump(n.markMasq))
				ch.Rules = append(ch.Rules, r)
			case b.clusterCIDR.IsValid():
				r := b.frontendRule(p, cip, p.Port, comment+" cluster IP", b.jump(n.markMasq))
				r.Src = iptables.Addr{Prefix: b.clusterCIDR, Invert: true}
				ch.Rules = append(ch.Rules, r)
			}
		}
		rules, err := b.balance(p, sel.Cluster, sep)
		if err != nil {
			return nil, err
		}
		ch.Rules = append(ch.Rules, rules...)
		pr.chains = append(pr.chains, ch)
	}
	if usesSVL {
		rules, err := b.balance(p, sel.Local, sep)
		if err != nil {
			return nil, err
		}
		pr.chains = append(pr.chains, iptables.Chain{Name: svlChain, Rules: rules})
	}
	if usesEXT {
		ch := iptables.Chain{Name: extChain}
		if p.ExternalPolicy == lb.TrafficPolicyCluster {
			ch.Rules = append(ch.Rules,
				iptables.Rule{Matches: []iptables.Match{iptables.Comment("masquerade traffic for " + comment + " external destinations")}, Target: b.jump(n.markMasq)},
				iptables.Rule{Target: b.jump(svcChain)},
			)
		} else {
			if b.clusterCIDR.IsValid() {
				ch.Rules = append(ch.Rules, iptables.Rule{
					Src:     iptables.Addr{Prefix: b.clusterCIDR},
					Matches: []iptables.Match{iptables.Comment("pod traffic for " + comment + " external destinations")},
					Target:  b.jump(svcChain),
				})
			}
			local := iptables.AddrType{Src: iptables.AddrLocal}
			ch.Rules = append(ch.Rules,
				iptables.Rule{Matches: []iptables.Match{iptables.Comment("masquerade LOCAL traffic for " + comment + " external destinations"), local}, Target: b.jump(n.markMasq)},
				iptables.Rule{Matches: []iptables.Match{iptables.Comment("route LOCAL traffic for " + comment + " external destinations"), local}, Target: b.jump(svcChain)},
				iptables.Rule{Target: b.jump(svlChain)},
			)
		}
		pr.chains = append(pr.chains, ch)
		if p.RestrictSources && sel.ExternalVerdict == lb.VerdictForward && len(p.FrontendsOf(lb.FrontendLoadBalancer)) > 0 {
			fw := iptables.Chain{Name: fwChain}
			for _, src := range p.SourceRanges {
				fw.Rules = append(fw.Rules, iptables.Rule{
					Src:     iptables.Addr{Prefix: src.Masked()},
					Matches: []iptables.Match{iptables.Comment(comment + " loadbalancer IP")},
					Target:  b.jump(extChain),
				})
			}
			pr.chains = append(pr.chains, fw)
		}
	}

	// One SEP chain per endpoint some list uses, in address order.
	for _, t := range sel.Reachable {
		c, ok := sepOf[t.AddrPort]
		if !ok {
			continue // reachable through no list in use (e.g. only in Local, unused)
		}
		dnat := iptables.Rule{
			Proto:  iptables.ProtoMatch{Proto: iptables.Protocol(proto)},
			Target: iptables.DNAT{Addr: t.AddrPort.Addr(), Ports: iptables.Port(t.AddrPort.Port())},
		}
		dnat.Matches = []iptables.Match{iptables.Comment(comment)}
		if p.Affinity.Enabled() {
			dnat.Matches = append(dnat.Matches, iptables.Recent{Mode: iptables.RecentSet, Name: string(c)})
		}
		pr.chains = append(pr.chains, iptables.Chain{Name: c, Rules: []iptables.Rule{
			{Src: b.hostPrefix(t.AddrPort.Addr()), Matches: []iptables.Match{iptables.Comment(comment)}, Target: b.jump(n.markMasq)},
			dnat,
		}})
	}
	return pr, nil
}

// balance writes the rules that spread new connections over targets:
// ClientIP affinity checks first, then the statistic chain.
func (b *ipBuilder) balance(p *Port, targets []lb.Target, sep func(lb.Target) iptables.ChainName) ([]iptables.Rule, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	comment := p.Comment()
	var rules []iptables.Rule
	if p.Affinity.Enabled() {
		for _, t := range targets {
			c := sep(t)
			rules = append(rules, iptables.Rule{
				Matches: []iptables.Match{
					iptables.Comment(comment + " -> " + t.String()),
					iptables.Recent{Mode: iptables.RecentCheck, Seconds: uint32(p.Affinity.Timeout()), Reap: true, Name: string(c)},
				},
				Target: b.jump(c),
			})
		}
	}
	weights := make([]uint32, len(targets))
	for i, t := range targets {
		weights[i] = t.Weight
	}
	probs, err := lb.ProbabilityChain(weights)
	if err != nil {
		return nil, fmt.Errorf("nat: %s: %w", p.Key, err)
	}
	for i, t := range targets {
		r := iptables.Rule{Matches: []iptables.Match{iptables.Comment(comment + " -> " + t.String())}, Target: b.jump(sep(t))}
		if i < len(probs) {
			r.Matches = append(r.Matches, iptables.Statistic{Probability: iptables.Probability(probs[i].Fixed())})
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
		r := iptables.Rule{Matches: []iptables.Match{npComment, local}, Target: b.jump(n.nodePorts)}
		if b.fam == lb.IPv4 {
			// Node ports are not served on loopback: DNAT of a 127/8
			// destination to a remote endpoint would need route_localnet.
			r.Dst = iptables.Addr{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Invert: true}
		}
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
