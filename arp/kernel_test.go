//go:build linux

package arp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Tier-2 tests: real packet sockets in network namespaces built by
// internal/nettest, checked against what the kernels of other hosts do with
// the frames (their neighbour tables, arping, TCP connections).
//
// Every announcer host holds the VIPs on its loopback interface and has
// arp_ignore=1 and arp_announce=2, so that its kernel accepts the VIPs'
// traffic but never answers ARP for them, nor uses them as the source of
// its own ARP requests; Linux answers neighbour solicitations only for
// addresses of the receiving interface, so IPv6 needs nothing more. Each
// test shows that nothing answers before the Announcer does.

const echoPort = 7000

var (
	kvip4 = netip.MustParseAddr("192.0.2.100")
	kvip6 = netip.MustParseAddr("2001:db8::100")
	// Addresses the announcer hosts accept too, but no Announcer owns.
	other4 = netip.MustParseAddr("192.0.2.101")
	other6 = netip.MustParseAddr("2001:db8::101")
)

func newLab(t testing.TB, topo nettest.Topology) *nettest.Lab {
	t.Helper()
	nettest.RequireKernel(t, "arping", "ip")
	return nettest.New(t, topo)
}

// vipHost makes h accept the VIPs' traffic without its kernel answering
// ARP or neighbour solicitations for them, and starts its echo servers.
func vipHost(t testing.TB, h *nettest.Host) {
	t.Helper()
	for _, p := range []netip.Prefix{
		netip.PrefixFrom(kvip4, 32), netip.PrefixFrom(other4, 32),
		netip.PrefixFrom(kvip6, 128), netip.PrefixFrom(other6, 128),
	} {
		if err := h.AddAddrLo(p); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"} {
		if err := h.SetSysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.StartEcho(echoPort); err != nil {
		t.Fatal(err)
	}
}

// clientAndAnnouncer builds the lab most tests use: a client and an
// announcer host (see vipHost) on one segment.
func clientAndAnnouncer(t testing.TB) (client, ann *nettest.Host) {
	t.Helper()
	lab := newLab(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "client"}, {Name: "ann"}}})
	client, ann = lab.Host("client"), lab.Host("ann")
	vipHost(t, ann)
	return client, ann
}

