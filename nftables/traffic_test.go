package nftables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
)

// The traffic tests build: lb (host 1, forwarding), client (host 2) and
// backends be1..be3 (hosts 3..5) on one segment, 192.0.2.0/24 and
// 2001:db8::/64. The client reaches VIPs outside the segment through lb;
// lb DNATs with the engine and masquerades, so that replies come back
// through it.

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8:ff::10")
)

const (
	vipPort  = 80
	echoPort = 8080
)

type trafficLab struct {
	lab    *nettest.Lab
	lb     *nettest.Host
	client *nettest.Host
	be     []*nettest.Host
	engine *Engine
}

func newTrafficLab(t *testing.T, extra ...string) *trafficLab {
	t.Helper()
	nettest.RequireKernel(t, "nft")
	hosts := []nettest.HostSpec{{Name: "lb", Forwarding: true}, {Name: "client"}, {Name: "be1"}, {Name: "be2"}, {Name: "be3"}}
	for _, n := range extra {
		hosts = append(hosts, nettest.HostSpec{Name: n, Forwarding: true})
	}
	lab := nettest.New(t, nettest.Topology{Hosts: hosts})
	tl := &trafficLab{lab: lab, lb: lab.Host("lb"), client: lab.Host("client")}
	for _, n := range []string{"be1", "be2", "be3"} {
		h := lab.Host(n)
		if err := h.StartEcho(echoPort); err != nil {
			t.Fatal(err)
		}
		tl.be = append(tl.be, h)
	}
	for _, r := range []struct {
		dst netip.Prefix
		via netip.Addr
	}{{netip.PrefixFrom(vip4, 32), tl.lb.IP4()}, {netip.PrefixFrom(vip6, 128), tl.lb.IP6()}} {
		if err := tl.client.AddRoute(r.dst, r.via); err != nil {
			t.Fatal(err)
		}
	}
	tl.engine = dialIn(t, tl.lb, testTable)
	return tl
}

// natRuleset is a small service: VIP:80 dispatched through a verdict map to
// a service chain that marks for masquerade and DNATs with the given
// statement; postrouting masquerades marked packets.
func natRuleset(sets []Set, svc ...Stmt) *Ruleset {
	return &Ruleset{
		Sets: append([]Set{
			{Name: "services4", Key: []Type{TypeIPv4Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
				Elements: []Element{VMapElem(Goto("svc-web"), Addr(vip4), Proto(tcp), Port(vipPort)), VMapElem(Goto("svc-web"), Addr(vip4), Proto(udp), Port(vipPort))}},
			{Name: "services6", Key: []Type{TypeIPv6Addr, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
				Elements: []Element{VMapElem(Goto("svc-web6"), Addr(vip6), Proto(tcp), Port(vipPort))}},
		}, sets...),
		Chains: []Chain{
			{Name: "prerouting", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityDstNAT}, Rules: []Rule{
				R(VMap{Key: Concat{FieldIPDaddr, FieldL4Proto, FieldTHDport}, Map: "services4"}),
				R(VMap{Key: Concat{FieldIP6Daddr, FieldL4Proto, FieldTHDport}, Map: "services6"}),
			}},
			{Name: "postrouting", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPostrouting, Priority: PrioritySrcNAT}, Rules: []Rule{
				R(MarkMatch{Mask: 0x4000, Value: 0x4000}, Masquerade{FullyRandom: true}),
			}},
			{Name: "svc-web", Rules: []Rule{R(SetMark{Op: MarkOr, Value: 0x4000}), R(svc...)}},
			{Name: "svc-web6", Rules: []Rule{R(SetMark{Op: MarkOr, Value: 0x4000}),
				R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv6, Key: Numgen{Mod: 3}, Map: "eps6"})}},
		},
	}
}

