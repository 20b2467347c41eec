package lb

import (
	"net/netip"
	"slices"
)

// Node is the node a Resolver programs: its name (for Local traffic
// policies) and its zone (for topology preference).
type Node struct {
	Name string
	Zone string
}

// FrontendKind says how traffic reaches a service port.
type FrontendKind string

// Frontend kinds.
const (
	FrontendClusterIP    FrontendKind = "ClusterIP"
	FrontendNodePort     FrontendKind = "NodePort"
	FrontendExternalIP   FrontendKind = "ExternalIP"
	FrontendLoadBalancer FrontendKind = "LoadBalancer"
)

// Frontend is one address and port on which a service port receives
// traffic.
type Frontend struct {
	Kind FrontendKind
	// Addr is the address; it is the zero Addr for a NodePort frontend,
	// which means "the node's addresses" (the engine knows them).
	Addr netip.Addr
	// Port is the service port, or the node port for a NodePort frontend.
	Port uint16
	// IPMode is set for LoadBalancer frontends only (VIP or Proxy).
	IPMode IPMode
}

// Intercept reports whether the node must intercept traffic to f: false
// only for a load-balancer IP in Proxy mode, which must be left to route to
// the load balancer.
func (f Frontend) Intercept() bool {
	return f.Kind != FrontendLoadBalancer || f.IPMode != IPModeProxy
}

// External reports whether traffic to f is external traffic (subject to the
// external traffic policy): every kind but ClusterIP.
func (f Frontend) External() bool { return f.Kind != FrontendClusterIP }

// Verdict says what a node does with a kind of traffic to a service port.
type Verdict string

// Verdicts.
const (
	// VerdictNone: the port receives no traffic of this kind (external
	// traffic to a port that is not externally accessible).
	VerdictNone Verdict = ""
	// VerdictForward: send the traffic to one of the selected targets.
	VerdictForward Verdict = "Forward"
	// VerdictReject: the service has no usable endpoint anywhere; reject
	// (ICMP unreachable / TCP reset), as kube-proxy does in the filter
	// table.
	VerdictReject Verdict = "Reject"
	// VerdictDrop: the policy is Local and this node has no usable
	// endpoint; drop silently, as kube-proxy does.
	VerdictDrop Verdict = "Drop"
)

// Target is one endpoint of one service port, with the target port
// resolved.
type Target struct {
	// AddrPort is the endpoint address and the resolved target port.
	AddrPort netip.AddrPort
	// Weight is the effective weight, at least 1.
	Weight   uint32
	NodeName string
	Zone     string
	// Local reports whether the endpoint runs on the resolving node.
	Local bool
	// Ready is the effective readiness (always true when the service
	// publishes not-ready addresses).
	Ready       bool
	Serving     bool
	Terminating bool
}

// String returns "addr:port" ("[addr]:port" for IPv6), kube-proxy's
// endpoint string.
func (t Target) String() string { return t.AddrPort.String() }

