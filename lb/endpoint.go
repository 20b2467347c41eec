package lb

import (
	"math"
	"net/netip"
)

// MaxWeight is the largest endpoint weight, the largest weight IPVS accepts.
const MaxWeight = math.MaxInt32

// EndpointPort is a port an endpoint declares under a name: an EndpointSlice
// port (named after the service port) or a named container port. See
// Endpoint.Ports for how a service port finds its port.
type EndpointPort struct {
	// Name is empty or a DNS-1123 label (EndpointSlice port names are
	// service port names, which are DNS labels; container port names, IANA
	// service names, are a subset). Empty matches the unnamed port of a
	// single-port service.
	Name string
	// Protocol defaults to TCP when empty.
	Protocol Protocol
	Port     uint16
}

// EffectiveProtocol returns Protocol, or TCP when it is empty.
func (p EndpointPort) EffectiveProtocol() Protocol { return p.Protocol.OrTCP() }

// Endpoint is one backend address of a service, shaped after an
// EndpointSlice endpoint (plus the named container ports of its pod).
//
// Several endpoints may share an address, as in Kubernetes: hostNetwork
// pods share their node's address and differ by port, and an endpoint
// moving between EndpointSlices is briefly listed by both. Resolve merges
// endpoints that resolve to the same address and port.
//
// The conditions follow Kubernetes: Ready means serving and not terminating;
// Serving means the backend answers (even while terminating); Terminating
// means it is shutting down. A ready endpoint is always treated as serving.
// Ready and Terminating may both be set: the EndpointSlice controller
// computes ready as publishNotReadyAddresses || (serving && !terminating),
// so a terminating pod of a service that publishes not-ready addresses is
// both. Such an endpoint is ready: it receives traffic like any other ready
// endpoint, and Target.Terminating reports that it is shutting down.
type Endpoint struct {
	Addr netip.Addr
	// Ports are the endpoint's named ports. Two conventions are supported,
	// and Resolve tries them in this order for each service port (matching
	// the name and the protocol):
	//
	//  1. EndpointSlice: a port named after the service port (empty for
	//     the unnamed port of a single-port service) whose number is the
	//     resolved target port. This is how kube-proxy reads EndpointSlices:
	//     copy each slice port here as it is. It wins even when the service
	//     port has a numeric target port.
	//  2. Container ports: when the service port has a named target port,
	//     the port of that name (a pod's named container port). An endpoint
	//     without it is not a backend of that service port.
	//
	// Otherwise the endpoint uses the numeric target port, or the service
	// port when none is set. Do not mix the conventions in one list unless
	// the names cannot clash: with container ports, a container port that
	// happens to carry the service port's name is taken by rule 1.
	Ports []EndpointPort

	Ready       bool
	Serving     bool
	Terminating bool

	// NodeName is the node the endpoint runs on; Local traffic policies
	// compare it with the resolving node's name.
	NodeName string
	// Zone is the endpoint's topology zone.
	Zone string
	// Weight is the endpoint's relative share of new connections,
	// 1..MaxWeight; 0 means the default weight 1 (Kubernetes endpoints carry
	// no weight).
	Weight uint32
}

// IsServing reports whether e answers requests: Serving, or Ready.
func (e *Endpoint) IsServing() bool { return e.Serving || e.Ready }

// EffectiveWeight returns Weight, or 1 when it is 0.
func (e *Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// Port returns the port number e declares under name for protocol proto.
func (e *Endpoint) Port(name string, proto Protocol) (uint16, bool) {
	for _, p := range e.Ports {
		if p.Name == name && p.EffectiveProtocol() == proto {
			return p.Port, true
		}
	}
	return 0, false
}