// epsMaps returns the endpoint maps: slot i of weights goes to backend
// weights[i] (an index into be).
func (tl *trafficLab) epsMaps(slots []int) []Set {
	eps4 := Set{Name: "eps4", Key: []Type{TypeInteger}, Data: []Type{TypeIPv4Addr, TypeInetService}}
	eps6 := Set{Name: "eps6", Key: []Type{TypeInteger}, Data: []Type{TypeIPv6Addr, TypeInetService}}
	for i, b := range slots {
		eps4.Elements = append(eps4.Elements, MapElem([]Value{Int(uint32(i))}, Addr(tl.be[b].IP4()), Port(echoPort)))
	}
	for i, b := range tl.be {
		eps6.Elements = append(eps6.Elements, MapElem([]Value{Int(uint32(i))}, Addr(b.IP6()), Port(echoPort)))
	}
	return []Set{eps4, eps6}
}

func (tl *trafficLab) count(t *testing.T, to netip.AddrPort, network string, n int) nettest.Counts {
	t.Helper()
	c, err := tl.client.Count(context.Background(), nettest.Probe{Network: network, To: to, N: n})
	if err != nil {
		t.Fatal(err)
	}
	if c.Failures > 0 {
		t.Fatalf("%d of %d connections to %s failed: %v", c.Failures, n, to, c.Errors)
	}
	return c
}

// requireSource checks that every backend saw only the balancer as source
// (the packets were masqueraded).
func requireSource(t *testing.T, c nettest.Counts, want netip.Addr) {
	t.Helper()
	for be, srcs := range c.Sources {
		for src := range srcs {
			if src != want {
				t.Errorf("%s saw source %s, want the balancer %s (masquerade)", be, src, want)
			}
		}
	}
}

func requireDistribution(t *testing.T, c nettest.Counts, weights map[string]float64) {
	t.Helper()
	res, err := nettest.ChiSquare(c.Backends, weights)
	if err != nil {
		t.Fatalf("%v (counts %v)", err, c.Backends)
	}
	if res.P < 0.01 {
		t.Fatalf("distribution %v does not fit weights %v: chi2=%.2f p=%.4f", c.Backends, weights, res.Stat, res.P)
	}
	t.Logf("counts %v: chi2=%.2f p=%.3f", c.Backends, res.Stat, res.P)
}

// TestKernelTrafficNumgenNamedMap: numgen random into a named map of
// slots spreads connections evenly, and masquerading makes the backends
// see the balancer as source.
func TestKernelTrafficNumgenNamedMap(t *testing.T) {
	tl := newTrafficLab(t)
	rs := natRuleset(tl.epsMaps([]int{0, 1, 2}),
		Match{Field: FieldL4Proto, Values: []Value{Proto(tcp), Proto(udp)}}, DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 3}, Map: "eps4"})
	if _, err := tl.engine.Sync(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	c := tl.count(t, netip.AddrPortFrom(vip4, vipPort), "tcp", 3000)
	requireDistribution(t, c, map[string]float64{"be1": 1, "be2": 1, "be3": 1})
	requireSource(t, c, tl.lb.IP4())
	u := tl.count(t, netip.AddrPortFrom(vip4, vipPort), "udp", 600)
	requireDistribution(t, u, map[string]float64{"be1": 1, "be2": 1, "be3": 1})
}

// TestKernelTrafficWeights: slots in proportion 1:2:3 give traffic in
// proportion 1:2:3; then one endpoint flip (an element change) moves
// traffic off be1 entirely.
func TestKernelTrafficWeights(t *testing.T) {
	tl := newTrafficLab(t)
	ctx := context.Background()
	key := DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 6}, Map: "eps4"}
	rs := natRuleset(tl.epsMaps([]int{0, 1, 1, 2, 2, 2}), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, key)
	if _, err := tl.engine.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	c := tl.count(t, netip.AddrPortFrom(vip4, vipPort), "tcp", 3000)
	requireDistribution(t, c, map[string]float64{"be1": 1, "be2": 2, "be3": 3})

	// be1 leaves: its slot goes to be2. Only an element changes.
	rs2 := natRuleset(tl.epsMaps([]int{1, 1, 1, 2, 2, 2}), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, key)
	tx, err := tl.engine.Sync(ctx, rs2)
	if err != nil {
		t.Fatal(err)
	}
	if got := tx.Render(testTable); got != "add table inet lbkit-test\ndelete element inet lbkit-test eps4 { 0 }\nadd element inet lbkit-test eps4 { 0 : 192.0.2.4 . 8080 }\n" {
		t.Errorf("the flip sent more than one element change:\n%s", got)
	}
	c = tl.count(t, netip.AddrPortFrom(vip4, vipPort), "tcp", 600)
	if c.Backends["be1"] != 0 {
		t.Errorf("be1 still got %d connections after it was removed", c.Backends["be1"])
	}
	requireDistribution(t, c, map[string]float64{"be2": 1, "be3": 1})
}