// dialOn opens an Announcer on h's interface on segment "lan".
func dialOn(t testing.TB, h *nettest.Host, cfg Config) *Announcer {
	t.Helper()
	var a *Announcer
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("lan")
		if err != nil {
			return err
		}
		a, err = Dial(context.Background(), ifi, cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

func acquireOn(t testing.TB, a *Announcer, vips ...netip.Addr) {
	t.Helper()
	if err := a.Acquire(context.Background(), vips...); err != nil {
		t.Fatal(err)
	}
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// neighbour reads h's neighbour entry for ip on "lan" through netlink; nil
// when there is none.
func neighbour(t testing.TB, h *nettest.Host, ip netip.Addr) (net.HardwareAddr, int) {
	t.Helper()
	list, err := h.Netlink().NeighList(h.Iface("lan").Index, family(ip))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr, n.State
		}
	}
	return nil, 0
}

func setNeighbour(t testing.TB, h *nettest.Host, ip netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	n := &netlink.Neigh{LinkIndex: h.Iface("lan").Index, Family: family(ip), State: netlink.NUD_STALE,
		IP: ip.AsSlice(), HardwareAddr: mac}
	if err := h.Netlink().NeighSet(n); err != nil {
		t.Fatal(err)
	}
}

// waitNeighbour waits until h maps ip to mac and returns how long it took.
func waitNeighbour(t testing.TB, h *nettest.Host, ip netip.Addr, mac net.HardwareAddr, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, state := neighbour(t, h, ip)
		if equalMAC(got, mac) && state&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: neighbour %v is %v (state %#x) after %v, want %v", h.Name(), ip, got, state, limit, mac)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

var arpingReply = regexp.MustCompile(`(?m)^\d+ bytes from ([0-9a-f:]{17}) \(([0-9.]+)\)`)

// arping runs arping on h's "lan" interface and returns the MAC addresses
// of the replies.
func arping(t testing.TB, h *nettest.Host, args ...string) []string {
	t.Helper()
	out, err := h.Run(context.Background(), "arping", append([]string{"-i", "lan"}, args...)...)
	if !strings.Contains(string(out), "packets transmitted") {
		t.Fatalf("arping %v: %v\n%s", args, err, out)
	}
	var macs []string
	for _, m := range arpingReply.FindAllStringSubmatch(string(out), -1) {
		macs = append(macs, m[1])
	}
	if (err == nil) != (len(macs) > 0) {
		t.Fatalf("arping %v: exit %v with %d replies\n%s", args, err, len(macs), out)
	}
	return macs
}

// noAnswer asserts that arping for ip gets no reply from h.
func noAnswer(t testing.TB, h *nettest.Host, ip netip.Addr, extra ...string) {
	t.Helper()
	args := append(append([]string{}, extra...), "-c", "2", "-W", "0.2", "-w", "1", ip.String())
	if macs := arping(t, h, args...); len(macs) > 0 {
		t.Fatalf("%v answered by %v", ip, macs)
	}
}

func ask(h *nettest.Host, ip netip.Addr, timeout time.Duration) (nettest.Reply, error) {
	return h.Ask(context.Background(), nettest.Probe{To: netip.AddrPortFrom(ip, echoPort), Timeout: timeout})
}

func TestKernelARPAnsweredByAnnouncerOnly(t *testing.T) {
	client, ann := clientAndAnnouncer(t)

	// Nobody answers for the VIP while no Announcer runs: the kernel of
	// the host that holds it does not.
	noAnswer(t, client, kvip4)
	if _, err := ask(client, kvip4, time.Second); err == nil {
		t.Fatal("the VIP was reachable before any announcement")
	}

	a := dialOn(t, ann, Config{})
	acquireOn(t, a, kvip4)
	before := a.Stats().ARPReplies
	macs := arping(t, client, "-c", "3", "-C", "3", "-W", "0.1", "-w", "3", kvip4.String())
	if len(macs) != 3 || slices.ContainsFunc(macs, func(m string) bool { return m != ann.MAC().String() }) {
		t.Fatalf("arping got %v, want 3 replies from %v", macs, ann.MAC())
	}
	// The replies are the Announcer's: it counted each.
	if got := a.Stats().ARPReplies - before; got < 3 {
		t.Fatalf("the Announcer sent %d replies for arping's 3", got)
	}

	// The client's kernel resolves the VIP through the Announcer and
	// reaches the VIP's server.
	r, err := ask(client, kvip4, 2*time.Second)
	if err != nil || r.Backend != "ann" {
		t.Fatalf("TCP to the VIP: %+v, %v", r, err)
	}
	if mac, state := neighbour(t, client, kvip4); !equalMAC(mac, ann.MAC()) {
		t.Fatalf("client neighbour %v = %v (state %#x), want %v", kvip4, mac, state, ann.MAC())
	}

	// An address the host accepts but the Announcer does not own.
	noAnswer(t, client, other4)

	// After Release, not one more answer.
	if err := a.Release(kvip4); err != nil {
		t.Fatal(err)
	}
	sent := a.Stats().ARPReplies
	noAnswer(t, client, kvip4)
	if got := a.Stats().ARPReplies; got != sent {
		t.Fatalf("%d replies after Release", got-sent)
	}
}

func TestKernelIPv6AnsweredByAnnouncerOnly(t *testing.T) {
	client, ann := clientAndAnnouncer(t)

	// The kernel of the host holding the VIP on lo ignores solicitations
	// for it: resolution fails and `ip -6 neigh` shows no address.
	if _, err := ask(client, kvip6, 2*time.Second); err == nil {
		t.Fatal("the IPv6 VIP was reachable before any announcement")
	}
	if out := client.MustRun(t, "ip", "-6", "neigh", "show", kvip6.String(), "dev", "lan"); strings.Contains(out, "lladdr") {
		t.Fatalf("client resolved %v without an announcer: %s", kvip6, out)
	}

	a := dialOn(t, ann, Config{})
	snmMAC := IPv6MulticastMAC(SolicitedNodeMulticast(kvip6)).String()
	acquireOn(t, a, kvip6)
	if out := ann.MustRun(t, "ip", "maddr", "show", "dev", "lan"); !strings.Contains(out, snmMAC) {
		t.Fatalf("after Acquire the interface does not accept %s:\n%s", snmMAC, out)
	}
	// The failed attempt left an entry that the unsolicited advertisement
	// may have filled in; remove it, so that the client must solicit.
	client.MustRun(t, "ip", "-6", "neigh", "del", kvip6.String(), "dev", "lan")
	r, err := ask(client, kvip6, 3*time.Second)
	if err != nil || r.Backend != "ann" {
		t.Fatalf("TCP to the IPv6 VIP: %+v, %v", r, err)
	}
	out := client.MustRun(t, "ip", "-6", "neigh", "show", kvip6.String(), "dev", "lan")
	if !strings.Contains(out, "lladdr "+ann.MAC().String()) {
		t.Fatalf("ip -6 neigh: %q, want lladdr %v", out, ann.MAC())
	}
	if mac, _ := neighbour(t, client, kvip6); !equalMAC(mac, ann.MAC()) {
		t.Fatalf("netlink neighbour %v = %v", kvip6, mac)
	}
	if s := a.Stats(); s.NeighborAdvertisements == 0 || s.Malformed != 0 {
		t.Fatalf("stats %+v: the kernel's solicitations must be answered by the Announcer and pass its checks", s)
	}

	// An address the host accepts but the Announcer does not own.
	if _, err := ask(client, other6, 2*time.Second); err == nil {
		t.Fatalf("%v reachable though nobody announces it", other6)
	}
	if out := client.MustRun(t, "ip", "-6", "neigh", "show", other6.String(), "dev", "lan"); strings.Contains(out, "lladdr") {
		t.Fatalf("client resolved %v: %s", other6, out)
	}

	// A solicitation on the wire is answered by the Announcer alone...
	if got := solicitOnWire(t, client, "lan", kvip6, 500*time.Millisecond); len(got) != 1 || !equalMAC(got[0], ann.MAC()) {
		t.Fatalf("solicitation for %v answered by %v, want %v", kvip6, got, ann.MAC())
	}
	// ...and after Release by nobody: not one more advertisement, though
	// the solicitation still reaches the Announcer (veth does not filter
	// multicast).
	if err := a.Release(kvip6); err != nil {
		t.Fatal(err)
	}
	before := a.Stats()
	if got := solicitOnWire(t, client, "lan", kvip6, time.Second); len(got) != 0 {
		t.Fatalf("solicitation for %v answered by %v after Release", kvip6, got)
	}
	if s := a.Stats(); s.NeighborAdvertisements != before.NeighborAdvertisements || s.Received == before.Received {
		t.Fatalf("stats %+v, before %+v: want the solicitation received and not answered", s, before)
	}
	// Release also leaves the solicited-node group.
	if out := ann.MustRun(t, "ip", "maddr", "show", "dev", "lan"); strings.Contains(out, snmMAC) {
		t.Fatalf("after Release the interface still accepts %s:\n%s", snmMAC, out)
	}
}

// TestKernelAnnouncementsUpdateNeighbours checks each announcement form
// against the client kernel's rules for overriding an existing entry. The
// client's locktime is raised to 100 s, so only a frame Linux recognises as
// gratuitous may replace the entry's MAC address.
func TestKernelAnnouncementsUpdateNeighbours(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	if err := client.SetSysctl("net/ipv4/neigh/lan/locktime", "10000"); err != nil {
		t.Fatal(err)
	}
	bogus := net.HardwareAddr{0x02, 0x1b, 0xee, 0, 0, 0x99}

	for _, tt := range []struct {
		name string
		vip  netip.Addr
		form GratuitousForm
	}{
		{"arp request form", kvip4, GratuitousRequest},
		{"arp reply form", kvip4, GratuitousReply},
		{"arp both forms", kvip4, GratuitousBoth},
		{"unsolicited neighbor advertisement", kvip6, GratuitousRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			setNeighbour(t, client, tt.vip, bogus)
			// Two announcements, although one must do: the test is about what
			// the client does with them, not about frames lost on the way.
			a := dialOn(t, ann, Config{AnnounceCount: 2, AnnounceInterval: 50 * time.Millisecond, GratuitousARP: tt.form})
			acquireOn(t, a, tt.vip)
			waitNeighbour(t, client, tt.vip, ann.MAC(), 2*time.Second)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Sensitivity check: a reply-form gratuitous ARP whose target MAC is
	// zero is not gratuitous to Linux and leaves the young entry alone.
	setNeighbour(t, client, kvip4, bogus)
	p := GratuitousARP(ann.MAC(), kvip4, OperationReply)
	p.TargetHardwareAddr = nil
	sendRaw(t, ann, arpFrame(t, broadcastMAC, ann.MAC(), p))
	time.Sleep(200 * time.Millisecond)
	if mac, _ := neighbour(t, client, kvip4); !equalMAC(mac, bogus) {
		t.Fatalf("a reply with target MAC 0 replaced the entry (%v): the locktime check above proves nothing", mac)
	}
}

// TestKernelReannounceRepairsNeighbour: with ReannounceInterval set, a client
// entry that went wrong after the burst is put right again.
func TestKernelReannounceRepairsNeighbour(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	a := dialOn(t, ann, Config{AnnounceCount: 1, ReannounceInterval: 300 * time.Millisecond})
	acquireOn(t, a, kvip4, kvip6)
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		if r, err := ask(client, vip, 3*time.Second); err != nil || r.Backend != "ann" {
			t.Fatalf("TCP to %v: %+v, %v", vip, r, err)
		}
	}
	bogus := net.HardwareAddr{0x02, 0x1b, 0xee, 0, 0, 0x98}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		setNeighbour(t, client, vip, bogus)
	}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		waitNeighbour(t, client, vip, ann.MAC(), 2*time.Second)
	}
}

// TestKernelOtherInterfaceGetsNoAnswer: the announcer host is also on a
// second segment, whose host asks for the VIPs there (ARP, a neighbour
// solicitation on the wire, TCP). The Announcer must not answer any of it:
// its reply counters stay put, it logs no answer to the asker, and nothing
// about the VIPs leaves the host on that segment. An Announcer that read
// the questions on all interfaces would answer them, on its own interface
// if not on the other, and fail the first two checks.
func TestKernelOtherInterfaceGetsNoAnswer(t *testing.T) {
	lab := newLab(t, nettest.Topology{
		Segments: []nettest.Segment{{Name: "lan"}, {Name: "wan"}},
		Hosts: []nettest.HostSpec{
			{Name: "client", Segments: []string{"lan"}},
			{Name: "ann", Segments: []string{"lan", "wan"}},
			{Name: "client2", Segments: []string{"wan"}},
		},
	})
	client, ann, client2 := lab.Host("client"), lab.Host("ann"), lab.Host("client2")
	vipHost(t, ann)
	rec := &recorder{answers: map[string]int{}}
	a := dialOn(t, ann, Config{AnnounceCount: 1, Logger: slog.New(rec)})
	acquireOn(t, a, kvip4, kvip6)
	for _, vip := range []string{kvip4.String() + "/32", kvip6.String() + "/128"} {
		client2.MustRun(t, "ip", "route", "add", vip, "dev", "wan")
	}
	// Every frame on ann's wan; those from ann's MAC are what it sends.
	capture := rawSocket(t, ann, "wan", unix.ETH_P_ALL)

	before := a.Stats()
	out, _ := client2.Run(context.Background(), "arping", "-i", "wan", "-c", "3", "-W", "0.1", "-w", "1", kvip4.String())
	if arpingReply.Match(out) {
		t.Fatalf("the VIP answered on the other segment:\n%s", out)
	}
	if got := solicitOnWire(t, client2, "wan", kvip6, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("%v advertised on the other segment by %v", kvip6, got)
	}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		if _, err := ask(client2, vip, 500*time.Millisecond); err == nil {
			t.Fatalf("%v reached from the other segment", vip)
		}
	}
	// Other frames reach the Announcer on lan meanwhile (the switch's own
	// ports run duplicate address detection), so Received may grow; but
	// an Announcer that read the questions on wan would answer them.
	if s := a.Stats(); s.ARPReplies != before.ARPReplies || s.NeighborAdvertisements != before.NeighborAdvertisements ||
		s.WriteErrors != before.WriteErrors || s.Malformed != before.Malformed {
		t.Fatalf("the Announcer answered the other segment: stats %+v, before %+v", s, before)
	}
	for _, ip := range []netip.Addr{client2.IP4(), client2.IP6()} {
		for _, what := range []string{"arp reply", "neighbor advertisement"} {
			if n := rec.count(what + " " + ip.String()); n != 0 {
				t.Fatalf("the Announcer logged %d %ss to %v", n, what, ip)
			}
		}
	}
	if err := capture.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, readBufferLen)
	for {
		n, _, err := capture.ReadFrom(buf)
		if err != nil {
			break
		}
		if about, ok := frameAbout(buf[:n]); ok && equalMAC(buf[6:12], ann.Iface("wan").MAC) && (about == kvip4 || about == kvip6) {
			t.Fatalf("ann sent a frame about %v on wan: % x", about, buf[:n])
		}
	}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		if out := client2.MustRun(t, "ip", "neigh", "show", vip.String(), "dev", "wan"); strings.Contains(out, "lladdr") {
			t.Fatalf("client2 resolved %v on wan: %s", vip, out)
		}
	}
	// The same VIPs on the Announcer's own segment: answered.
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		if r, err := ask(client, vip, 3*time.Second); err != nil || r.Backend != "ann" {
			t.Fatalf("TCP to %v on lan: %+v, %v", vip, r, err)
		}
	}
	if s := a.Stats(); s.Received == before.Received || s.ARPReplies+s.NeighborAdvertisements == 0 {
		t.Fatalf("stats %+v: the lan's questions did not reach the Announcer", s)
	}
}

