package lb

import (
	"net/netip"
	"strconv"
)

// ServiceType says how a Service is exposed, as Kubernetes' spec.type.
type ServiceType string

// Service types. The zero value "" means ClusterIP.
const (
	ServiceTypeClusterIP    ServiceType = "ClusterIP"
	ServiceTypeNodePort     ServiceType = "NodePort"
	ServiceTypeLoadBalancer ServiceType = "LoadBalancer"
)

// IPMode says how a load-balancer ingress IP reaches the node (Kubernetes
// 1.29 LoadBalancerIPMode).
type IPMode string

// IP modes. The zero value "" means VIP.
const (
	// IPModeVIP: traffic arrives addressed to the load-balancer IP and the
	// node intercepts it, as it does for a cluster IP.
	IPModeVIP IPMode = "VIP"
	// IPModeProxy: the load balancer proxies traffic to the node (for
	// example to a node port); the node must NOT intercept traffic sent to
	// the IP, so that such traffic really leaves through the load balancer.
	IPModeProxy IPMode = "Proxy"
)

// AffinityType selects session affinity, as Kubernetes' spec.sessionAffinity.
type AffinityType string

// Session affinity types. The zero value "" means None.
const (
	AffinityNone     AffinityType = "None"
	AffinityClientIP AffinityType = "ClientIP"
)

// Session affinity timeout bounds in seconds, as Kubernetes defines them.
const (
	DefaultAffinityTimeoutSeconds = 10800
	MaxAffinityTimeoutSeconds     = 86400
)

// TrafficDistribution expresses a topology preference for cluster traffic,
// as Kubernetes' spec.trafficDistribution.
type TrafficDistribution string

// Traffic distributions. The zero value "" means no preference.
const (
	// PreferSameZone sends cluster traffic to ready endpoints in the node's
	// zone, and to all ready endpoints when the zone has none. As in
	// kube-proxy, the preference is off for a port (in one family) when any
	// of its ready endpoints has no zone, and when the node has no zone.
	PreferSameZone TrafficDistribution = "PreferSameZone"
	// PreferClose is the older Kubernetes spelling of PreferSameZone and
	// means the same.
	PreferClose TrafficDistribution = "PreferClose"
)

// ServiceName identifies a service: namespace and name.
type ServiceName struct {
	Namespace string
	Name      string
}

// String returns "namespace/name", as Kubernetes' NamespacedName prints it.
func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// ServicePortName identifies one port of one service: the unit every engine
// programs (one KUBE-SVC chain, one IPVS virtual server per frontend).
type ServicePortName struct {
	ServiceName
	// Port is the service port's name; it may be empty for a single-port
	// service.
	Port string
	// Protocol is the port's protocol. It is not part of String, as in
	// kube-proxy, but it is part of the identity (Key).
	Protocol Protocol
}

// String returns "namespace/name:port", or "namespace/name" when the port is
// unnamed: exactly kube-proxy's ServicePortName string, used in its rule
// comments and chain-name hashes.
func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.ServiceName.String()
	}
	return n.ServiceName.String() + ":" + n.Port
}

// Key returns a stable string that also distinguishes the protocol:
// "namespace/name:port/protocol" with the protocol in lower case (for
// example "default/dns:dns/udp"). Engines can hash it into chain names, the
// way kube-proxy hashes String()+protocol.
func (n ServicePortName) Key() string { return n.String() + "/" + n.Protocol.Lower() }

// TargetPort is the port on the endpoints that a service port forwards to:
// a number, or the name of a port each endpoint declares. The zero value
// means "the same number as the service port".
type TargetPort struct {
	// Number is the target port number; 0 when Name is used or for the
	// default.
	Number uint16
	// Name is a port name (an IANA service name, at most 15 characters)
	// resolved per endpoint through Endpoint.Ports.
	Name string
}

// PortNumber returns a numeric target port.
func PortNumber(n uint16) TargetPort { return TargetPort{Number: n} }

// PortName returns a named target port.
func PortName(name string) TargetPort { return TargetPort{Name: name} }

// IsZero reports whether t is unset (target port = service port).
func (t TargetPort) IsZero() bool { return t.Number == 0 && t.Name == "" }