// EndpointSelection is which endpoints each kind of traffic to one service
// port may use on one node, with Kubernetes semantics.
//
// Its lists are read-only: two of them may share one backing array (Internal
// is Cluster or Local, and a list that keeps every target of another is that
// list), so modify a copy (slices.Clone), never an element in place. None
// has spare capacity, so appending to one never changes another.
type EndpointSelection struct {
	// Cluster is what the Cluster policy uses: ready endpoints (only those
	// in the node's zone when the service prefers the same zone, the zone
	// has one, and every ready endpoint has a zone); when none is ready
	// anywhere, the serving and terminating
	// endpoints (graceful-termination fallback). It is nil when the port
	// uses no Cluster policy: internal policy Local and not externally
	// accessible.
	//
	// With external policy Local, external traffic that comes from inside
	// the cluster (pods, or the node itself) still uses Cluster, as in
	// kube-proxy's short-circuit rules.
	Cluster []Target
	// Local is what a Local policy uses: this node's ready endpoints, or
	// when it has none, this node's serving and terminating ones. It is nil
	// when neither policy is Local.
	Local []Target
	// Internal is what cluster-IP traffic uses: Cluster or Local according
	// to the internal traffic policy.
	Internal []Target
	// External is what node-port, external-IP and load-balancer traffic
	// uses: Cluster or Local according to the external traffic policy. It
	// is nil when the port is not externally accessible.
	External []Target
	// Reachable is the union of the lists in use, each endpoint once: the
	// endpoints this node may send traffic to (one KUBE-SEP chain each).
	Reachable []Target
	// Serving is every serving endpoint of the port, on any node: ready,
	// or serving and terminating (sorted by address and port). New flows
	// never go to one that is not Reachable, but the flows it already has
	// may go on (graceful termination): engines keep their connection
	// tracking, as kube-proxy does, until it stops serving or is gone.
	Serving []Target

	// HasEndpoints reports whether the port has a usable endpoint (ready,
	// or serving and terminating) on any node.
	HasEndpoints bool
	// InternalVerdict is Reject when HasEndpoints is false, Drop when the
	// internal policy is Local and Local is empty, Forward otherwise.
	InternalVerdict Verdict
	// ExternalVerdict is None when the port is not externally accessible,
	// Reject when HasEndpoints is false, Drop when the external policy is
	// Local and Local is empty, Forward otherwise.
	ExternalVerdict Verdict

	// ClusterFallback reports that Cluster holds terminating endpoints
	// because none was ready; LocalFallback the same for Local.
	ClusterFallback bool
	LocalFallback   bool
	// ZoneFiltered reports that Cluster was narrowed to the node's zone.
	ZoneFiltered bool
}

// ResolvedPort is everything an engine needs to program one service port in
// one IP family on one node.
type ResolvedPort struct {
	Name   ServicePortName
	Family IPFamily
	// Port is the service port; NodePort the node port or 0.
	Port     uint16
	NodePort uint16
	// TargetPort is the port as declared; each Target carries the resolved
	// number.
	TargetPort TargetPort
	// Frontends lists every address of this family the port receives
	// traffic on: the cluster IP, the node port, the external IPs and the
	// load-balancer IPs (both ipModes; see Frontend.Intercept), each
	// address once per kind, in the order the Service lists them.
	Frontends []Frontend
	// RestrictSources reports that the service has load-balancer source
	// ranges; then only SourceRanges (those of this family) may reach the
	// load-balancer frontends, and an empty SourceRanges admits nobody.
	// (kube-proxy drops the restriction in a family without ranges; lbkit
	// keeps it closed.)
	RestrictSources bool
	SourceRanges    []netip.Prefix
	// Affinity has the effective type and timeout.
	Affinity SessionAffinity
	// InternalPolicy and ExternalPolicy are the effective policies
	// (ExternalPolicy is Cluster when the port is not externally
	// accessible in this family).
	InternalPolicy TrafficPolicy
	ExternalPolicy TrafficPolicy
	// ExternallyAccessible reports whether the port takes external traffic
	// in this family: one of its Frontends is a node port, an external IP
	// or a VIP-mode load-balancer IP (see Service.PortExternallyAccessible).
	// A dual-stack service whose only external IP is IPv4 is externally
	// accessible on IPv4 and not on IPv6, where it then has no External
	// targets, ExternalVerdict None and no masquerading.
	ExternallyAccessible bool
	HealthCheckNodePort  uint16

	Endpoints EndpointSelection
}

// FrontendsOf returns the frontends of kind k.
func (r *ResolvedPort) FrontendsOf(k FrontendKind) []Frontend {
	var out []Frontend
	for _, f := range r.Frontends {
		if f.Kind == k {
			out = append(out, f)
		}
	}
	return out
}

// MasqueradeExternal reports whether external traffic must be source-NATed
// (masqueraded) so that replies return through this node: true when the
// port is externally accessible in this family with external policy
// Cluster. With Local the client address is preserved.
func (r *ResolvedPort) MasqueradeExternal() bool {
	return r.ExternallyAccessible && r.ExternalPolicy == TrafficPolicyCluster
}

// Resolver resolves services for one node.
type Resolver struct {
	Node       Node
	Validation ValidateOptions
}

// Resolve is Resolver{Node: node}.Resolve(svc, endpoints).
func Resolve(svc *Service, endpoints []Endpoint, node Node) ([]ResolvedPort, error) {
	r := Resolver{Node: node}
	return r.Resolve(svc, endpoints)
}