// frameAbout returns the address an ARP or neighbour discovery frame is
// about: the ARP sender IP, or the target of a solicitation or an
// advertisement.
func frameAbout(b []byte) (netip.Addr, bool) {
	f, err := ParseFrame(b)
	if err != nil {
		return netip.Addr{}, false
	}
	switch f.EtherType {
	case EtherTypeARP:
		if p, err := ParsePacket(f.Payload); err == nil {
			return p.SenderIP, true
		}
	case EtherTypeIPv6:
		if m, err := ParseNeighborMessage(f.Payload); err == nil {
			return m.Target, true
		}
	}
	return netip.Addr{}, false
}

// solicitOnWire sends a neighbour solicitation for target from h's
// interface ifname, to the target's solicited-node group as a resolving
// host does, and returns the link-layer addresses of the advertisements for
// target that come back to h within wait.
func solicitOnWire(t testing.TB, h *nettest.Host, ifname string, target netip.Addr, wait time.Duration) []net.HardwareAddr {
	t.Helper()
	c := rawSocket(t, h, ifname, unix.ETH_P_IPV6)
	ifc := h.Iface(ifname)
	frame := ndFrame(t, IPv6MulticastMAC(SolicitedNodeMulticast(target)), ifc.MAC, solicit(ifc.Addr6, target, ifc.MAC))
	if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: frame[:6]}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	var got []net.HardwareAddr
	buf := make([]byte, readBufferLen)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return got
		}
		f, err := ParseFrame(buf[:n])
		if err != nil || f.EtherType != EtherTypeIPv6 {
			continue
		}
		m, err := ParseNeighborMessage(f.Payload)
		if err == nil && m.Type == TypeNeighborAdvertisement && m.Target == target && m.Destination == ifc.Addr6 {
			got = append(got, m.LinkLayerAddr)
		}
	}
}