// TestKernelTrafficAnonymousMap: an anonymous numgen map inside the rule
// balances the same way (its keys list byte-swapped in nft, see the
// package documentation, but the kernel data is right).
func TestKernelTrafficAnonymousMap(t *testing.T) {
	tl := newTrafficLab(t)
	var entries []Element
	for i, b := range tl.be {
		entries = append(entries, MapElem([]Value{Int(uint32(i))}, Addr(b.IP4()), Port(echoPort)))
	}
	rs := natRuleset(tl.epsMaps(nil), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}},
		DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 3}, Entries: entries})
	if _, err := tl.engine.Sync(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	requireDistribution(t, tl.count(t, netip.AddrPortFrom(vip4, vipPort), "tcp", 3000), map[string]float64{"be1": 1, "be2": 1, "be3": 1})
}

// TestKernelTrafficIPv6 balances an IPv6 VIP over the backends' IPv6
// addresses.
func TestKernelTrafficIPv6(t *testing.T) {
	tl := newTrafficLab(t)
	rs := natRuleset(tl.epsMaps([]int{0, 1, 2}), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}},
		DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 3}, Map: "eps4"})
	if _, err := tl.engine.Sync(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	c := tl.count(t, netip.AddrPortFrom(vip6, vipPort), "tcp", 3000)
	requireDistribution(t, c, map[string]float64{"be1": 1, "be2": 1, "be3": 1})
	requireSource(t, c, tl.lb.IP6())
}

// askFromPort makes one TCP connection from the client's address and the
// given source port, and returns the backend that answered.
func askFromPort(t *testing.T, h *nettest.Host, to netip.AddrPort, port int) string {
	t.Helper()
	var r nettest.Reply
	err := h.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: h.IP4().AsSlice(), Port: port},
			// The same source port serves two destinations in turn.
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
				if err != nil {
					return err
				}
				return serr
			}}
		c, err := d.Dial("tcp", to.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		r, err = nettest.ParseReply(string(buf[:n]))
		return err
	})
	if err != nil {
		t.Fatalf("from port %d to %s: %v", port, to, err)
	}
	return r.Backend
}