// Resolve validates svc, its endpoints and the node together and returns one
// ResolvedPort per service port and family of the service (ports in order,
// families in cluster-IP order). A headless service resolves to nil: there
// is nothing to program. On invalid input it returns a *ValidationError
// listing every problem (endpoint fields as "endpoints[i]...", node fields
// as "node...") and no ports; a Local traffic policy without a node name is
// such a problem.
//
// Endpoints are matched to each port by family, and each endpoint's port
// is found as Endpoint.Ports describes: the endpoint port named after the
// service port, else the one a named target port names (an endpoint without
// it is left out of that port), else the numeric target port. Endpoints that resolve to
// the same address and port for a service port (one endpoint listed by two
// EndpointSlices, a reused pod IP) give one target: the first that is not
// terminating, preferring a ready one, else the first. External IPs and
// VIP-mode ingress IPs of a family the service has no cluster IP for are
// ignored, as kube-proxy ignores them.
func (r *Resolver) Resolve(svc *Service, endpoints []Endpoint) ([]ResolvedPort, error) {
	var e errs
	validateServiceInto(&e, svc, r.Validation)
	validateEndpoints(&e, endpoints)
	if r.Node.Name != "" && !isDNS1123Subdomain(r.Node.Name) {
		e.add("node.name", ErrorTypeInvalid, "%q is not a DNS-1123 subdomain", r.Node.Name)
	}
	if r.Node.Zone != "" && !isLabelValue(r.Node.Zone) {
		e.add("node.zone", ErrorTypeInvalid, "%q is not a label value", r.Node.Zone)
	}
	if r.Node.Name == "" && (svc.InternalPolicy() == TrafficPolicyLocal || svc.ExternalTrafficPolicy == TrafficPolicyLocal) {
		e.add("node.name", ErrorTypeRequired, "the service has a Local traffic policy, which needs the node's name")
	}
	if err := e.err(func() string { return serviceObject(svc) }); err != nil {
		return nil, err
	}
	if svc.Headless() {
		return nil, nil
	}
	out := make([]ResolvedPort, 0, len(svc.Ports)*len(svc.ClusterIPs))
	for _, p := range svc.Ports {
		for _, clusterIP := range svc.ClusterIPs {
			out = append(out, r.resolvePort(svc, p, clusterIP, endpoints))
		}
	}
	return out, nil
}

func (r *Resolver) resolvePort(svc *Service, p ServicePort, clusterIP netip.Addr, endpoints []Endpoint) ResolvedPort {
	fam := FamilyOf(clusterIP)
	rp := ResolvedPort{
		Name:                svc.PortName(p),
		Family:              fam,
		Port:                p.Port,
		NodePort:            p.NodePort,
		TargetPort:          p.TargetPort,
		RestrictSources:     len(svc.LoadBalancerSourceRanges) > 0,
		SourceRanges:        FilterPrefixes(svc.LoadBalancerSourceRanges, fam),
		InternalPolicy:      svc.InternalPolicy(),
		ExternalPolicy:      TrafficPolicyCluster,
		HealthCheckNodePort: svc.HealthCheckNodePort,
	}
	if svc.SessionAffinity.Enabled() {
		rp.Affinity = SessionAffinity{Type: AffinityClientIP, TimeoutSeconds: svc.SessionAffinity.Timeout()}
	} else {
		rp.Affinity = SessionAffinity{Type: AffinityNone}
	}
	rp.Frontends = append(rp.Frontends, Frontend{Kind: FrontendClusterIP, Addr: clusterIP, Port: p.Port})
	if p.NodePort != 0 {
		rp.Frontends = append(rp.Frontends, Frontend{Kind: FrontendNodePort, Port: p.NodePort})
	}
	// Addresses of this family only, each once (Kubernetes accepts a
	// repeated one; the first listing wins).
	for _, ip := range svc.ExternalIPs {
		if fam.Matches(ip) && !hasFrontend(rp.Frontends, FrontendExternalIP, ip) {
			rp.Frontends = append(rp.Frontends, Frontend{Kind: FrontendExternalIP, Addr: ip, Port: p.Port})
		}
	}
	for _, ing := range svc.LoadBalancerIngress {
		if fam.Matches(ing.IP) && !hasFrontend(rp.Frontends, FrontendLoadBalancer, ing.IP) {
			rp.Frontends = append(rp.Frontends, Frontend{Kind: FrontendLoadBalancer, Addr: ing.IP, Port: p.Port, IPMode: ing.EffectiveIPMode()})
		}
	}
	// Externally accessible in this family: some frontend of this family
	// takes external traffic and is intercepted (a node port, an external
	// IP, a VIP-mode load-balancer IP). Service.PortExternallyAccessible
	// states the same rule from the Service.
	rp.ExternallyAccessible = slices.ContainsFunc(rp.Frontends, func(f Frontend) bool { return f.External() && f.Intercept() })
	if rp.ExternallyAccessible && svc.ExternalTrafficPolicy == TrafficPolicyLocal {
		rp.ExternalPolicy = TrafficPolicyLocal
	}
	rp.Endpoints = r.selectEndpoints(svc, &rp, p, fam, endpoints)
	return rp
}