// recorder is a slog.Handler that keeps the records of the Announcer's
// answers, so that a test can tell which requests it answered.
type recorder struct {
	mu      sync.Mutex
	answers map[string]int // "<message> <to>"
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "to" {
			r.mu.Lock()
			r.answers[rec.Message+" "+a.Value.String()]++
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answers[key]
}

// rawSocket opens a packet socket for proto on h's interface ifname.
func rawSocket(t testing.TB, h *nettest.Host, ifname string, proto int) *packet.Conn {
	t.Helper()
	var c *packet.Conn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, proto, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sendRaw(t testing.TB, h *nettest.Host, frames ...[]byte) {
	t.Helper()
	c := rawSocket(t, h, "lan", unix.ETH_P_ARP)
	for _, f := range frames {
		if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: f[:6]}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernelMalformedAndTaggedFrames sends broken frames, VLAN-tagged
// requests and random bytes on the wire. The Announcer counts the broken
// ones, answers none of them, ignores requests tagged for another VLAN (the
// socket filter drops them, as the kernel has moved their tag into
// metadata), answers priority-tagged ones, and keeps serving.
func TestKernelMalformedAndTaggedFrames(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	rec := &recorder{answers: map[string]int{}}
	a := dialOn(t, ann, Config{AnnounceCount: 1, Logger: slog.New(rec)})
	acquireOn(t, a, kvip4, kvip6)
	cmac := client.MAC()
	// Each request comes from its own sender IP, so the records tell
	// which ones were answered.
	from := func(n byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, n}) }
	req := func(n byte) Packet { return request(cmac, from(n), kvip4) }
	snmMAC := IPv6MulticastMAC(SolicitedNodeMulticast(kvip6))
	ns := func(hop uint8) NeighborMessage {
		m := solicit(client.IP6(), kvip6, cmac)
		m.HopLimit = hop
		return m
	}
	badSum := ndFrame(t, snmMAC, cmac, ns(255))
	badSum[EthernetHeaderLen+42] ^= 0xa5
	zeroOpt := ndFrame(t, snmMAC, cmac, ns(255))
	zeroOpt[EthernetHeaderLen+65] = 0
	fixSum(zeroOpt[EthernetHeaderLen : EthernetHeaderLen+72])
	truncARP := arpFrame(t, broadcastMAC, cmac, req(50))[:EthernetHeaderLen+20]
	longHW := arpFrame(t, broadcastMAC, cmac, req(51))
	longHW[EthernetHeaderLen+4] = 8 // hardware address length 8

	malformed := [][]byte{truncARP, longHW, badSum, zeroOpt, ndFrame(t, snmMAC, cmac, ns(64))}
	before := a.Stats()
	sendRaw(t, client, malformed...)
	// Random frames that pass the socket filter: ARP, and IPv6 packets
	// whose next header is ICMPv6 and whose type is 135.
	rnd := make([][]byte, 0, 200)
	seed := uint32(7)
	next := func() byte { seed = seed*1664525 + 1013904223; return byte(seed >> 24) }
	for i := range 200 {
		b := make([]byte, 14+int(next())%120)
		for j := range b {
			b[j] = next()
		}
		copy(b, broadcastMAC)
		copy(b[6:], cmac)
		if i%2 == 0 {
			b[12], b[13] = 0x08, 0x06
		} else if len(b) > 55 {
			b[12], b[13], b[0x14], b[0x36] = 0x86, 0xdd, protocolICMPv6, byte(TypeNeighborSolicitation)
		}
		rnd = append(rnd, b)
	}
	sendRaw(t, client, rnd...)
	sendRaw(t, client,
		arpFrame(t, broadcastMAC, cmac, req(60), VLAN{ID: 5}),
		arpFrame(t, broadcastMAC, cmac, req(61), VLAN{Priority: 5}),
		arpFrame(t, broadcastMAC, cmac, req(62)),
	)
	// arping's own 802.1Q frames, too.
	noAnswer(t, client, kvip4, "-V", "5")

	deadline := time.Now().Add(3 * time.Second)
	for rec.count("arp reply "+from(62).String()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sentinel request was not answered")
		}
		time.Sleep(time.Millisecond)
	}
	if rec.count("arp reply "+from(61).String()) != 1 {
		t.Error("the priority-tagged (VLAN 0) request was not answered")
	}
	for _, n := range []byte{50, 51, 60} {
		if rec.count("arp reply "+from(n).String()) != 0 {
			t.Errorf("the request from %v was answered", from(n))
		}
	}
	s := a.Stats()
	if got := s.Malformed - before.Malformed; got < uint64(len(malformed)) {
		t.Errorf("Malformed grew by %d, want at least %d (stats %+v)", got, len(malformed), s)
	}
	if got := s.NeighborAdvertisements - before.NeighborAdvertisements; got != 0 {
		t.Errorf("%d advertisements for broken solicitations", got)
	}
	select {
	case <-a.Done():
		t.Fatalf("the Announcer stopped: %v", a.Err())
	default:
	}
	// Still serving.
	if macs := arping(t, client, "-c", "1", "-C", "1", "-w", "2", kvip4.String()); len(macs) != 1 {
		t.Fatalf("arping after the garbage: %v", macs)
	}
	if r, err := ask(client, kvip6, 3*time.Second); err != nil || r.Backend != "ann" {
		t.Fatalf("TCP to the IPv6 VIP after the garbage: %+v, %v", r, err)
	}
}