// TestKernelTrafficJHashConsistent programs two balancers separately with
// the same jhash map. A flow (client address and source port) gets the
// same backend from both, and flows spread over the backends.
func TestKernelTrafficJHashConsistent(t *testing.T) {
	tl := newTrafficLab(t, "lb2")
	lb2 := tl.lab.Host("lb2")
	vipB := netip.MustParseAddr("203.0.113.20")
	if err := tl.client.AddRoute(netip.PrefixFrom(vipB, 32), lb2.IP4()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash := DNATMap{Family: FamilyIPv4, Key: JHash{Fields: []Field{FieldIPSaddr, FieldTHSport}, Mod: 3, Seed: 0x5eed}, Map: "eps4"}
	rs := natRuleset(tl.epsMaps([]int{0, 1, 2}), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, hash)
	rs.Sets[0].Elements = append(rs.Sets[0].Elements, VMapElem(Goto("svc-web"), Addr(vipB), Proto(tcp), Port(vipPort)))
	if _, err := tl.engine.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	e2 := dialIn(t, lb2, testTable)
	rs2 := natRuleset(tl.epsMaps([]int{0, 1, 2}), Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, hash)
	rs2.Sets[0].Elements = append(rs2.Sets[0].Elements, VMapElem(Goto("svc-web"), Addr(vipB), Proto(tcp), Port(vipPort)))
	if _, err := e2.Sync(ctx, rs2); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for k := 0; k < 300; k++ {
		port := 41000 + k
		a := askFromPort(t, tl.client, netip.AddrPortFrom(vip4, vipPort), port)
		b := askFromPort(t, tl.client, netip.AddrPortFrom(vipB, vipPort), port)
		if a != b {
			t.Fatalf("flow from port %d: balancer 1 chose %s, balancer 2 chose %s", port, a, b)
		}
		counts[a]++
	}
	requireDistribution(t, nettest.Counts{Backends: counts}, map[string]float64{"be1": 1, "be2": 1, "be3": 1})
}

// TestKernelTrafficAffinity builds ClientIP affinity the kube-proxy way
// with the engine's primitives: a dynamic set with a timeout per endpoint,
// `ip saddr @aff-N goto ep-N` in the service chain, and
// `update @aff-N { ip saddr }` in the endpoint chain. One client keeps its
// backend; several clients are spread.
func TestKernelTrafficAffinity(t *testing.T) {
	tl := newTrafficLab(t)
	ctx := context.Background()
	var sets []Set
	var svc []Rule
	var eps []Chain
	var entries []Element
	for i, b := range tl.be {
		set, ep := fmt.Sprintf("aff-%d", i), fmt.Sprintf("ep-%d", i)
		sets = append(sets, Set{Name: set, Key: []Type{TypeIPv4Addr}, Dynamic: true, Timeout: true, DefaultTimeout: time.Hour})
		svc = append(svc, R(Lookup{Fields: []Field{FieldIPSaddr}, Set: set}, Goto(ep)))
		entries = append(entries, VMapElem(Goto(ep), Int(uint32(i))))
		eps = append(eps, Chain{Name: ep, Rules: []Rule{
			R(SetUpdate{Op: OpUpdate, Set: set, Key: []Field{FieldIPSaddr}, Timeout: time.Hour}),
			R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNAT{Addr: b.IP4(), Port: echoPort}),
		}})
	}
	svc = append(svc, R(VMap{Key: Numgen{Mod: 3}, Entries: entries}))
	rs := natRuleset(append(sets, tl.epsMaps(nil)...), Counter{})
	rs.Chains[2].Rules = append([]Rule{R(SetMark{Op: MarkOr, Value: 0x4000})}, svc...)
	rs.Chains = append(rs.Chains, eps...)
	if _, err := tl.engine.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	c := tl.count(t, netip.AddrPortFrom(vip4, vipPort), "tcp", 200)
	if len(c.Backends) != 1 {
		t.Fatalf("one client reached %v, want one backend", c.Backends)
	}
	// The engine reads the affinity entry back from the dynamic set.
	got, err := tl.engine.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entriesSeen := 0
	for _, s := range got.Sets {
		if s.Dynamic {
			for _, e := range s.Elements {
				if e.Key[0].AsAddr() != tl.client.IP4() {
					t.Errorf("affinity set %s holds %s", s.Name, e.keyString())
				}
				entriesSeen++
			}
		}
	}
	if entriesSeen != 1 {
		t.Errorf("found %d affinity entries, want 1", entriesSeen)
	}
	// Other client addresses are spread over the backends.
	seen := map[string]bool{}
	for k := 0; k < 40; k++ {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + k)})
		if err := tl.client.AddAddr("lan", netip.PrefixFrom(src, 24)); err != nil {
			t.Fatal(err)
		}
		c, err := tl.client.Count(ctx, nettest.Probe{To: netip.AddrPortFrom(vip4, vipPort), From: src, N: 5})
		if err != nil || c.Failures > 0 {
			t.Fatalf("client %s: %v %v", src, err, c.Errors)
		}
		if len(c.Backends) != 1 {
			t.Fatalf("client %s reached %v, want one backend", src, c.Backends)
		}
		for b := range c.Backends {
			seen[b] = true
		}
	}
	if len(seen) != 3 {
		t.Errorf("40 clients reached only %v", seen)
	}
}
