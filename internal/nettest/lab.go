package nettest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Segment describes one L2 segment: a bridge that hosts attach to.
type Segment struct {
	// Name names the segment; it is also the name of each host's interface
	// on it. At most 12 characters of [a-z0-9-].
	Name string
	// Prefix4 and Prefix6 hold the host addresses: host number i gets
	// address i of each. Zero values take the segment's default (see
	// DefaultSegments); an invalid Prefix6 with Prefix4 set, or the other
	// way round, leaves that family off the segment.
	Prefix4, Prefix6 netip.Prefix
}

// DefaultSegments are the prefixes given, in order, to segments whose
// prefixes are left zero: the first segment gets 192.0.2.0/24 and
// 2001:db8::/64, the second 198.51.100.0/24 and 2001:db8:1::/64, the third
// 203.0.113.0/24 and 2001:db8:2::/64. All are documentation ranges.
var DefaultSegments = []Segment{
	{Name: "lan", Prefix4: netip.MustParsePrefix("192.0.2.0/24"), Prefix6: netip.MustParsePrefix("2001:db8::/64")},
	{Name: "wan", Prefix4: netip.MustParsePrefix("198.51.100.0/24"), Prefix6: netip.MustParsePrefix("2001:db8:1::/64")},
	{Name: "ext", Prefix4: netip.MustParsePrefix("203.0.113.0/24"), Prefix6: netip.MustParsePrefix("2001:db8:2::/64")},
}

// HostSpec describes one host: a network namespace with an interface on
// each of its segments.
type HostSpec struct {
	// Name names the host; at most 15 characters of [a-z0-9-].
	Name string
	// Segments lists the segments the host is attached to, by name. Empty
	// means the first segment of the topology.
	Segments []string
	// Forwarding turns on IPv4 and IPv6 forwarding in the host, for
	// routers and load balancers.
	Forwarding bool
}

// Topology describes a lab: its segments and its hosts.
type Topology struct {
	// Segments defaults to one segment named "lan".
	Segments []Segment
	Hosts    []HostSpec
}

// Lab is a built topology. Its methods are safe for concurrent use.
type Lab struct {
	segments []*SegmentInfo
	hosts    []*Host

	mu      sync.Mutex
	closers []func() error // run in reverse order by Close
	closed  bool
}

// SegmentInfo is a built segment.
type SegmentInfo struct {
	Name             string
	Prefix4, Prefix6 netip.Prefix
	ns               *namespace
}

// Host is one namespace of a lab.
type Host struct {
	name   string
	index  int // 1-based, the last part of every address
	lab    *Lab
	ns     *namespace
	nl     *netlink.Handle
	ifaces map[string]*Iface
	order  []string // segment names in attachment order
}

// Iface is a host's interface on one segment.
type Iface struct {
	Name         string
	Index        int
	MAC          net.HardwareAddr
	Addr4, Addr6 netip.Addr // invalid when the segment lacks the family
	Segment      *SegmentInfo
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// ValidationError reports a Topology that cannot be built.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return "nettest: topology " + e.Field + ": " + e.Reason
}

// New builds topo for a test and removes it when the test ends, whether the
// test passes, fails or panics. It calls RequireKernel first and fails the
// test if the topology cannot be built.
func New(t testing.TB, topo Topology) *Lab {
	t.Helper()
	RequireKernel(t)
	lab, err := Build(topo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("nettest: cleanup: %v", err)
		}
	})
	return lab
}

// Build builds topo and returns the lab; the caller must Close it. Before it
// builds, it removes namespaces left behind by test processes that died (see
// RemoveStale). On error nothing it created is left behind.
func Build(topo Topology) (lab *Lab, err error) {
	segs, err := normalize(&topo)
	if err != nil {
		return nil, err
	}
	if _, err := RemoveStale(); err != nil {
		return nil, err
	}
	lab = &Lab{}
	defer func() {
		if err != nil {
			err = errors.Join(err, lab.Close())
			lab = nil
		}
	}()
	for _, s := range segs {
		si, err := lab.buildSegment(s)
		if err != nil {
			return lab, err
		}
		lab.segments = append(lab.segments, si)
	}
	for i, hs := range topo.Hosts {
		h, err := lab.buildHost(hs, i+1)
		if err != nil {
			return lab, err
		}
		lab.hosts = append(lab.hosts, h)
	}
	return lab, nil
}