// hasFrontend reports whether fs has a frontend of kind k on addr.
func hasFrontend(fs []Frontend, k FrontendKind, addr netip.Addr) bool {
	return slices.ContainsFunc(fs, func(f Frontend) bool { return f.Kind == k && f.Addr == addr })
}

// selectEndpoints implements Kubernetes' endpoint categorisation (the rules
// of kube-proxy's CategorizeEndpoints) for one port and family.
func (r *Resolver) selectEndpoints(svc *Service, rp *ResolvedPort, p ServicePort, fam IPFamily, endpoints []Endpoint) EndpointSelection {
	proto := p.EffectiveProtocol()
	all := make([]Target, 0, len(endpoints))
	for i := range endpoints {
		ep := &endpoints[i]
		if !fam.Matches(ep.Addr) {
			continue
		}
		port, ok := targetPortFor(ep, p, proto)
		if !ok {
			continue
		}
		all = append(all, Target{
			AddrPort:    netip.AddrPortFrom(ep.Addr, port),
			Weight:      ep.EffectiveWeight(),
			NodeName:    ep.NodeName,
			Zone:        ep.Zone,
			Local:       r.Node.Name != "" && ep.NodeName == r.Node.Name,
			Ready:       ep.Ready || svc.PublishNotReadyAddresses,
			Serving:     ep.IsServing() || svc.PublishNotReadyAddresses,
			Terminating: ep.Terminating,
		})
	}
	// Sorted by address and port, list order kept among equals, so that
	// duplicates sit together and the first one is first.
	slices.SortStableFunc(all, func(a, b Target) int { return a.AddrPort.Compare(b.AddrPort) })
	// Clipped: the lists below may be all itself, and spare capacity shared
	// by two of them would let an append to one overwrite the other.
	all = slices.Clip(mergeDuplicates(all))

	ready := func(t Target) bool { return t.Ready }
	servingTerminating := func(t Target) bool { return t.Serving && t.Terminating }
	var sel EndpointSelection
	sel.HasEndpoints = slices.ContainsFunc(all, func(t Target) bool { return ready(t) || servingTerminating(t) })

	usesLocal := rp.InternalPolicy == TrafficPolicyLocal || rp.ExternalPolicy == TrafficPolicyLocal
	usesCluster := rp.InternalPolicy == TrafficPolicyCluster || rp.ExternallyAccessible
	if usesCluster {
		sel.Cluster = filterTargets(all, ready)
		// As kube-proxy's canUseTopology: no preference without a node zone,
		// or when a ready endpoint has no zone (the EndpointSlice controller
		// gives it no hint, and one endpoint without a hint turns topology
		// off for the whole port).
		if svc.TrafficDistribution != "" && r.Node.Zone != "" &&
			!slices.ContainsFunc(sel.Cluster, func(t Target) bool { return t.Zone == "" }) {
			if inZone := filterTargets(sel.Cluster, func(t Target) bool { return t.Zone == r.Node.Zone }); len(inZone) > 0 && len(inZone) < len(sel.Cluster) {
				sel.Cluster, sel.ZoneFiltered = inZone, true
			}
		}
		if len(sel.Cluster) == 0 {
			sel.Cluster = filterTargets(all, servingTerminating)
			sel.ClusterFallback = len(sel.Cluster) > 0
		}
	}
	if usesLocal {
		local := filterTargets(all, func(t Target) bool { return t.Local })
		sel.Local = filterTargets(local, ready)
		if len(sel.Local) == 0 {
			sel.Local = filterTargets(local, servingTerminating)
			sel.LocalFallback = len(sel.Local) > 0
		}
	}

	sel.Internal = sel.Cluster
	if rp.InternalPolicy == TrafficPolicyLocal {
		sel.Internal = sel.Local
	}
	if rp.ExternallyAccessible {
		sel.External = sel.Cluster
		if rp.ExternalPolicy == TrafficPolicyLocal {
			sel.External = sel.Local
		}
	}
	sel.Reachable = unionTargets(sel.Cluster, sel.Local)
	sel.Serving = filterTargets(all, func(t Target) bool { return t.Serving })

	sel.InternalVerdict = verdict(sel.HasEndpoints, rp.InternalPolicy, sel.Local)
	if rp.ExternallyAccessible {
		sel.ExternalVerdict = verdict(sel.HasEndpoints, rp.ExternalPolicy, sel.Local)
	}
	return sel
}

