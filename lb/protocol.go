package lb

import "fmt"

// Protocol is an L4 protocol a service port speaks.
type Protocol string

// The protocols a Service port may use, spelled as Kubernetes spells them.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Valid reports whether p is one of TCP, UDP or SCTP.
func (p Protocol) Valid() bool {
	switch p {
	case TCP, UDP, SCTP:
		return true
	}
	return false
}

// OrTCP returns p, or TCP when p is empty: Kubernetes' default protocol.
func (p Protocol) OrTCP() Protocol {
	if p == "" {
		return TCP
	}
	return p
}

// Number returns the IANA protocol number of p (6, 17 or 132), or 0 when p
// is not valid.
func (p Protocol) Number() uint8 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	case SCTP:
		return 132
	}
	return 0
}

// Lower returns the protocol name in lower case ("tcp"), as iptables and nft
// spell it.
func (p Protocol) Lower() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%q)", string(p))
}

// TrafficPolicy says which endpoints may receive a kind of traffic: all of
// them (Cluster) or only those on the receiving node (Local).
type TrafficPolicy string

// Traffic policies, as in Kubernetes' externalTrafficPolicy and
// internalTrafficPolicy.
const (
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	TrafficPolicyLocal   TrafficPolicy = "Local"
)