func normalize(topo *Topology) ([]Segment, error) {
	segs := topo.Segments
	if len(segs) == 0 {
		segs = []Segment{{Name: DefaultSegments[0].Name}}
	}
	seen := map[string]bool{}
	for i := range segs {
		s := &segs[i]
		field := fmt.Sprintf("segments[%d]", i)
		if len(s.Name) > 12 || !nameRE.MatchString(s.Name) {
			return nil, &ValidationError{field + ".name", fmt.Sprintf("%q must be 1-12 characters of [a-z0-9-]", s.Name)}
		}
		if seen[s.Name] {
			return nil, &ValidationError{field + ".name", fmt.Sprintf("duplicate segment %q", s.Name)}
		}
		seen[s.Name] = true
		if !s.Prefix4.IsValid() && !s.Prefix6.IsValid() {
			if i >= len(DefaultSegments) {
				return nil, &ValidationError{field, "no prefixes and no default for a segment past the third"}
			}
			s.Prefix4, s.Prefix6 = DefaultSegments[i].Prefix4, DefaultSegments[i].Prefix6
		}
		if s.Prefix4.IsValid() && !s.Prefix4.Addr().Is4() {
			return nil, &ValidationError{field + ".prefix4", s.Prefix4.String() + " is not IPv4"}
		}
		if s.Prefix6.IsValid() && (!s.Prefix6.Addr().Is6() || s.Prefix6.Addr().Is4In6()) {
			return nil, &ValidationError{field + ".prefix6", s.Prefix6.String() + " is not IPv6"}
		}
	}
	if len(topo.Hosts) == 0 {
		return nil, &ValidationError{"hosts", "a topology needs at least one host"}
	}
	hostSeen := map[string]bool{}
	for i := range topo.Hosts {
		h := &topo.Hosts[i]
		field := fmt.Sprintf("hosts[%d]", i)
		if len(h.Name) > 15 || !nameRE.MatchString(h.Name) {
			return nil, &ValidationError{field + ".name", fmt.Sprintf("%q must be 1-15 characters of [a-z0-9-]", h.Name)}
		}
		if hostSeen[h.Name] {
			return nil, &ValidationError{field + ".name", fmt.Sprintf("duplicate host %q", h.Name)}
		}
		hostSeen[h.Name] = true
		if len(h.Segments) == 0 {
			h.Segments = []string{segs[0].Name}
		}
		for j, sn := range h.Segments {
			if !seen[sn] {
				return nil, &ValidationError{fmt.Sprintf("%s.segments[%d]", field, j), fmt.Sprintf("unknown segment %q", sn)}
			}
		}
		for _, s := range segs {
			for _, p := range []netip.Prefix{s.Prefix4, s.Prefix6} {
				if p.IsValid() && !nthAddr(p, i+1).IsValid() {
					return nil, &ValidationError{field, fmt.Sprintf("host number %d does not fit in %s", i+1, p)}
				}
			}
		}
	}
	return segs, nil
}

// nthAddr returns address n of prefix p (n counted from the prefix's first
// address), or the zero Addr when it falls outside p or is p's broadcast.
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	if !p.Contains(a) || (a.Is4() && !p.Contains(a.Next())) {
		return netip.Addr{}
	}
	return a
}

func (l *Lab) onClose(f func() error) {
	l.mu.Lock()
	l.closers = append(l.closers, f)
	l.mu.Unlock()
}

// Close stops every server and process the lab started and removes every
// namespace it created, in reverse order of creation. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers := l.closers
	l.closers = nil
	l.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	return errors.Join(errs...)
}

