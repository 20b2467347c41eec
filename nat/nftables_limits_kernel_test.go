package nat_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nat"
	"github.com/lbkit/lbkit/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel tests of the nftables syncer's limits: big affinity services,
// exact weights read back, the disruption of consistent hashing at the
// default table size, conntrack cleanup in the engine's namespace, and
// the partial-sync random walk on the kernel.

// nftIn loads an nft script in h's namespace.
func nftIn(t *testing.T, h *nettest.Host, script string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.nft")
	must(t, os.WriteFile(path, []byte(script), 0o600))
	h.MustRun(t, "nft", "-f", path)
}

// limitsLab: client on "wan", lb routing between "wan" and "pods", one
// backend "be" on "pods" whose echo server answers on port 8080 and, by a
// redirect, on every port from 10000 to 10999, so that a service can have
// a thousand endpoints that all answer.
type limitsLab struct {
	client, lb, be *nettest.Host
	cfg            nat.Config
}

// podsLab builds client (on "wan"), lb (routing between "wan" and "pods")
// and the named hosts on "pods".
func podsLab(t *testing.T, onPods ...string) *nettest.Lab {
	nettest.RequireKernel(t, "nft")
	hosts := []nettest.HostSpec{
		{Name: "client", Segments: []string{"wan"}},
		{Name: "lb", Segments: []string{"wan", "pods"}, Forwarding: true},
	}
	for _, name := range onPods {
		hosts = append(hosts, nettest.HostSpec{Name: name, Segments: []string{"pods"}})
	}
	return nettest.New(t, nettest.Topology{
		Segments: []nettest.Segment{
			{Name: "wan", Prefix4: netip.MustParsePrefix("198.51.100.0/24")},
			{Name: "pods", Prefix4: netip.MustParsePrefix("192.0.2.0/24")},
		},
		Hosts: hosts,
	})
}

func newLimitsLab(t *testing.T) *limitsLab {
	lab := podsLab(t, "be")
	l := &limitsLab{client: lab.Host("client"), lb: lab.Host("lb"), be: lab.Host("be"),
		cfg: nat.Config{Node: lb.Node{Name: "lb"}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}
	must(t, l.be.StartEcho(port))
	nftIn(t, l.be, fmt.Sprintf("table ip rdr {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat;\n\t\tmeta l4proto { tcp, udp } th dport 10000-10999 redirect to :%d\n\t}\n}\n", port))
	must(t, l.client.AddRoute(serviceCIDR4, l.lb.Iface("wan").Addr4))
	return l
}

// syncer returns a syncer programming lbkit's table in h.
func (l *limitsLab) syncer(t *testing.T, h *nettest.Host, opts nat.NFTablesOptions) (*nat.NFTables, *nftables.Engine) {
	t.Helper()
	eng, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(h.NamespaceFd()))
	must(t, err)
	t.Cleanup(func() { eng.Close() })
	look, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(h.NamespaceFd()))
	must(t, err)
	t.Cleanup(func() { look.Close() })
	if opts.Conntrack == nil {
		opts.Conntrack = nat.NetlinkConntrack{Handle: h.Netlink()}
	}
	s, err := nat.NewNFTables(l.cfg, eng, opts)
	must(t, err)
	return s, look
}

// beEndpoints returns n endpoints on be, ports 10000.. (by the
// EndpointSlice convention: a port named after the service port).
func (l *limitsLab) beEndpoints(n int) []lb.Endpoint {
	eps := make([]lb.Endpoint, n)
	for i := range eps {
		eps[i] = lb.Endpoint{Addr: l.be.IP4(), Ready: true, NodeName: "node-be",
			Ports: []lb.EndpointPort{{Name: "http", Protocol: lb.TCP, Port: uint16(10000 + i)}}}
	}
	return eps
}

// answers checks that n connections to the service all reach be.
func (l *limitsLab) answers(t *testing.T, svc nat.ServiceEndpoints, n int) {
	t.Helper()
	c, err := l.client.Count(context.Background(), nettest.Probe{To: clusterIP(svc), N: n, Timeout: 2 * time.Second})
	must(t, err)
	if c.Failures != 0 || c.Backends["be"] != n {
		t.Errorf("%s: %d of %d connections answered (%v, failures %d: %v)", svc.Service.Name, c.Backends["be"], n, c.Backends, c.Failures, c.Errors)
	}
}