// mergeDuplicates keeps one target per address and port of a sorted list,
// in place: the first that is not terminating, else the first. Among
// several that are not terminating (or several that are), a ready one wins
// over one that is not. kube-proxy, too, prefers a duplicate that is not
// terminating: when a pod IP is reused before the old pod is gone, the new
// pod owns the address.
func mergeDuplicates(ts []Target) []Target {
	out := ts[:0]
	for i := 0; i < len(ts); {
		best, j := i, i+1
		for ; j < len(ts) && ts[j].AddrPort == ts[i].AddrPort; j++ {
			if b, c := &ts[best], &ts[j]; b.Terminating && !c.Terminating || b.Terminating == c.Terminating && !b.Ready && c.Ready {
				best = j
			}
		}
		out = append(out, ts[best]) // best ≥ i ≥ len(out): not yet overwritten
		i = j
	}
	return out
}

// verdict is Reject without endpoints anywhere, Drop for a Local policy
// without local endpoints, Forward otherwise.
func verdict(hasEndpoints bool, policy TrafficPolicy, local []Target) Verdict {
	switch {
	case !hasEndpoints:
		return VerdictReject
	case policy == TrafficPolicyLocal && len(local) == 0:
		return VerdictDrop
	}
	return VerdictForward
}

// targetPortFor resolves port p's target port on endpoint ep: the port ep
// declares under p's own name (the EndpointSlice convention), else the port
// it declares under p's named target port (the container-port convention),
// else the numeric target port or the service port. See Endpoint.Ports.
func targetPortFor(ep *Endpoint, p ServicePort, proto Protocol) (uint16, bool) {
	if port, ok := ep.Port(p.Name, proto); ok {
		return port, true
	}
	switch {
	case p.TargetPort.Name != "":
		return ep.Port(p.TargetPort.Name, proto)
	case p.TargetPort.Number != 0:
		return p.TargetPort.Number, true
	}
	return p.Port, true
}

// filterTargets returns the targets of ts that keep accepts, in a slice of
// exactly that length (nil when none): it counts first, because growing the
// result by appending dominated Resolve's allocations at 10k services.
// When keep accepts every target, ts itself is returned: the lists of an
// EndpointSelection are read-only and may share their arrays.
func filterTargets(ts []Target, keep func(Target) bool) []Target {
	n := 0
	for i := range ts {
		if keep(ts[i]) {
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(ts):
		return ts
	}
	out := make([]Target, 0, n)
	for _, t := range ts {
		if keep(t) {
			out = append(out, t)
		}
	}
	return out
}

// unionTargets merges two lists sorted by AddrPort, each target once.
func unionTargets(a, b []Target) []Target {
	switch {
	case len(a)+len(b) == 0:
		return nil
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]Target, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch c := a[0].AddrPort.Compare(b[0].AddrPort); {
		case c < 0:
			out, a = append(out, a[0]), a[1:]
		case c > 0:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	out = append(out, a...)
	return slices.Clip(append(out, b...)) // merged duplicates left spare capacity
}