func (l *Lab) buildSegment(s Segment) (*SegmentInfo, error) {
	ns, err := newNamespace("sw-" + s.Name)
	if err != nil {
		return nil, err
	}
	l.onClose(ns.close)
	si := &SegmentInfo{Name: s.Name, Prefix4: s.Prefix4, Prefix6: s.Prefix6, ns: ns}
	nl, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		return nil, fmt.Errorf("nettest: netlink in %s: %w", ns.name, err)
	}
	defer nl.Close()
	if err := linkUp(nl, "lo"); err != nil {
		return nil, err
	}
	off := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}, MulticastSnooping: &off}
	if err := nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("nettest: segment %s: add bridge: %w", s.Name, err)
	}
	if err := linkUp(nl, "br0"); err != nil {
		return nil, err
	}
	return si, nil
}

func (l *Lab) buildHost(hs HostSpec, index int) (*Host, error) {
	ns, err := newNamespace(hs.Name)
	if err != nil {
		return nil, err
	}
	l.onClose(ns.close)
	h := &Host{name: hs.Name, index: index, lab: l, ns: ns, ifaces: map[string]*Iface{}}
	if h.nl, err = netlink.NewHandleAt(ns.handle); err != nil {
		return nil, fmt.Errorf("nettest: netlink in %s: %w", ns.name, err)
	}
	l.onClose(func() error { h.nl.Close(); return nil })
	if err := linkUp(h.nl, "lo"); err != nil {
		return nil, err
	}
	// Addresses are usable at once: no duplicate address detection in a
	// lab where every address is assigned exactly once.
	sysctls := map[string]string{
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv6/conf/default/accept_dad": "0",
	}
	if hs.Forwarding {
		sysctls["net/ipv4/ip_forward"] = "1"
		sysctls["net/ipv6/conf/all/forwarding"] = "1"
	}
	for k, v := range sysctls {
		if err := h.SetSysctl(k, v); err != nil {
			return nil, err
		}
	}
	for _, segName := range hs.Segments {
		seg := l.Segment(segName)
		if err := h.attach(seg); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *Host) attach(seg *SegmentInfo) error {
	swNL, err := netlink.NewHandleAt(seg.ns.handle)
	if err != nil {
		return fmt.Errorf("nettest: netlink in %s: %w", seg.ns.name, err)
	}
	defer swNL.Close()
	br, err := swNL.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("nettest: segment %s: %w", seg.Name, err)
	}
	segNum := 0
	for i, s := range h.lab.segments {
		if s == seg {
			segNum = i
		}
	}
	mac := net.HardwareAddr{0x02, 0x1b, 0x00, byte(segNum), byte(h.index >> 8), byte(h.index)}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: h.name, MasterIndex: br.Attrs().Index},
		PeerName:         seg.Name,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(h.ns.handle),
	}
	if err := swNL.LinkAdd(veth); err != nil {
		return fmt.Errorf("nettest: attach %s to %s: %w", h.name, seg.Name, err)
	}
	if err := linkUp(swNL, h.name); err != nil {
		return err
	}
	link, err := h.nl.LinkByName(seg.Name)
	if err != nil {
		return fmt.Errorf("nettest: host %s: %w", h.name, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("nettest: host %s: up %s: %w", h.name, seg.Name, err)
	}
	// Until the kernel's link watcher has run for both ends, their qdisc
	// is the no-op one that drops every frame silently (a test that sends
	// one gratuitous ARP, or the first SYN, right after New would lose
	// it), and IPv6 treats the link as not ready: an address added then
	// may never join its solicited-node group. The watcher batches events
	// up to a second apart, so wait for it before adding addresses.
	if err := waitOperUp(swNL, h.name); err != nil {
		return err
	}
	if err := waitOperUp(h.nl, seg.Name); err != nil {
		return err
	}
	ifc := &Iface{Name: seg.Name, Index: link.Attrs().Index, MAC: mac, Segment: seg}
	for _, p := range []netip.Prefix{seg.Prefix4, seg.Prefix6} {
		if !p.IsValid() {
			continue
		}
		a := nthAddr(p, h.index)
		if err := h.AddAddr(seg.Name, netip.PrefixFrom(a, p.Bits())); err != nil {
			return err
		}
		if a.Is4() {
			ifc.Addr4 = a
		} else {
			ifc.Addr6 = a
		}
	}
	h.ifaces[seg.Name] = ifc
	h.order = append(h.order, seg.Name)
	return nil
}