// slotCounts reads the affinity slot map of svc's service chain back from
// the kernel: the number of slots each endpoint chain owns.
func slotCounts(t *testing.T, look *nftables.Engine, svc lb.ServicePortName) (int, map[string]int) {
	t.Helper()
	rs, err := look.Read(context.Background())
	must(t, err)
	chain := rs.Chain(serviceChain(t, rs, svc))
	for _, r := range chain.Rules {
		for _, st := range r.Stmts {
			vm, ok := st.(nftables.VMap)
			if !ok {
				continue
			}
			set := rs.Set(vm.Map)
			if set == nil {
				t.Fatalf("%s: the rule %s does not use a named map of the table", svc, vm)
			}
			counts := map[string]int{}
			for _, e := range set.Elements {
				counts[e.Verdict.Chain]++
			}
			return len(set.Elements), counts
		}
	}
	t.Fatalf("%s: no verdict map in its service chain", svc)
	return 0, nil
}

// TestNFTablesAffinityThousandEndpoints: a ClientIP-affinity service with
// 1000 endpoints syncs in both modes (its slots no longer fit an anonymous
// map of one netlink message, nor a 251-slot table), serves traffic, and a
// later sync that adds another service works; the weights 100:157 of an
// affinity port are exact in the kernel's map.
func TestNFTablesAffinityThousandEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  nat.NFTablesOptions
		slots int
	}{
		{"random", nat.NFTablesOptions{}, 1000},
		{"consistent", nat.NFTablesOptions{Consistent: &nat.ConsistentHashing{}}, nat.DefaultConsistentTableSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := newLimitsLab(t)
			s, look := l.syncer(t, l.lb, tc.opts)
			sticky := service("sticky", 1, lb.IPv4, l.beEndpoints(1000))
			sticky.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: 600}
			weighted := service("weighted", 2, lb.IPv4, l.beEndpoints(2))
			weighted.Service.SessionAffinity = sticky.Service.SessionAffinity
			weighted.Endpoints[0].Weight, weighted.Endpoints[1].Weight = 100, 157
			start := time.Now()
			st, err := s.Sync(ctx, []nat.ServiceEndpoints{sticky, weighted})
			must(t, err)
			t.Logf("cold sync of 1000 affinity endpoints: %v (%d ops)", time.Since(start), st.Ops)
			n, counts := slotCounts(t, look, portName("sticky"))
			if n != tc.slots || len(counts) != 1000 {
				t.Errorf("sticky: %d slots over %d endpoint chains, want %d over 1000", n, len(counts), tc.slots)
			}
			l.answers(t, sticky, 10)

			if tc.opts.Consistent == nil {
				_, counts = slotCounts(t, look, portName("weighted"))
				var got []int
				for _, c := range counts {
					got = append(got, c)
				}
				slices.Sort(got)
				if !slices.Equal(got, []int{100, 157}) {
					t.Errorf("weights 100:157 on an affinity port: slots %v, want [100 157]", counts)
				}
			}

			other := service("other", 3, lb.IPv4, l.beEndpoints(3))
			start = time.Now()
			st, err = s.Sync(ctx, []nat.ServiceEndpoints{sticky, weighted, other})
			must(t, err)
			t.Logf("adding another service next to it: %v (%d ops, full %v)", time.Since(start), st.Ops, st.Full)
			l.answers(t, other, 5)
			l.answers(t, sticky, 5)
			// A full sync finds the table as the partial one left it.
			if st, err := s.FullSync(ctx, []nat.ServiceEndpoints{sticky, weighted, other}); err != nil || st.Ops != 0 {
				t.Errorf("full sync after: %+v, %v; want nothing to repair", st, err)
			}
		})
	}
}

