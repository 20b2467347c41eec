package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/lbkit/lbkit/lb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FlowFilter selects conntrack entries. An entry matches when it meets
// every condition the filter sets; a field left at its zero value means
// "any", so the zero FlowFilter matches every entry.
//
// OrigDst is the original destination (a service frontend: what the client
// addressed) and ReplySrc the reply's source (an endpoint: where the flow
// was translated to). In both, a zero address matches any address and a
// zero port any port: a zero address with a port is a node port, which
// matches any local address on that port.
type FlowFilter struct {
	Protocol lb.Protocol
	OrigDst  netip.AddrPort
	ReplySrc netip.AddrPort
	// Untranslated selects only entries that no DNAT changed: the reply
	// comes from the original destination, address and port. A flow that
	// met a REJECT, or was routed on, while its service had no endpoints
	// (or did not exist) has such an entry; a flow translated to an
	// endpoint does not.
	Untranslated bool
}

// String returns the filter as conntrack(8)'s options would name it, with
// "*" for an address or port that matches any, e.g.
// "udp orig-dst *:30053 reply-src 192.0.2.10:53".
func (f FlowFilter) String() string {
	proto := "any"
	if f.Protocol != "" {
		proto = f.Protocol.Lower()
	}
	parts := []string{proto}
	if f.OrigDst != (netip.AddrPort{}) {
		parts = append(parts, "orig-dst "+anyAddrPort(f.OrigDst))
	}
	if f.ReplySrc != (netip.AddrPort{}) {
		parts = append(parts, "reply-src "+anyAddrPort(f.ReplySrc))
	}
	if f.Untranslated {
		parts = append(parts, "untranslated")
	}
	return strings.Join(parts, " ")
}

// anyAddrPort formats ap with "*" for a zero address or port.
func anyAddrPort(ap netip.AddrPort) string {
	addr, port := "*", "*"
	if a := ap.Addr(); a.IsValid() {
		addr = a.String()
		if a.Is6() && !a.Is4In6() {
			addr = "[" + addr + "]"
		}
	}
	if ap.Port() != 0 {
		port = strconv.Itoa(int(ap.Port()))
	}
	return addr + ":" + port
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

// flowMatcher matches a flow against a set of filters: a flow matches
// when any filter matches it.
type flowMatcher []FlowFilter

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m flowMatcher) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	for _, f := range m {
		if f.matches(flow) {
			return true
		}
	}
	return false
}

func (f FlowFilter) matches(flow *netlink.ConntrackFlow) bool {
	if f.Protocol != "" && flow.Forward.Protocol != f.Protocol.Number() {
		return false
	}
	if !matchAddrPort(f.OrigDst, flow.Forward.DstIP, flow.Forward.DstPort) ||
		!matchAddrPort(f.ReplySrc, flow.Reverse.SrcIP, flow.Reverse.SrcPort) {
		return false
	}
	if f.Untranslated {
		return flow.Reverse.SrcPort == flow.Forward.DstPort && flow.Reverse.SrcIP.Equal(flow.Forward.DstIP)
	}
	return true
}

// matchAddrPort reports whether ip and port are want, where a zero address
// or port in want matches any.
func matchAddrPort(want netip.AddrPort, ip net.IP, port uint16) bool {
	if want.Port() != 0 && want.Port() != port {
		return false
	}
	if !want.Addr().IsValid() {
		return true
	}
	a, ok := netip.AddrFromSlice(ip)
	return ok && a.Unmap() == want.Addr().Unmap()
}

// portFlows is what a sync remembers of a port to find the conntrack
// entries that a change made stale.
type portFlows struct {
	proto     lb.Protocol
	reachable bool             // has endpoints anywhere (not rejected)
	targets   []netip.AddrPort // endpoints some rule sends traffic to
	frontends []netip.AddrPort // intercepted frontends, node ports with a zero address
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
		if ap := netip.AddrPortFrom(f.Addr, f.Port); f.Intercept() && !slices.Contains(pf.frontends, ap) {
			pf.frontends = append(pf.frontends, ap)
		}
	}
	return pf
}

// staleFlows returns the filters of the conntrack entries a change from
// old to next made stale (old is nil for a port the syncer did not program
// before: a new one, or every port after a restart or a Cleanup):
//
//   - Flows translated to an endpoint that is gone. Each is paired with
//     every frontend the port had (old's: a flow to a frontend removed in
//     the same change was translated by the old rules), so that flows of
//     other services that still use the same endpoint address and port
//     stay untouched.
//   - Untranslated flows to the frontends of a port that now has endpoints
//     and did not before, or was not programmed, and to a frontend new on
//     a port that has endpoints: their entries still carry the REJECT's,
//     or the routed packet's, untranslated tuple and would never reach an
//     endpoint. Translated flows are left alone, so that a restarted
//     syncer does not move the live flows it finds.
func staleFlows(old, next *portFlows) []FlowFilter {
	var out []FlowFilter
	if old != nil {
		for _, t := range old.targets {
			if next != nil && slices.Contains(next.targets, t) {
				continue
			}
			for _, f := range old.frontends {
				out = append(out, FlowFilter{Protocol: old.proto, OrigDst: f, ReplySrc: t})
			}
		}
	}
	if next != nil && next.reachable {
		for _, f := range next.frontends {
			// A frontend that is new on a port that had endpoints
			// was not intercepted before either.
			if old == nil || !old.reachable || !slices.Contains(old.frontends, f) {
				out = append(out, FlowFilter{Protocol: next.proto, OrigDst: f, Untranslated: true})
			}
		}
	}
	return out
}