// TestKernelFilterKeepsDataTrafficAway: TCP traffic to the announcer host
// does not wake the Announcer's reader. IPv4 data never reaches sockets
// bound to ARP and IPv6; IPv6 data reaches the IPv6 socket and only the
// socket filter keeps it out.
func TestKernelFilterKeepsDataTrafficAway(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	a := dialOn(t, ann, Config{AnnounceCount: 1})
	acquireOn(t, a, kvip4, kvip6)
	for _, to := range []netip.Addr{ann.IP4(), ann.IP6()} {
		if _, err := ask(client, to, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		before := a.Stats().Received
		const n = 100
		c, err := client.Count(context.Background(), nettest.Probe{To: netip.AddrPortFrom(to, echoPort), N: n})
		if err != nil || c.Backends["ann"] != n {
			t.Fatalf("Count to %v = %+v, %v", to, c, err)
		}
		// Each connection is at least 5 frames into ann; at most a few
		// ARP or neighbour refreshes between client and ann may reach
		// the reader.
		if got := a.Stats().Received - before; got > 5 {
			t.Fatalf("the reader woke for %d frames during %d TCP connections to %v", got, n, to)
		}
	}
}

// TestKernelNUDProbesAnswered: when the client re-validates a stale entry
// (here at once: delay_first_probe_time is 0) it sends unicast probes (an ARP request to the MAC address it has, a
// neighbour solicitation to the VIP itself); the Announcer answers them and
// the entry becomes reachable.
func TestKernelNUDProbesAnswered(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	for _, fam := range []string{"ipv4", "ipv6"} {
		if err := client.SetSysctl("net/"+fam+"/neigh/lan/delay_first_probe_time", "0"); err != nil {
			t.Fatal(err)
		}
	}
	a := dialOn(t, ann, Config{AnnounceCount: 1})
	acquireOn(t, a, kvip4, kvip6)
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		setNeighbour(t, client, vip, ann.MAC()) // stale, so the next use probes
		before := a.Stats()
		// One UDP datagram uses the entry. Not TCP: its progress would
		// confirm the entry without a probe. (The answer is not awaited:
		// the echo server answers from the host's own address, not the
		// VIP's.)
		_, _ = client.Ask(context.Background(), nettest.Probe{Network: "udp", To: netip.AddrPortFrom(vip, echoPort), Timeout: 10 * time.Millisecond})
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, state := neighbour(t, client, vip)
			if state == netlink.NUD_REACHABLE {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("neighbour %v in state %#x, want reachable", vip, state)
			}
			time.Sleep(time.Millisecond)
		}
		s := a.Stats()
		if s.ARPReplies+s.NeighborAdvertisements == before.ARPReplies+before.NeighborAdvertisements {
			t.Fatalf("%v became reachable without an answer from the Announcer (stats %+v)", vip, s)
		}
	}
}

