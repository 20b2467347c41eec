package nat

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/lbkit/lbkit/lb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FlowFilter selects conntrack entries of one protocol, by the original
// destination (a service frontend: what the client addressed) or by the
// reply source (an endpoint: where the flow was translated to). A zero
// address with a port matches any address on that port (a node port).
type FlowFilter struct {
	Protocol lb.Protocol
	OrigDst  netip.AddrPort
	ReplySrc netip.AddrPort
}

func (f FlowFilter) String() string {
	if f.ReplySrc.IsValid() {
		return fmt.Sprintf("%s reply-src %s", f.Protocol.Lower(), f.ReplySrc)
	}
	return fmt.Sprintf("%s orig-dst %s", f.Protocol.Lower(), f.OrigDst)
}

// Conntrack deletes connection-tracking entries. The syncers use it after a
// sync for protocols without connections to end (UDP and SCTP), as
// kube-proxy does: a datagram flow keeps its translation for as long as it
// sees traffic, so without deletion a client that keeps one socket would go
// on talking to a removed endpoint, or keep hitting the REJECT a service
// had while it had no endpoints.
type Conntrack interface {
	// Delete removes the entries of family that match any filter and
	// returns how many it removed.
	Delete(ctx context.Context, family lb.IPFamily, filters []FlowFilter) (int, error)
}

// NetlinkConntrack is the Conntrack of the kernel, through netlink. The
// zero value works in the network namespace of the calling thread (like the
// iptables Client); Handle, when set, is used instead.
type NetlinkConntrack struct {
	Handle *netlink.Handle
}

// Delete implements Conntrack. The kernel lists the whole table once per
// call; the filters are applied while it is read.
func (c NetlinkConntrack) Delete(ctx context.Context, family lb.IPFamily, filters []FlowFilter) (int, error) {
	if len(filters) == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	fam := netlink.InetFamily(unix.AF_INET)
	if family == lb.IPv6 {
		fam = unix.AF_INET6
	}
	m := flowMatcher(filters)
	var n uint
	var err error
	if c.Handle != nil {
		n, err = c.Handle.ConntrackDeleteFilters(netlink.ConntrackTable, fam, m)
	} else {
		n, err = netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, m)
	}
	if err != nil {
		return int(n), fmt.Errorf("nat: conntrack delete: %w", err)
	}
	return int(n), nil
}

// flowMatcher matches a flow against a set of filters.
type flowMatcher []FlowFilter

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m flowMatcher) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	for _, f := range m {
		if flow.Forward.Protocol != f.Protocol.Number() {
			continue
		}
		if f.ReplySrc.IsValid() {
			a, ok := netip.AddrFromSlice(flow.Reverse.SrcIP)
			if ok && a.Unmap() == f.ReplySrc.Addr() && flow.Reverse.SrcPort == f.ReplySrc.Port() {
				return true
			}
			continue
		}
		if flow.Forward.DstPort != f.OrigDst.Port() {
			continue
		}
		if !f.OrigDst.Addr().IsValid() {
			return true
		}
		if a, ok := netip.AddrFromSlice(flow.Forward.DstIP); ok && a.Unmap() == f.OrigDst.Addr() {
			return true
		}
	}
	return false
}

// portFlows is what a sync remembers of a port to find the conntrack
// entries that a change made stale.
type portFlows struct {
	proto     lb.Protocol
	reachable bool             // has endpoints anywhere (not rejected)
	targets   []netip.AddrPort // endpoints some rule sends traffic to
	frontends []lb.Frontend    // intercepted frontends
}

// needsConntrack reports whether the protocol keeps flows alive without
// connections to end: UDP and SCTP (SCTP associations re-use their
// translation just the same).
func needsConntrack(p lb.Protocol) bool { return p == lb.UDP || p == lb.SCTP }

func flowsOf(p *Port) *portFlows {
	if !needsConntrack(p.Name.Protocol) {
		return nil
	}
	pf := &portFlows{proto: p.Name.Protocol, reachable: p.Endpoints.HasEndpoints}
	for _, t := range p.Endpoints.Reachable {
		pf.targets = append(pf.targets, t.AddrPort)
	}
	for _, f := range p.Frontends {
		if f.Intercept() {
			pf.frontends = append(pf.frontends, f)
		}
	}
	return pf
}

// staleFlows returns the filters of the conntrack entries a change from
// old to next made stale: flows translated to an endpoint that is gone,
// and flows to the frontends of a port that had no endpoints and now has
// (their entries still carry the REJECT's untranslated tuple).
func staleFlows(old, next *portFlows) []FlowFilter {
	if next == nil && old == nil {
		return nil
	}
	var out []FlowFilter
	if old != nil {
		for _, t := range old.targets {
			if next == nil || !slices.Contains(next.targets, t) {
				out = append(out, FlowFilter{Protocol: old.proto, ReplySrc: t})
			}
		}
	}
	if next != nil && next.reachable && (old == nil || !old.reachable) {
		for _, f := range next.frontends {
			out = append(out, FlowFilter{Protocol: next.proto, OrigDst: netip.AddrPortFrom(f.Addr, f.Port)})
		}
	}
	return out
}