// TestNFTablesConsistentDisruptionDefault: at the default table size,
// removing one backend of ten moves the flows Maglev's table predicts
// (its reassigned slots), which is at most 13% (the old default of 251
// slots moved 16.9% in this test's shape).
func TestNFTablesConsistentDisruptionDefault(t *testing.T) {
	l := newConsistentLab(t)
	ctx := context.Background()
	h := l.lbs[0]
	eng, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(h.NamespaceFd()))
	must(t, err)
	t.Cleanup(func() { eng.Close() })
	cfg := nat.Config{Node: lb.Node{Name: "lb"}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	s, err := nat.NewNFTables(cfg, eng, nat.NFTablesOptions{Consistent: &nat.ConsistentHashing{}, Conntrack: nat.NetlinkConntrack{Handle: h.Netlink()}})
	must(t, err)
	l.via(t, 0)
	const n = 3000
	sync := func(svc nat.ServiceEndpoints) []string {
		_, err := s.Sync(ctx, []nat.ServiceEndpoints{svc})
		must(t, err)
		must(t, h.Netlink().ConntrackTableFlush(netlink.ConntrackTable))
		return l.flows(t, n)
	}
	before := sync(l.svc)
	fewer := l.svc
	fewer.Endpoints = l.svc.Endpoints[:9]
	after := sync(fewer)
	moved := 0
	for f := range n {
		if before[f] != after[f] {
			moved++
		}
	}
	m, m9 := maglevOf(t, l.svc.Endpoints, 0), maglevOf(t, fewer.Endpoints, 0)
	predicted := float64(m.Changed(m9)) / float64(m.Size())
	share := float64(moved) / n
	t.Logf("M = %d: removing 1 of 10 backends moved %d of %d flows (%.1f%%; Maglev predicts %.1f%%)", m.Size(), moved, n, 100*share, 100*predicted)
	if m.Size() != nat.DefaultConsistentTableSize || predicted > 0.125 {
		t.Errorf("the default table (%d slots) reassigns %.1f%% of its slots; want at most 12.5%%", m.Size(), 100*predicted)
	}
	// 3000 flows hash into the table at random: the share is binomial
	// around the prediction, sd 0.6 points; 2.5 points is four of them.
	if share > 0.13 || share-predicted > 0.025 || predicted-share > 0.025 {
		t.Errorf("%.1f%% of the flows moved; want within 2.5 points of %.1f%% and at most 13%%", 100*share, 100*predicted)
	}
}

// TestNFTablesConntrackDefaultInEngineNamespace: with Conntrack nil and an
// engine dialled into the balancer's namespace, the stale UDP flow is
// deleted there, not in the namespace of the thread that calls Sync, which
// here holds a flow that looks the same (same original destination, same
// reply source).
func TestNFTablesConntrackDefaultInEngineNamespace(t *testing.T) {
	ctx := context.Background()
	lab := podsLab(t, "be1", "be2", "caller")
	client, lbh, caller := lab.Host("client"), lab.Host("lb"), lab.Host("caller")
	bes := map[string]*nettest.Host{"be1": lab.Host("be1"), "be2": lab.Host("be2")}
	for _, be := range bes {
		must(t, be.StartEcho(port))
	}
	must(t, client.AddRoute(serviceCIDR4, lbh.Iface("wan").Addr4))
	svc := service("udp", 1, lb.IPv4, []lb.Endpoint{{Addr: bes["be1"].IP4(), Ready: true}, {Addr: bes["be2"].IP4(), Ready: true}})
	svc.Service.Ports[0].Protocol = lb.UDP
	vip := clusterIP(svc)

	eng, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(lbh.NamespaceFd()))
	must(t, err)
	t.Cleanup(func() { eng.Close() })
	s, err := nat.NewNFTables(nat.Config{Node: lb.Node{Name: "lb"}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, eng, nat.NFTablesOptions{})
	must(t, err)
	// Every sync runs on a thread in caller's namespace.
	sync := func(svc nat.ServiceEndpoints) nat.NFTablesStats {
		t.Helper()
		var st nat.NFTablesStats
		must(t, caller.Do(func() error {
			var err error
			st, err = s.Sync(ctx, []nat.ServiceEndpoints{svc})
			return err
		}))
		return st
	}
	sync(svc)
	conn, err := client.DialContext(ctx, "udp", vip.String())
	must(t, err)
	defer conn.Close()
	first := askOn(t, conn)
	gone := netip.AddrPortFrom(bes[first].IP4(), port)

	// caller translates the VIP to the same endpoint on its own, so its
	// conntrack holds a flow with the same original destination and reply
	// source as the balancer's.
	nftIn(t, caller, fmt.Sprintf("table ip mine {\n\tchain output {\n\t\ttype nat hook output priority -100;\n\t\tip daddr %s udp dport %d dnat to %s\n\t}\n}\n", vip.Addr(), vip.Port(), gone))
	must(t, caller.AddRoute(serviceCIDR4, lbh.Iface("pods").Addr4))
	mine, err := caller.DialContext(ctx, "udp", vip.String())
	must(t, err)
	defer mine.Close()
	if got := askOn(t, mine); got != first {
		t.Fatalf("caller's own translation reached %s, want %s", got, first)
	}
	flowsTo := func(h *nettest.Host) int {
		t.Helper()
		flows, err := h.Netlink().ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		must(t, err)
		n := 0
		for _, f := range flows {
			a, _ := netip.AddrFromSlice(f.Reverse.SrcIP)
			if f.Forward.Protocol == unix.IPPROTO_UDP && a == gone.Addr() && f.Reverse.SrcPort == gone.Port() {
				n++
			}
		}
		return n
	}
	if flowsTo(lbh) != 1 || flowsTo(caller) != 1 {
		t.Fatalf("before: %d flows to %s on lb, %d on caller; want 1 and 1", flowsTo(lbh), gone, flowsTo(caller))
	}

	// first goes away.
	var left []lb.Endpoint
	for _, e := range svc.Endpoints {
		if e.Addr != gone.Addr() {
			left = append(left, e)
		}
	}
	svc.Endpoints = left
	st := sync(svc)
	if st.FlowsDeleted != 1 || flowsTo(lbh) != 0 {
		t.Errorf("after removing %s: %d flows deleted, %d left on lb; want 1 deleted, none left", first, st.FlowsDeleted, flowsTo(lbh))
	}
	if n := flowsTo(caller); n != 1 {
		t.Errorf("the caller's namespace has %d of its flow to %s left, want 1: the cleanup ran there", n, gone)
	}
	if got := askOn(t, conn); got == first {
		t.Errorf("the client's flow still reaches the removed %s", first)
	}
}

