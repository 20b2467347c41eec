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
// matches any local address on that port. (The filter cannot tell local
// addresses from others: a node-port filter also matches flows the node
// sends to that port of another host.)
//
// FlowFilter is comparable. Its two sets compare by identity (see
// AddrPortSet), so == between filters that hold sets is exact only for
// copies of one filter.
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
	// Translated selects only entries that a DNAT changed: the reply
	// comes from somewhere other than the original destination. With
	// Untranslated also set the filter matches nothing.
	Translated bool
	// ReplySrcNotIn excludes the entries whose reply source is in the
	// set. With Translated and a frontend as OrigDst it selects the flows
	// to the frontend translated to anything but the port's current
	// endpoints, without one filter per stale endpoint (which the syncer
	// could not name after a restart). The empty set excludes nothing.
	ReplySrcNotIn AddrPortSet
	// OrigDstNotIn excludes the entries whose original destination is in
	// the set. A node-port filter uses it to leave alone flows to the
	// cluster, external and load-balancer IPs of other service ports on
	// the same port number, whose rules win over the node port's. The
	// empty set excludes nothing.
	OrigDstNotIn AddrPortSet
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
	if f.ReplySrcNotIn.Len() > 0 {
		parts = append(parts, "reply-src-not-in "+f.ReplySrcNotIn.String())
	}
	if f.OrigDstNotIn.Len() > 0 {
		parts = append(parts, "orig-dst-not-in "+f.OrigDstNotIn.String())
	}
	if f.Untranslated {
		parts = append(parts, "untranslated")
	}
	if f.Translated {
		parts = append(parts, "translated")
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
// call; the filters are applied while it is read, indexed by the
// protocols, addresses and ports they set, so that each entry is checked
// only against the filters that can match it (a few hash lookups per
// entry, however many filters).
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
	m := newFlowMatcher(filters)
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

// AddrPortSet is an immutable set of addresses with ports, for the NotIn
// conditions of FlowFilter. As in FlowFilter, an element's zero address
// matches any address and its zero port any port; IPv4-mapped IPv6
// addresses match their IPv4 form. The zero AddrPortSet is empty.
//
// A set is a reference: its copies are the same set, and == reports
// whether two sets are the same one (from one NewAddrPortSet call), not
// whether they hold the same elements; Equal does that.
type AddrPortSet struct{ s *addrPortSet }

type addrPortSet struct {
	elems []netip.AddrPort // sorted, each once, as given
	exact map[netip.AddrPort]struct{}
	wild  []netip.AddrPort // with a zero address or port
}

// NewAddrPortSet returns the set of elems.
func NewAddrPortSet(elems ...netip.AddrPort) AddrPortSet {
	if len(elems) == 0 {
		return AddrPortSet{}
	}
	s := &addrPortSet{elems: slices.Clone(elems), exact: make(map[netip.AddrPort]struct{}, len(elems))}
	slices.SortFunc(s.elems, netip.AddrPort.Compare)
	s.elems = slices.Compact(s.elems)
	for _, e := range s.elems {
		if e.Addr().IsValid() && e.Port() != 0 {
			s.exact[netip.AddrPortFrom(e.Addr().Unmap(), e.Port())] = struct{}{}
		} else {
			s.wild = append(s.wild, e)
		}
	}
	return AddrPortSet{s}
}

// Len returns the number of elements.
func (s AddrPortSet) Len() int {
	if s.s == nil {
		return 0
	}
	return len(s.s.elems)
}

// Elements returns the elements, sorted.
func (s AddrPortSet) Elements() []netip.AddrPort {
	if s.s == nil {
		return nil
	}
	return slices.Clone(s.s.elems)
}

// Equal reports whether s and o hold the same elements.
func (s AddrPortSet) Equal(o AddrPortSet) bool {
	if s.s == o.s {
		return true
	}
	return s.Len() == o.Len() && (s.Len() == 0 || slices.Equal(s.s.elems, o.s.elems))
}

// Match reports whether an element matches ap.
func (s AddrPortSet) Match(ap netip.AddrPort) bool {
	if s.s == nil {
		return false
	}
	if _, ok := s.s.exact[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; ok {
		return true
	}
	for _, w := range s.s.wild {
		if matchAddrPort(w, ap) {
			return true
		}
	}
	return false
}

// String returns the elements in braces, with "*" for a zero address or
// port, e.g. "{192.0.2.10:53 *:30053}".
func (s AddrPortSet) String() string {
	parts := make([]string, 0, s.Len())
	if s.s != nil {
		for _, e := range s.s.elems {
			parts = append(parts, anyAddrPort(e))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// matchAddrPort reports whether got is want, where a zero address or port
// in want matches any.
func matchAddrPort(want, got netip.AddrPort) bool {
	if want.Port() != 0 && want.Port() != got.Port() {
		return false
	}
	if !want.Addr().IsValid() {
		return true
	}
	return got.Addr().IsValid() && got.Addr().Unmap() == want.Addr().Unmap()
}

// flowKey is what the filter index looks a conntrack entry up by, packed
// into bytes so that it hashes fast: the protocol, which addresses are
// set, then the original destination and the reply source, each as its
// 16-byte form (IPv4 and IPv4-mapped IPv6 alike) and port.
type flowKey [38]byte

const (
	keyValidDst  = 1 << 0 // in byte 1
	keyValidRsrc = 1 << 1
)

// keyFields is the set of flowKey fields a filter sets (the others match
// any).
type keyFields uint8

const (
	keyProto keyFields = 1 << iota
	keyDstAddr
	keyDstPort
	keyRsrcAddr
	keyRsrcPort
)

// masked returns k with the fields not in m zeroed.
func (k flowKey) masked(m keyFields) flowKey {
	if m&keyProto == 0 {
		k[0] = 0
	}
	if m&keyDstAddr == 0 {
		k[1] &^= keyValidDst
		clear(k[2:18])
	}
	if m&keyDstPort == 0 {
		k[18], k[19] = 0, 0
	}
	if m&keyRsrcAddr == 0 {
		k[1] &^= keyValidRsrc
		clear(k[20:36])
	}
	if m&keyRsrcPort == 0 {
		k[36], k[37] = 0, 0
	}
	return k
}

// putIP writes the 16-byte form of ip at k[off:] and sets flag when ip is an
// IP address.
func (k *flowKey) putIP(off int, flag byte, ip net.IP) {
	if ip16 := ip.To16(); ip16 != nil {
		k[1] |= flag
		copy(k[off:off+16], ip16)
	}
}

func (k *flowKey) putPort(off int, port uint16) {
	k[off], k[off+1] = byte(port>>8), byte(port)
}

// key returns the key fields f sets and its key, or false when f can match
// no entry: an address with a zone (a conntrack entry's have none).
func (f *FlowFilter) key() (keyFields, flowKey, bool) {
	var m keyFields
	var k flowKey
	if f.Protocol != "" {
		m |= keyProto
		k[0] = f.Protocol.Number()
	}
	for _, side := range []struct {
		ap               netip.AddrPort
		off, portOff     int
		flag             byte
		addrBit, portBit keyFields
	}{
		{f.OrigDst, 2, 18, keyValidDst, keyDstAddr, keyDstPort},
		{f.ReplySrc, 20, 36, keyValidRsrc, keyRsrcAddr, keyRsrcPort},
	} {
		if a := side.ap.Addr(); a.IsValid() {
			if a.Zone() != "" {
				return 0, k, false
			}
			m |= side.addrBit
			k[1] |= side.flag
			a16 := a.As16()
			copy(k[side.off:side.off+16], a16[:])
		}
		if side.ap.Port() != 0 {
			m |= side.portBit
			k.putPort(side.portOff, side.ap.Port())
		}
	}
	return m, k, true
}

// flowMatcher matches a flow against a set of filters: a flow matches when
// any filter matches it. The filters are indexed by the key fields they
// set (a tuple-space search): one hash table per combination of set
// fields, keyed by their values, so that a flow is looked up once per
// combination in use (a handful: a frontend and an endpoint, a node port
// and an endpoint, a frontend alone, a node port alone) and checked only
// against the filters whose protocol, addresses and ports it has.
type flowMatcher struct {
	tables []filterTable
}

type filterTable struct {
	fields  keyFields
	filters map[flowKey][]*FlowFilter
}

// newFlowMatcher indexes filters (each once).
func newFlowMatcher(filters []FlowFilter) *flowMatcher {
	m := &flowMatcher{}
	byFields := map[keyFields]int{}
	seen := make(map[FlowFilter]struct{}, len(filters))
	for i := range filters {
		f := &filters[i]
		if _, dup := seen[*f]; dup || f.Untranslated && f.Translated {
			continue // the same again, or matches nothing
		}
		seen[*f] = struct{}{}
		fields, k, ok := f.key()
		if !ok {
			continue
		}
		t, ok := byFields[fields]
		if !ok {
			t = len(m.tables)
			byFields[fields] = t
			m.tables = append(m.tables, filterTable{fields: fields, filters: map[flowKey][]*FlowFilter{}})
		}
		m.tables[t].filters[k] = append(m.tables[t].filters[k], f)
	}
	return m
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m *flowMatcher) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	var k flowKey
	k[0] = flow.Forward.Protocol
	k.putIP(2, keyValidDst, flow.Forward.DstIP)
	k.putPort(18, flow.Forward.DstPort)
	k.putIP(20, keyValidRsrc, flow.Reverse.SrcIP)
	k.putPort(36, flow.Reverse.SrcPort)
	untranslated := flow.Reverse.SrcPort == flow.Forward.DstPort && flow.Reverse.SrcIP.Equal(flow.Forward.DstIP)
	for i := range m.tables {
		t := &m.tables[i]
		for _, f := range t.filters[k.masked(t.fields)] {
			if f.Untranslated && !untranslated || f.Translated && untranslated ||
				f.ReplySrcNotIn.s != nil && f.ReplySrcNotIn.Match(addrPortOf(flow.Reverse.SrcIP, flow.Reverse.SrcPort)) ||
				f.OrigDstNotIn.s != nil && f.OrigDstNotIn.Match(addrPortOf(flow.Forward.DstIP, flow.Forward.DstPort)) {
				continue
			}
			return true
		}
	}
	return false
}

// addrPortOf returns ip and port with the address unmapped; the zero
// address when ip is not an IP address.
func addrPortOf(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// portFlows is what a sync remembers of a port to find the conntrack
// entries that a change made stale.
type portFlows struct {
	proto     lb.Protocol
	reachable bool             // has endpoints anywhere (not rejected)
	targets   []netip.AddrPort // endpoints some rule sends traffic to, and serving ones whose flows may go on
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
	// Serving holds the reachable endpoints and the serving ones new flows
	// no longer go to (terminating while ready ones exist), whose flows
	// may go on, as in kube-proxy.
	for _, t := range p.Endpoints.Serving {
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
//     syncer does not move the live flows it finds (in a full sync,
//     reconcileFlows deletes those to endpoints no longer in use).
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

// reconcileFlows returns the filters a full sync adds to those of
// staleFlows, for ports, every UDP and SCTP port of one family (nil for
// the others): the flows to each frontend of a port translated to
// anything but the port's current targets (reached through any of its
// frontends), as kube-proxy's conntrack reconciler deletes them. They are
// stale whatever the syncer remembers, which after a restart, a Cleanup or
// a failed sync is nothing: endpoints removed in the meantime would keep
// their flows for as long as the clients send. Flows to the targets stay
// where they are, and untranslated flows are left to staleFlows (a node
// port's would include the node's own flows to that port of other hosts).
//
// A port without endpoints has no targets, so all the translated flows to
// its frontends go: they were deleted when it lost its endpoints, unless
// the syncer was down or that cleanup failed, and new flows meet its
// REJECT (or DROP) instead.
//
// A node port's filter leaves alone the flows to the explicit frontends
// (cluster, external and load-balancer IPs) that other ports have on the
// same protocol and port number: those flows are theirs.
func reconcileFlows(ports []*portFlows) []FlowFilter {
	type protoPort struct {
		proto lb.Protocol
		port  uint16
	}
	explicit := map[protoPort][]netip.AddrPort{}
	n := 0
	for _, p := range ports {
		if p == nil {
			continue
		}
		n += len(p.frontends)
		for _, f := range p.frontends {
			if f.Addr().IsValid() {
				k := protoPort{p.proto, f.Port()}
				explicit[k] = append(explicit[k], f)
			}
		}
	}
	out := make([]FlowFilter, 0, n)
	for _, p := range ports {
		if p == nil {
			continue
		}
		targets := NewAddrPortSet(p.targets...)
		for _, f := range p.frontends {
			ff := FlowFilter{Protocol: p.proto, OrigDst: f, Translated: true, ReplySrcNotIn: targets}
			if !f.Addr().IsValid() {
				ff.OrigDstNotIn = NewAddrPortSet(explicit[protoPort{p.proto, f.Port()}]...)
			}
			out = append(out, ff)
		}
	}
	return out
}