// String returns the number or the name, or "" when unset.
func (t TargetPort) String() string {
	if t.Name != "" {
		return t.Name
	}
	if t.Number != 0 {
		return strconv.Itoa(int(t.Number))
	}
	return ""
}

// ServicePort is one port a service exposes.
type ServicePort struct {
	// Name must be set, and unique, when the service has several ports.
	Name string
	// Protocol defaults to TCP when empty.
	Protocol Protocol
	// Port is the port on the cluster IP, external IPs and load-balancer
	// IPs.
	Port uint16
	// TargetPort is where the endpoints listen; zero means Port.
	TargetPort TargetPort
	// NodePort is the port opened on every node for NodePort and
	// LoadBalancer services; 0 means none.
	NodePort uint16
}

// EffectiveProtocol returns Protocol, or TCP when it is empty.
func (p ServicePort) EffectiveProtocol() Protocol { return p.Protocol.OrTCP() }

// LoadBalancerIngress is one address a load balancer announces for the
// service (status.loadBalancer.ingress[].ip with its ipMode).
type LoadBalancerIngress struct {
	IP netip.Addr
	// IPMode defaults to VIP when empty.
	IPMode IPMode
}

// EffectiveIPMode returns IPMode, or VIP when it is empty.
func (i LoadBalancerIngress) EffectiveIPMode() IPMode {
	if i.IPMode == "" {
		return IPModeVIP
	}
	return i.IPMode
}

// SessionAffinity keeps a client on the same endpoint.
type SessionAffinity struct {
	// Type defaults to None when empty.
	Type AffinityType
	// TimeoutSeconds applies to ClientIP affinity: 1..86400, 0 meaning the
	// default 10800 (3 hours).
	TimeoutSeconds int32
}

// Enabled reports whether Type is ClientIP.
func (a SessionAffinity) Enabled() bool { return a.Type == AffinityClientIP }

// Timeout returns the effective timeout in seconds: 0 when affinity is off,
// TimeoutSeconds or the default 10800 for ClientIP.
func (a SessionAffinity) Timeout() int32 {
	if !a.Enabled() {
		return 0
	}
	if a.TimeoutSeconds == 0 {
		return DefaultAffinityTimeoutSeconds
	}
	return a.TimeoutSeconds
}

// Service is a load-balanced service, shaped after a Kubernetes Service
// (spec plus the load-balancer status) without depending on Kubernetes.
// Zero values mean the Kubernetes defaults: type ClusterIP, protocol TCP,
// traffic policies Cluster, affinity None, ipMode VIP.
type Service struct {
	Namespace string
	Name      string
	Type      ServiceType

	// ClusterIPs holds at most one address per family; an empty list makes
	// the service headless (no virtual IP, nothing to program). The
	// service's families are the families of its cluster IPs.
	ClusterIPs []netip.Addr
	// ExternalIPs are extra addresses the node intercepts for the service.
	// An address of a family the service has no cluster IP for is accepted,
	// as Kubernetes accepts it, and ignored: kube-proxy and Resolve program
	// each family's addresses only for that family's cluster IP.
	ExternalIPs []netip.Addr
	// LoadBalancerIngress is the load balancer's status; only for type
	// LoadBalancer. A VIP-mode IP of a family the service has no cluster IP
	// for is ignored, as kube-proxy ignores it; a Proxy-mode IP is never
	// intercepted, so its family does not matter (the load balancer may
	// translate).
	LoadBalancerIngress []LoadBalancerIngress
	// LoadBalancerSourceRanges restricts which clients may reach the
	// load-balancer IPs; only for type LoadBalancer. Both families may be
	// mixed; each engine uses the ranges of its family.
	LoadBalancerSourceRanges []netip.Prefix

	Ports []ServicePort

	SessionAffinity SessionAffinity
	// ExternalTrafficPolicy applies to node-port, external-IP and
	// load-balancer traffic; Local is only allowed on externally accessible
	// services (see ExternallyAccessible: decided by type, as Kubernetes
	// does).
	ExternalTrafficPolicy TrafficPolicy
	// InternalTrafficPolicy applies to cluster-IP traffic.
	InternalTrafficPolicy TrafficPolicy
	// PublishNotReadyAddresses treats every endpoint as ready.
	PublishNotReadyAddresses bool
	// TrafficDistribution is a topology preference for cluster traffic.
	TrafficDistribution TrafficDistribution
	// HealthCheckNodePort is the node port on which a LoadBalancer service
	// with externalTrafficPolicy Local reports whether the node has local
	// endpoints; 0 means none.
	HealthCheckNodePort uint16
}