// TestKernelInterfaceDeletedStopsAnnouncer: `ip link del` under a running
// Announcer stops it with ErrInterfaceGone (through rtnetlink, at once),
// after which it owns nothing and tries nothing.
func TestKernelInterfaceDeletedStopsAnnouncer(t *testing.T) {
	_, ann := clientAndAnnouncer(t)
	a := dialOn(t, ann, Config{AnnounceCount: 2, ReannounceInterval: MinReannounceInterval})
	acquireOn(t, a, kvip4, kvip6)
	start := time.Now()
	ann.MustRun(t, "ip", "link", "del", "lan")
	waitDone(t, a)
	t.Logf("stopped %v after ip link del: %v", time.Since(start), a.Err())
	if err := a.Err(); !errors.Is(err, ErrInterfaceGone) {
		t.Fatalf("Err = %v, want ErrInterfaceGone", err)
	}
	if got := a.Owned(); len(got) != 0 {
		t.Fatalf("Owned = %v after the interface is gone", got)
	}
	if err := a.Acquire(context.Background(), kvip4); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrInterfaceGone) {
		t.Fatalf("Acquire = %v", err)
	}
	s := a.Stats()
	time.Sleep(3 * MinReannounceInterval)
	if s2 := a.Stats(); s2 != s {
		t.Fatalf("the stopped Announcer still works: %+v, then %+v", s, s2)
	}
}