// waitOperUp waits until the link's operational state is up, which the
// kernel sets in the same step that gives it a working qdisc.
func waitOperUp(nl *netlink.Handle, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("nettest: %s: %w", name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nettest: %s is still %s after 5s", name, link.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func linkUp(nl *netlink.Handle, name string) error {
	link, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("nettest: %s: %w", name, err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("nettest: up %s: %w", name, err)
	}
	return nil
}

// Host returns the host with the given name; it panics when there is none,
// which is a mistake in the test.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.hosts {
		if h.name == name {
			return h
		}
	}
	panic(fmt.Sprintf("nettest: no host %q in the lab", name))
}

// Hosts returns the hosts in the order of the topology.
func (l *Lab) Hosts() []*Host { return append([]*Host(nil), l.hosts...) }

// Segment returns the segment with the given name; it panics when there is
// none, which is a mistake in the test.
func (l *Lab) Segment(name string) *SegmentInfo {
	for _, s := range l.segments {
		if s.Name == name {
			return s
		}
	}
	panic(fmt.Sprintf("nettest: no segment %q in the lab", name))
}

// Namespaces returns the names of every namespace of the lab (switches and
// hosts), as found under /run/netns.
func (l *Lab) Namespaces() []string {
	var out []string
	for _, s := range l.segments {
		out = append(out, s.ns.name)
	}
	for _, h := range l.hosts {
		out = append(out, h.ns.name)
	}
	return out
}

// Name returns the host's name, the one its echo servers answer with.
func (h *Host) Name() string { return h.name }

// Namespace returns the name of the host's namespace under /run/netns, for
// `ip netns exec` or `ip -n` while debugging.
func (h *Host) Namespace() string { return h.ns.name }

// NamespacePath returns the path of the host's pinned namespace.
func (h *Host) NamespacePath() string { return h.ns.path }

// NamespaceFd returns a file descriptor of the host's namespace, owned by
// the lab and valid until Close: for netlink.NewHandleAt, nftables'
// WithNetNSFd and the like.
func (h *Host) NamespaceFd() int { return int(h.ns.handle) }

// Netlink returns a netlink handle bound to the host's namespace, owned by
// the lab.
func (h *Host) Netlink() *netlink.Handle { return h.nl }

// Iface returns the host's interface on the named segment, or nil.
func (h *Host) Iface(segment string) *Iface { return h.ifaces[segment] }

// IP4 returns the host's IPv4 address on its first segment.
func (h *Host) IP4() netip.Addr { return h.ifaces[h.order[0]].Addr4 }

// IP6 returns the host's IPv6 address on its first segment.
func (h *Host) IP6() netip.Addr { return h.ifaces[h.order[0]].Addr6 }

// MAC returns the MAC address of the host's interface on its first segment.
func (h *Host) MAC() net.HardwareAddr { return h.ifaces[h.order[0]].MAC }

// Do runs fn with the calling code's OS thread inside the host's namespace.
// Sockets fn creates belong to the namespace for their whole life.
// Goroutines fn starts do not run in the namespace.
func (h *Host) Do(fn func() error) error { return doIn(h.ns.handle, fn) }

// SetSysctl writes a sysctl inside the host's namespace; key uses slashes or
// dots ("net/ipv4/ip_forward" or "net.ipv4.ip_forward").
func (h *Host) SetSysctl(key, value string) error {
	key = strings.ReplaceAll(key, ".", "/")
	if strings.Contains(key, "..") || strings.HasPrefix(key, "/") {
		return fmt.Errorf("nettest: bad sysctl key %q", key)
	}
	return h.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("nettest: host %s: sysctl %s=%s: %w", h.name, key, value, err)
		}
		return nil
	})
}