// walkMutations change walk service i in the ways the layout depends on.
var walkMutations = []struct {
	what  string
	apply func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand)
}{
	{"add an endpoint", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + rng.IntN(100))})
		if !slices.ContainsFunc(svc.Endpoints, func(e lb.Endpoint) bool { return e.Addr == a }) {
			svc.Endpoints = append(slices.Clip(svc.Endpoints), lb.Endpoint{Addr: a, Ready: true, NodeName: []string{"lb", "other"}[rng.IntN(2)]})
		}
	}},
	{"remove an endpoint", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			k := rng.IntN(len(svc.Endpoints))
			svc.Endpoints = slices.Delete(slices.Clone(svc.Endpoints), k, k+1)
		}
	}},
	{"move an endpoint", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + rng.IntN(100))})
		if len(svc.Endpoints) > 0 && !slices.ContainsFunc(svc.Endpoints, func(e lb.Endpoint) bool { return e.Addr == a }) {
			svc.Endpoints = slices.Clone(svc.Endpoints)
			svc.Endpoints[0].Addr = a
		}
	}},
	{"change a weight", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			svc.Endpoints = slices.Clone(svc.Endpoints)
			svc.Endpoints[0].Weight = uint32(1 + rng.IntN(200))
		}
	}},
	{"toggle readiness", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			svc.Endpoints = slices.Clone(svc.Endpoints)
			svc.Endpoints[0].Ready = !svc.Endpoints[0].Ready
		}
	}},
	{"toggle ClientIP affinity", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		if svc.Service.SessionAffinity.Enabled() {
			svc.Service.SessionAffinity = lb.SessionAffinity{}
		} else {
			svc.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: int32(60 + step)}
		}
	}},
	{"toggle the internal traffic policy", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		svc.Service.InternalTrafficPolicy = walkOther(svc.Service.InternalTrafficPolicy)
	}},
	{"toggle the external traffic policy", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		walkLoadBalancer(svc, i)
		svc.Service.ExternalTrafficPolicy = walkOther(svc.Service.ExternalTrafficPolicy)
	}},
	{"toggle source ranges", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		walkLoadBalancer(svc, i)
		if len(svc.Service.LoadBalancerSourceRanges) > 0 {
			svc.Service.LoadBalancerSourceRanges = nil
		} else {
			svc.Service.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")}
		}
	}},
	{"toggle the protocol", func(svc *nat.ServiceEndpoints, i, step int, rng *rand.Rand) {
		svc.Service.Ports = slices.Clone(svc.Service.Ports)
		if p := &svc.Service.Ports[0]; p.Protocol == lb.UDP {
			p.Protocol = lb.TCP
		} else {
			p.Protocol = lb.UDP
		}
	}},
}