// TestKernelLinkUpAnnouncesAgain: after the announcer host's link goes down
// and up again, a client whose entries went wrong meanwhile is put right by
// a new burst (there is no periodic re-announcement here, and the host's
// kernel announces nothing for a VIP on lo).
func TestKernelLinkUpAnnouncesAgain(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	a := dialOn(t, ann, Config{AnnounceCount: 2, AnnounceInterval: 50 * time.Millisecond})
	acquireOn(t, a, kvip4, kvip6)
	deadline := time.Now().Add(3 * time.Second)
	for a.Stats().Announcements < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the burst was not sent: %+v", a.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	ann.MustRun(t, "ip", "link", "set", "lan", "down")
	waitLinkDown(t, a, true)
	bogus := net.HardwareAddr{0x02, 0x1b, 0xee, 0, 0, 0x97}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		setNeighbour(t, client, vip, bogus)
	}
	time.Sleep(200 * time.Millisecond)
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		if mac, _ := neighbour(t, client, vip); !equalMAC(mac, bogus) {
			t.Fatalf("%v moved to %v while the announcer's link was down", vip, mac)
		}
	}
	if s := a.Stats(); s.Announcements != 4 || s.WriteErrors != 0 {
		t.Fatalf("stats %+v: nothing may be sent or tried while the link is down", s)
	}
	linkUpCorrects(t, client, ann, a, 8)
}

