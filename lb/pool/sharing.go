package pool

import "github.com/lbkit/lbkit/lb"

// CanShare reports whether a service described by requester may use an
// address that holder already uses. It returns nil when it may, else a
// *SharingError naming the first rule that forbids it, checked in this
// order (the MetalLB rules for metallb.io/allow-shared-ip):
//
//  1. RuleHolderNotShared: holder has no SharingKey.
//  2. RuleRequesterNotShared: requester has no SharingKey.
//  3. RuleKeyMismatch: the keys differ.
//  4. RuleTrafficPolicy: one is Cluster and the other Local.
//  5. RuleEndpointsSelector: both are Local and their EndpointsSelector
//     identities differ, or either is empty.
//  6. RulePortCollision: they have a Port with the same protocol and number.
//
// An empty TrafficPolicy counts as Cluster and an empty Port.Protocol as
// TCP. The returned error's IP is zero; the allocator fills it in.
func CanShare(holder, requester Request) error {
	if e := shareRule(&holder, &requester); e != nil {
		return e
	}
	return nil
}

func policyOf(r *Request) lb.TrafficPolicy {
	if r.TrafficPolicy == "" {
		return lb.TrafficPolicyCluster
	}
	return r.TrafficPolicy
}

// shareRule implements CanShare; it returns a typed nil-able pointer so the
// allocator can fill in the address.
func shareRule(have, want *Request) *SharingError {
	e := &SharingError{Holder: have.Service}
	hp, wp := policyOf(have), policyOf(want)
	switch {
	case have.SharingKey == "":
		e.Rule = RuleHolderNotShared
	case want.SharingKey == "":
		e.Rule = RuleRequesterNotShared
	case have.SharingKey != want.SharingKey:
		e.Rule, e.Have, e.Want = RuleKeyMismatch, have.SharingKey, want.SharingKey
	case hp != wp:
		e.Rule, e.Have, e.Want = RuleTrafficPolicy, string(hp), string(wp)
	case hp == lb.TrafficPolicyLocal &&
		(have.EndpointsSelector == "" || want.EndpointsSelector == "" ||
			have.EndpointsSelector != want.EndpointsSelector):
		e.Rule, e.Have, e.Want = RuleEndpointsSelector, have.EndpointsSelector, want.EndpointsSelector
	default:
		p, ok := commonPort(have.Ports, want.Ports)
		if !ok {
			return nil
		}
		e.Rule, e.Port = RulePortCollision, p
	}
	return e
}

// commonPort returns the lowest port (by protocol, then number) present in
// both lists, an empty protocol counting as TCP. The lists need not be
// sorted; they are short.
func commonPort(a, b []Port) (Port, bool) {
	var best Port
	found := false
	for _, x := range a {
		x.Protocol = x.Protocol.OrTCP()
		for _, y := range b {
			y.Protocol = y.Protocol.OrTCP()
			if x == y && (!found || comparePorts(x, best) < 0) {
				best, found = x, true
			}
		}
	}
	return best, found
}