func walkOther(p lb.TrafficPolicy) lb.TrafficPolicy {
	if p == lb.TrafficPolicyLocal {
		return lb.TrafficPolicyCluster
	}
	return lb.TrafficPolicyLocal
}

// walkLoadBalancer makes walk service i a LoadBalancer with a node port.
func walkLoadBalancer(svc *nat.ServiceEndpoints, i int) {
	if svc.Service.Type == lb.ServiceTypeLoadBalancer {
		return
	}
	svc.Service.Type = lb.ServiceTypeLoadBalancer
	svc.Service.Ports = slices.Clone(svc.Service.Ports)
	svc.Service.Ports[0].NodePort = uint16(30100 + i)
	svc.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(130 + i)})}}
}

// TestNFTablesPartialSyncsKernel is the random walk of
// TestNFTablesPartialSyncEqualsFullSync on the kernel: services change in
// the ways the layout depends on, go and come back, each change a partial
// sync; every ten steps a full sync, which reads the table back and diffs
// it against the whole desired state, must find nothing to repair.
func TestNFTablesPartialSyncsKernel(t *testing.T) {
	nettest.RequireKernel(t, "nft")
	for _, opts := range []nat.NFTablesOptions{{EndpointMaps: 4}, {EndpointMaps: 3, Consistent: &nat.ConsistentHashing{TableSize: 13}}} {
		t.Run(fmt.Sprintf("consistent=%v", opts.Consistent != nil), func(t *testing.T) {
			ctx := context.Background()
			lab := nettest.New(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "lb", Forwarding: true}}})
			h := lab.Host("lb")
			eng, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(h.NamespaceFd()))
			must(t, err)
			t.Cleanup(func() { eng.Close() })
			opts.Conntrack = nat.NetlinkConntrack{Handle: h.Netlink()}
			cfg := nat.Config{Node: lb.Node{Name: "lb"}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
			s, err := nat.NewNFTables(cfg, eng, opts)
			must(t, err)
			rng := rand.New(rand.NewPCG(3, 4))
			var services []nat.ServiceEndpoints
			for i := range 20 {
				svc := service(fmt.Sprintf("walk-%d", i), i+1, lb.IPv4, nil)
				for k := range 1 + i%4 {
					svc.Endpoints = append(svc.Endpoints, lb.Endpoint{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + 4*i + k)}), Ready: true, NodeName: "lb"})
				}
				services = append(services, svc)
			}
			removed := map[int]bool{}
			current := func() []nat.ServiceEndpoints {
				var out []nat.ServiceEndpoints
				for i := range services {
					if !removed[i] {
						out = append(out, services[i])
					}
				}
				return out
			}
			_, err = s.Sync(ctx, current())
			must(t, err)
			start := time.Now()
			fulls := 0
			for step := range 200 {
				i := rng.IntN(len(services))
				var what string
				switch m := rng.IntN(len(walkMutations) + 1); {
				case removed[i] || m == len(walkMutations):
					what = map[bool]string{true: "re-add the service", false: "remove the service"}[removed[i]]
					removed[i] = !removed[i]
				default:
					what = walkMutations[m].what
					walkMutations[m].apply(&services[i], i, step, rng)
				}
				st, err := s.Sync(ctx, current())
				if err != nil {
					t.Fatalf("step %d (%s of walk-%d): %v", step, what, i, err)
				}
				if st.Full {
					t.Fatalf("step %d (%s): a full sync, want partial ones", step, what)
				}
				if step%10 == 9 {
					st, err := s.FullSync(ctx, current())
					if err != nil || st.Ops != 0 {
						t.Fatalf("step %d (%s of walk-%d): full sync %+v, %v; want nothing to repair", step, what, i, st, err)
					}
					fulls++
				}
			}
			t.Logf("200 partial syncs and %d full ones in %v", fulls, time.Since(start))
		})
	}
}