// AddAddr adds an address to the host's interface on segment (a VIP, say).
// IPv6 addresses skip duplicate address detection.
func (h *Host) AddAddr(segment string, p netip.Prefix) error {
	return h.addAddr(segment, p)
}

// AddAddrLo adds an address to the host's loopback interface, as a
// direct-server-return real server holds its VIP.
func (h *Host) AddAddrLo(p netip.Prefix) error { return h.addAddr("lo", p) }

func (h *Host) addAddr(linkName string, p netip.Prefix) error {
	link, err := h.nl.LinkByName(linkName)
	if err != nil {
		return fmt.Errorf("nettest: host %s: %w", h.name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.nl.AddrAdd(link, a); err != nil {
		return fmt.Errorf("nettest: host %s: add %s to %s: %w", h.name, p, linkName, err)
	}
	if p.Addr().Is6() {
		if err := h.waitLocalRoute(p.Addr()); err != nil {
			return err
		}
		if linkName != "lo" {
			return h.waitSolicitedNode(linkName, p.Addr())
		}
	}
	return nil
}

// waitLocalRoute waits until the kernel routes addr to this host. For IPv6
// it installs the local route of a new address from a work queue, after
// AddrAdd returned; a packet that arrives before is answered with "no
// route" (an ICMPv6 destination unreachable).
func (h *Host) waitLocalRoute(addr netip.Addr) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		routes, err := h.nl.RouteGet(addr.AsSlice())
		if err == nil && len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nettest: host %s: %s is not a local address after 5s (%v)", h.name, addr, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitSolicitedNode waits until the interface has joined the
// solicited-node multicast group of addr. The kernel joins it from a work
// queue after the address is added; until then a neighbour solicitation
// for the address is dropped on arrival, and the asker retries only after
// a second.
func (h *Host) waitSolicitedNode(linkName string, addr netip.Addr) error {
	a := addr.As16()
	group := fmt.Sprintf("ff0200000000000000000001ff%02x%02x%02x", a[13], a[14], a[15])
	deadline := time.Now().Add(5 * time.Second)
	for {
		var joined bool
		err := h.Do(func() error {
			data, err := os.ReadFile("/proc/thread-self/net/igmp6") // not /proc/net: that is the thread-group leader's namespace
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(data), "\n") {
				f := strings.Fields(line)
				if len(f) >= 3 && f[1] == linkName && f[2] == group {
					joined = true
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("nettest: host %s: %w", h.name, err)
		}
		if joined {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nettest: host %s: %s has not joined the solicited-node group of %s after 5s", h.name, linkName, addr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AddRoute adds a route to dst through the gateway via, which must be
// reachable on one of the host's segments.
func (h *Host) AddRoute(dst netip.Prefix, via netip.Addr) error {
	r := &netlink.Route{
		Dst: &net.IPNet{IP: dst.Masked().Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:  via.AsSlice(),
	}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("nettest: host %s: route %s via %s: %w", h.name, dst, via, err)
	}
	return nil
}

// Run executes a command inside the host's namespace and returns its
// combined output. A non-zero exit is an error that carries the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out []byte
	err := h.Do(func() error {
		var err error
		out, err = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("nettest: host %s: %s %s: %w\n%s", h.name, name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// MustRun is Run that fails the test on error; it returns the output.
func (h *Host) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := h.Run(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Start starts a command inside the host's namespace without waiting for
// it. The lab kills it at Close if it still runs; the caller may Wait on it
// or kill it earlier.
func (h *Host) Start(cmd *exec.Cmd) error {
	if err := h.Do(cmd.Start); err != nil {
		return fmt.Errorf("nettest: host %s: start %s: %w", h.name, cmd.Path, err)
	}
	h.lab.onClose(func() error {
		// Killing a process that has already exited is harmless; reaping is
		// the caller's business (Wait), and the namespace's own cleanup
		// kills whatever is left inside it.
		_ = cmd.Process.Kill()
		return nil
	})
	return nil
}