// linkUpCorrects brings ann's link up and waits until client maps both VIPs
// to ann and a has sent want announcements in all.
func linkUpCorrects(t *testing.T, client, ann *nettest.Host, a *Announcer, want uint64) {
	t.Helper()
	ann.MustRun(t, "ip", "link", "set", "lan", "up")
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		d := waitNeighbour(t, client, vip, ann.MAC(), 3*time.Second)
		t.Logf("%v back at the announcer %v after ip link set up", vip, d)
	}
	deadline := time.Now().Add(3 * time.Second)
	for a.Stats().Announcements < want {
		if time.Now().After(deadline) {
			t.Fatalf("no full burst after the link came up: %+v", a.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKernelDialOnLinkDown: an Announcer dialled on an interface that is
// down and told to acquire at once tries nothing (no write errors) and
// sends its burst when the link comes up.
func TestKernelDialOnLinkDown(t *testing.T) {
	client, ann := clientAndAnnouncer(t)
	bogus := net.HardwareAddr{0x02, 0x1b, 0xee, 0, 0, 0x98}
	for _, vip := range []netip.Addr{kvip4, kvip6} {
		setNeighbour(t, client, vip, bogus)
	}
	ann.MustRun(t, "ip", "link", "set", "lan", "down")
	a := dialOn(t, ann, Config{AnnounceCount: 2, AnnounceInterval: 50 * time.Millisecond})
	acquireOn(t, a, kvip4, kvip6)
	time.Sleep(100 * time.Millisecond)
	if s := a.Stats(); s.Announcements != 0 || s.WriteErrors != 0 {
		t.Fatalf("stats %+v: nothing may be sent or tried while the link is down", s)
	}
	linkUpCorrects(t, client, ann, a, 4)
	if s := a.Stats(); s.WriteErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// lanTaps returns the frame taps (ETH_P_ALL handlers) on h's interface "lan"
// that /proc/net/ptype lists in h's namespace. The kernel lists a device's
// taps there, but not the handlers bound to one protocol on one device.
func lanTaps(t testing.TB, h *nettest.Host) int {
	t.Helper()
	n := 0
	err := h.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/ptype")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "ALL" && f[1] == "lan" {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKernelNoTapOnTheInterface: the sockets Dial opens are bound to ARP
// and IPv6, not a tap on every frame of the interface (ETH_P_ALL), which
// would run the socket filter on all of its traffic, in and out, and clone
// every outgoing frame for it. A tap opened the way the Announcer used to
// shows that the check sees one.
func TestKernelNoTapOnTheInterface(t *testing.T) {
	lab := newLab(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "ann"}}})
	ann := lab.Host("ann")
	if n := lanTaps(t, ann); n != 0 {
		t.Fatalf("%d taps on lan before anything opened one", n)
	}
	dialOn(t, ann, Config{})
	if n := lanTaps(t, ann); n != 0 {
		t.Fatalf("Dial put %d taps on lan", n)
	}
	filter, err := Filter(ann.Iface("lan").Index)
	if err != nil {
		t.Fatal(err)
	}
	err = ann.Do(func() error {
		ifi, err := net.InterfaceByName("lan")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := lanTaps(t, ann); n != 1 {
		t.Fatalf("an ETH_P_ALL socket shows as %d taps: the check above proves nothing", n)
	}
}