// ServiceName returns the service's namespace and name.
func (s *Service) ServiceName() ServiceName {
	return ServiceName{Namespace: s.Namespace, Name: s.Name}
}

// PortName returns the identity of port p of s.
func (s *Service) PortName(p ServicePort) ServicePortName {
	return ServicePortName{ServiceName: s.ServiceName(), Port: p.Name, Protocol: p.EffectiveProtocol()}
}

// EffectiveType returns Type, or ClusterIP when it is empty.
func (s *Service) EffectiveType() ServiceType {
	if s.Type == "" {
		return ServiceTypeClusterIP
	}
	return s.Type
}

// Headless reports whether the service has no cluster IP.
func (s *Service) Headless() bool { return len(s.ClusterIPs) == 0 }

// Families returns the families of the service's cluster IPs, in order.
func (s *Service) Families() []IPFamily {
	out := make([]IPFamily, 0, len(s.ClusterIPs))
	for _, ip := range s.ClusterIPs {
		out = append(out, FamilyOf(ip))
	}
	return out
}

// ClusterIP returns the service's cluster IP of family f, if it has one.
func (s *Service) ClusterIP(f IPFamily) (netip.Addr, bool) {
	for _, ip := range s.ClusterIPs {
		if f.Matches(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// ExternalPolicy returns the effective external traffic policy of port p in
// family f: Local only when ExternalTrafficPolicy is Local and p is
// externally accessible in f (PortExternallyAccessible), Cluster otherwise.
func (s *Service) ExternalPolicy(p ServicePort, f IPFamily) TrafficPolicy {
	if s.ExternalTrafficPolicy == TrafficPolicyLocal && s.PortExternallyAccessible(p, f) {
		return TrafficPolicyLocal
	}
	return TrafficPolicyCluster
}

// InternalPolicy returns the effective internal traffic policy.
func (s *Service) InternalPolicy() TrafficPolicy {
	if s.InternalTrafficPolicy == TrafficPolicyLocal {
		return TrafficPolicyLocal
	}
	return TrafficPolicyCluster
}

// ExternallyAccessible reports whether the service is exposed outside the
// cluster by Kubernetes' definition, which looks at its type only: NodePort,
// LoadBalancer, or ClusterIP with external IPs. Only such a service may set
// ExternalTrafficPolicy Local. It does not depend on the load-balancer
// status: a LoadBalancer service whose IP is not assigned yet, or that has
// no node ports (allocateLoadBalancerNodePorts=false), is externally
// accessible. Whether a port receives external traffic right now is
// PortExternallyAccessible.
func (s *Service) ExternallyAccessible() bool {
	switch s.EffectiveType() {
	case ServiceTypeNodePort, ServiceTypeLoadBalancer:
		return true
	}
	return len(s.ExternalIPs) > 0
}

// PortExternallyAccessible reports whether port p of s receives traffic from
// outside the cluster in family f right now, by kube-proxy's per-family
// definition: the service has a cluster IP of family f, and p has a node
// port, or the service has an external IP or a VIP-mode load-balancer
// ingress IP of family f. Addresses of the other family do not count
// (kube-proxy filters them by family first), and Proxy-mode ingress IPs
// never count: the node does not intercept them. This is
// ResolvedPort.ExternallyAccessible.
func (s *Service) PortExternallyAccessible(p ServicePort, f IPFamily) bool {
	if _, ok := s.ClusterIP(f); !ok {
		return false
	}
	if p.NodePort != 0 {
		return true
	}
	for _, ip := range s.ExternalIPs {
		if f.Matches(ip) {
			return true
		}
	}
	for _, ing := range s.LoadBalancerIngress {
		if ing.EffectiveIPMode() == IPModeVIP && f.Matches(ing.IP) {
			return true
		}
	}
	return false
}
