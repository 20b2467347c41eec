package nat

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nftables"
)

// recorder is the nftables Fake, remembering the last batch it was given.
type recorder struct {
	*nftables.Fake
	last    string // the last Apply, rendered
	applies int
}

func (r *recorder) Apply(ctx context.Context, tx *nftables.Transaction) error {
	r.last = tx.Render(r.Table())
	r.applies++
	return r.Fake.Apply(ctx, tx)
}

func newFakeNFT(t *testing.T, cfg Config, opts NFTablesOptions) (*NFTables, *recorder) {
	t.Helper()
	rec := &recorder{Fake: nftables.NewFake(DefaultNFTablesTable)}
	if opts.Conntrack == nil {
		opts.Conntrack = &recordingConntrack{}
	}
	s, err := NewNFTables(cfg, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

func mustSyncNFT(t *testing.T, s *NFTables, services []ServiceEndpoints) NFTablesStats {
	t.Helper()
	st, err := s.Sync(context.Background(), services)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestNFTablesGolden syncs every feature into the Fake and compares the
// table with the reviewed golden file; Render (the dry run) gives the same
// table, before and after the sync.
func TestNFTablesGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		opts   NFTablesOptions
		svcs   func() []ServiceEndpoints
	}{
		{"nft-table.golden", NFTablesOptions{}, goldenServices},
		{"nft-consistent.golden", NFTablesOptions{Consistent: &ConsistentHashing{TableSize: 7}}, func() []ServiceEndpoints {
			all := goldenServices()
			return []ServiceEndpoints{all[0], all[1], all[2]} // web, weighted, front (affinity)
		}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			s, fake := newFakeNFT(t, goldenConfig(), tc.opts)
			dry, err := s.Render(tc.svcs())
			if err != nil {
				t.Fatal(err)
			}
			st := mustSyncNFT(t, s, tc.svcs())
			if !st.Full || st.Ops == 0 {
				t.Errorf("first sync: %+v, want a full sync that sent something", st)
			}
			got := fake.Dump()
			checkGolden(t, tc.golden, []byte(got))
			if dry != got {
				t.Errorf("Render before the sync differs from what the sync programmed:\n%s", lineDiff(dry, got))
			}
			if again, _ := s.Render(tc.svcs()); again != got {
				t.Errorf("Render after the sync differs from the table:\n%s", lineDiff(again, got))
			}
		})
	}
}

// bulkServices is goldenServices plus n simple ones.
func bulkServices(n int) []ServiceEndpoints {
	services := goldenServices()
	for i := range n {
		services = append(services, clusterIPService("bulk", fmt.Sprintf("svc-%d", i), fmt.Sprintf("198.51.100.%d", 100+i), 80,
			fmt.Sprintf("192.0.2.%d", 100+i), fmt.Sprintf("192.0.2.%d", 150+i)))
	}
	return services
}

// serviceMutations change one bulk service (number i) in every way the
// layout depends on. Frontend, policy, source-range and affinity changes
// are only valid on LoadBalancer services with a node port, so those first
// make the service one.
var serviceMutations = []struct {
	what  string
	apply func(svc *ServiceEndpoints, i, step int, rng *rand.Rand)
}{
	{"add an endpoint", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + step%50)})
		if !slices.ContainsFunc(svc.Endpoints, func(e lb.Endpoint) bool { return e.Addr == a }) {
			svc.Endpoints = append(svc.Endpoints, lb.Endpoint{Addr: a, Ready: true, NodeName: "node-a"})
		}
	}},
	{"remove an endpoint", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			svc.Endpoints = svc.Endpoints[1:]
		}
	}},
	{"move an endpoint", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) == 0 {
			return
		}
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + rng.IntN(50))})
		if !slices.ContainsFunc(svc.Endpoints, func(e lb.Endpoint) bool { return e.Addr == a }) {
			svc.Endpoints = slices.Clone(svc.Endpoints)
			svc.Endpoints[0].Addr = a
		}
	}},
	{"change a weight", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			svc.Endpoints[0].Weight = uint32(1 + rng.IntN(5))
		}
	}},
	{"toggle readiness", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if len(svc.Endpoints) > 0 {
			svc.Endpoints[0].Ready = !svc.Endpoints[0].Ready
		}
	}},
	{"make it a LoadBalancer / toggle its ipMode", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if loadBalancerize(svc, i) {
			return
		}
		if ing := &svc.Service.LoadBalancerIngress[0]; ing.IPMode == lb.IPModeProxy {
			ing.IPMode = lb.IPModeVIP
		} else {
			ing.IPMode = lb.IPModeProxy
		}
	}},
	{"toggle the external traffic policy", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		loadBalancerize(svc, i)
		svc.Service.ExternalTrafficPolicy = otherPolicy(svc.Service.ExternalTrafficPolicy)
	}},
	{"toggle the internal traffic policy", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		svc.Service.InternalTrafficPolicy = otherPolicy(svc.Service.InternalTrafficPolicy)
	}},
	{"toggle ClientIP affinity", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		if svc.Service.SessionAffinity.Enabled() {
			svc.Service.SessionAffinity = lb.SessionAffinity{}
		} else {
			svc.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: int32(60 + step)}
		}
	}},
	{"toggle source ranges", func(svc *ServiceEndpoints, i, step int, rng *rand.Rand) {
		loadBalancerize(svc, i)
		if len(svc.Service.LoadBalancerSourceRanges) > 0 {
			svc.Service.LoadBalancerSourceRanges = nil
		} else {
			svc.Service.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")}
		}
	}},
}

// loadBalancerize makes bulk service i a LoadBalancer with a node port and
// an ingress IP, and reports whether it was not one already.
func loadBalancerize(svc *ServiceEndpoints, i int) bool {
	if svc.Service.Type == lb.ServiceTypeLoadBalancer {
		return false
	}
	svc.Service.Type = lb.ServiceTypeLoadBalancer
	svc.Service.Ports = slices.Clone(svc.Service.Ports)
	svc.Service.Ports[0].NodePort = uint16(30100 + i)
	svc.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)})}}
	return true
}

func otherPolicy(p lb.TrafficPolicy) lb.TrafficPolicy {
	if p == lb.TrafficPolicyLocal {
		return lb.TrafficPolicyCluster
	}
	return lb.TrafficPolicyLocal
}

// TestNFTablesPartialSyncEqualsFullSync changes services at random in every
// way the layout depends on, removes and re-adds them. After every partial
// sync, the table (built by deltas of the incrementally compiled services)
// must be exactly what Render says a full sync of all services (through
// Compile) makes it, and a full sync must find nothing to repair.
func TestNFTablesPartialSyncEqualsFullSync(t *testing.T) {
	for _, opts := range []NFTablesOptions{{EndpointMaps: 4}, {EndpointMaps: 3, Consistent: &ConsistentHashing{TableSize: 13}}} {
		t.Run(fmt.Sprintf("consistent=%v", opts.Consistent != nil), func(t *testing.T) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, 2))
			s, fake := newFakeNFT(t, goldenConfig(), opts)
			services := bulkServices(20)
			bulk := len(goldenServices())
			removed := map[int]bool{}
			mustSyncNFT(t, s, services)
			for step := range 150 {
				i := bulk + rng.IntN(20)
				var what string
				switch m := rng.IntN(len(serviceMutations) + 1); {
				case removed[i] || m == len(serviceMutations):
					what = map[bool]string{true: "re-add the service", false: "remove the service"}[removed[i]]
					removed[i] = !removed[i]
				default:
					what = serviceMutations[m].what
					serviceMutations[m].apply(&services[i], i, step, rng)
				}
				var current []ServiceEndpoints
				for j := range services {
					if !removed[j] {
						current = append(current, services[j])
					}
				}
				applies := fake.applies
				st, err := s.Sync(ctx, current)
				if err != nil {
					t.Fatalf("step %d (%s): %v", step, what, err)
				}
				if st.Full || st.Changed > 1 {
					t.Fatalf("step %d (%s): %+v, want a partial sync of at most one port", step, what, st)
				}
				if st.Ops == 0 && fake.applies != applies {
					t.Errorf("step %d (%s): nothing to do, yet a batch was sent:\n%s", step, what, fake.last)
				}
				want, err := s.Render(current)
				if err != nil {
					t.Fatal(err)
				}
				if got := fake.Dump(); got != want {
					t.Fatalf("step %d (%s): the partial sync diverged from a full sync:\n%s\nlast batch:\n%s", step, what, lineDiff(want, got), fake.last)
				}
			}
			var current []ServiceEndpoints
			for j := range services {
				if !removed[j] {
					current = append(current, services[j])
				}
			}
			st, err := s.FullSync(ctx, current)
			if err != nil || st.Ops != 0 {
				t.Fatalf("a full sync after the partial ones: %+v, %v; want nothing to repair", st, err)
			}
		})
	}
}

// TestNFTablesEndpointChangeTouchesOnlyItsElements: an endpoint that moves
// to another address is one element out and one in (plus the hairpin
// elements of the addresses); a change of the number of endpoints rewrites
// only the service's chain; nothing else of the table is touched.
func TestNFTablesEndpointChangeTouchesOnlyItsElements(t *testing.T) {
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{})
	services := goldenServices()
	mustSyncNFT(t, s, services)
	services[0].Endpoints[2].Addr = ip("192.0.2.13")
	st := mustSyncNFT(t, s, services)
	want := `add table inet lbkit
delete element inet lbkit endpoints4-001 { 2 }
delete element inet lbkit hairpin4 { 192.0.2.12 . 192.0.2.12 }
add element inet lbkit endpoints4-001 { 2 : 192.0.2.13 . 8080 }
add element inet lbkit hairpin4 { 192.0.2.13 . 192.0.2.13 }
`
	if st.Full || st.Changed != 1 || st.Removed != 0 || fake.last != want {
		t.Errorf("moving one endpoint: %+v\n%s\nwant\n%s", st, fake.last, want)
	}

	services[0].Endpoints = services[0].Endpoints[:2]
	mustSyncNFT(t, s, services)
	want = `add table inet lbkit
flush chain inet lbkit service4-SUSTUHLJ-default/web/tcp/http
delete element inet lbkit endpoints4-001 { 2 }
delete element inet lbkit hairpin4 { 192.0.2.13 . 192.0.2.13 }
add rule inet lbkit service4-SUSTUHLJ-default/web/tcp/http ip daddr 198.51.100.10 ip saddr != 192.0.2.0/24 meta mark set meta mark | 0x00400000 comment "masquerade default/web:http cluster IP"
add rule inet lbkit service4-SUSTUHLJ-default/web/tcp/http meta l4proto tcp dnat ip to numgen random mod 2 map @endpoints4-001 comment "default/web:http"
`
	if fake.last != want {
		t.Errorf("removing one endpoint:\n%s\nwant\n%s", fake.last, want)
	}

	// Nothing changed: no batch at all.
	n := fake.applies
	if st := mustSyncNFT(t, s, services); st.Changed != 0 || st.Ops != 0 || fake.applies != n {
		t.Errorf("an unchanged sync: %+v, %d batches sent", st, fake.applies-n)
	}
}

// TestNFTablesServiceLifecycle: a service added and removed again leaves
// the table as before; endpoint maps exist while a port uses them.
func TestNFTablesServiceLifecycle(t *testing.T) {
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{EndpointMaps: 2})
	services := goldenServices()[:1]
	mustSyncNFT(t, s, services)
	before := fake.Dump()
	extra := clusterIPService("default", "extra", "198.51.100.99", 8080, "192.0.2.99")
	st := mustSyncNFT(t, s, append(services, extra))
	if st.Changed != 1 || !strings.Contains(fake.Dump(), "map endpoints4-001") || !strings.Contains(fake.last, "add map inet lbkit endpoints4-001") {
		t.Errorf("adding a service on an unused endpoint map: %+v\n%s", st, fake.last)
	}
	st = mustSyncNFT(t, s, services)
	if st.Removed != 1 || fake.Dump() != before {
		t.Errorf("removing it again: %+v\n%s", st, lineDiff(before, fake.Dump()))
	}
	if !strings.Contains(fake.last, "delete set inet lbkit endpoints4-001") || !strings.Contains(fake.last, "delete chain inet lbkit service4-") {
		t.Errorf("the removal did not delete the port's chain and its now unused map:\n%s", fake.last)
	}
}

// TestNFTablesFullSyncEveryIntervalAndAfterFailure: a batch the kernel
// refuses leaves the table as it was and makes the next sync full, which
// repairs what someone changed behind the syncer's back.
func TestNFTablesFullSyncEveryIntervalAndAfterFailure(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{FullSyncInterval: time.Minute, Now: func() time.Time { return now }})
	services := goldenServices()
	full := func() bool {
		t.Helper()
		return mustSyncNFT(t, s, services).Full
	}
	if !full() {
		t.Fatal("the first sync must be full")
	}
	now = now.Add(30 * time.Second)
	services[0].Endpoints[0].Weight = 2
	if full() {
		t.Fatal("a sync within the interval must be partial")
	}
	now = now.Add(31 * time.Second)
	if !full() {
		t.Fatal("a sync after the interval must be full")
	}
	good := fake.Dump()

	// Someone deletes an element the next sync deletes: the kernel refuses
	// the batch (ENOENT) and the table stays as it was.
	tamper := &nftables.Transaction{}
	tamper.DeleteElements("hairpin4", nftables.E(nftables.Addr(ip("192.0.2.12")), nftables.Addr(ip("192.0.2.12"))))
	if err := fake.Tamper(tamper); err != nil {
		t.Fatal(err)
	}
	tampered := fake.Dump()
	services[0].Endpoints = services[0].Endpoints[:2]
	_, err := s.Sync(ctx, services)
	var ke *nftables.KernelError
	if !errors.As(err, &ke) || ke.Errno == 0 {
		t.Fatalf("the refused batch: %v, want an *nftables.KernelError with the errno", err)
	}
	if fake.Dump() != tampered {
		t.Fatal("a refused batch changed the table")
	}
	st := mustSyncNFT(t, s, services)
	if !st.Full {
		t.Fatalf("the sync after a failed one: %+v, want it full", st)
	}
	services[0].Endpoints = goldenServices()[0].Endpoints
	services[0].Endpoints[0].Weight = 2
	mustSyncNFT(t, s, services)
	if got := fake.Dump(); got != good {
		t.Errorf("after the repair the table differs from before:\n%s", lineDiff(good, got))
	}

	// Drift (a flushed chain) is repaired by the next full sync only.
	flush := &nftables.Transaction{}
	flush.FlushChain("service4-SUSTUHLJ-default/web/tcp/http")
	if err := fake.Tamper(flush); err != nil {
		t.Fatal(err)
	}
	if st := mustSyncNFT(t, s, services); st.Full || fake.Dump() == good {
		t.Fatalf("a partial sync cannot see drift: %+v", st)
	}
	if st, err := s.FullSync(ctx, services); err != nil || st.Ops == 0 || fake.Dump() != good {
		t.Errorf("FullSync did not repair the flushed chain: %+v, %v", st, err)
	}
}

// TestNFTablesDeletesStaleUDPFlows: after a sync, conntrack is asked to
// forget UDP flows to removed endpoints and to the frontends of a UDP
// service that regains endpoints; never TCP flows.
func TestNFTablesDeletesStaleUDPFlows(t *testing.T) {
	ct := &recordingConntrack{}
	s, _ := newFakeNFT(t, Config{}, NFTablesOptions{Conntrack: ct})
	tcp := clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10", "192.0.2.11")
	dns := clusterIPService("default", "dns", "198.51.100.53", 53, "192.0.2.20", "192.0.2.21")
	dns.Service.Ports[0].Protocol = lb.UDP
	mustSyncNFT(t, s, []ServiceEndpoints{tcp, dns})
	ct.deleted = nil
	tcp.Endpoints = tcp.Endpoints[:1]
	dns.Endpoints = dns.Endpoints[:1]
	st := mustSyncNFT(t, s, []ServiceEndpoints{tcp, dns})
	frontend := netip.MustParseAddrPort("198.51.100.53:53")
	want := []FlowFilter{{Protocol: lb.UDP, OrigDst: frontend, ReplySrc: netip.MustParseAddrPort("192.0.2.21:8080")}}
	if got := ct.deleted[lb.IPv4]; !slices.Equal(got, want) || st.FlowsDeleted != 1 {
		t.Fatalf("after removing an endpoint of each: deleted %v (stats %d), want %v", got, st.FlowsDeleted, want)
	}
	dns.Endpoints = nil
	mustSyncNFT(t, s, []ServiceEndpoints{tcp, dns})
	ct.deleted = nil
	dns.Endpoints = []lb.Endpoint{{Addr: ip("192.0.2.22"), Ready: true}}
	mustSyncNFT(t, s, []ServiceEndpoints{tcp, dns})
	want = []FlowFilter{{Protocol: lb.UDP, OrigDst: frontend, Untranslated: true}}
	if got := ct.deleted[lb.IPv4]; !slices.Equal(got, want) {
		t.Fatalf("after the UDP service regained an endpoint: deleted %v, want %v", got, want)
	}
	ct.deleted = nil
	mustSyncNFT(t, s, []ServiceEndpoints{tcp})
	want = []FlowFilter{{Protocol: lb.UDP, OrigDst: frontend, ReplySrc: netip.MustParseAddrPort("192.0.2.22:8080")}}
	if got := ct.deleted[lb.IPv4]; !slices.Equal(got, want) {
		t.Fatalf("after the UDP service went away: deleted %v, want %v", got, want)
	}
}

func TestNFTablesCleanup(t *testing.T) {
	ctx := context.Background()
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{})
	mustSyncNFT(t, s, goldenServices())
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if d := fake.Dump(); d != "" {
		t.Fatalf("the table survived the cleanup:\n%s", d)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatalf("a second cleanup: %v", err)
	}
	if st := mustSyncNFT(t, s, goldenServices()); !st.Full {
		t.Errorf("the sync after a cleanup: %+v, want it full", st)
	}
}

// TestNFTablesRejectsBadInputWholly: invalid services, duplicates and
// frontend conflicts (also between a changed and an unchanged service) are
// refused with the errors Compile gives, and nothing is sent; moves of a
// frontend between services in one sync are not conflicts.
func TestNFTablesRejectsBadInputWholly(t *testing.T) {
	ctx := context.Background()
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{})
	base := bulkServices(3)
	mustSyncNFT(t, s, base)
	table := fake.Dump()
	n := fake.applies

	clash := clusterIPService("other", "clash", "198.51.100.10", 80, "192.0.2.77") // web's cluster IP and port
	bad := clusterIPService("other", "bad", "198.51.100.78", 80, "192.0.2.78")
	bad.Service.Ports[0].NodePort = 30001 // a ClusterIP service cannot have one
	dup := base[7]
	dup.Endpoints = nil
	for _, tc := range []struct {
		name     string
		services []ServiceEndpoints
		check    func(error) bool
	}{
		{"conflict with an unchanged service", append(slices.Clone(base), clash), func(err error) bool {
			var ce *ConflictError
			return errors.As(err, &ce) && ce.First == "default/web:http/tcp" && ce.Second == "other/clash:http/tcp"
		}},
		{"invalid service", append(slices.Clone(base), bad), func(err error) bool {
			var ve *lb.ValidationError
			return errors.As(err, &ve)
		}},
		{"duplicate of an unchanged service", append(slices.Clone(base), base[7]), func(err error) bool {
			var de *DuplicateServiceError
			return errors.As(err, &de) && de.Service == base[7].Service.ServiceName()
		}},
		{"duplicate of a changed service", append(slices.Clone(base), dup), func(err error) bool {
			var de *DuplicateServiceError
			return errors.As(err, &de)
		}},
	} {
		_, err := s.Sync(ctx, tc.services)
		if err == nil || !errors.Is(err, lb.ErrInvalid) || !tc.check(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if fake.applies != n || fake.Dump() != table {
			t.Errorf("%s: something was applied", tc.name)
		}
	}
	// web gives its cluster IP to a new service in the same sync: fine.
	moved := slices.Clone(base)
	moved[0] = clash
	if st := mustSyncNFT(t, s, moved); st.Full || st.Changed != 1 || st.Removed != 1 {
		t.Errorf("moving a frontend between services: %+v", st)
	}
	want, _ := s.Render(moved)
	if fake.Dump() != want {
		t.Errorf("after the move the table is not what a full sync makes it:\n%s", lineDiff(want, fake.Dump()))
	}
	// And back again, swapped with an unchanged service's... no: with the
	// first service restored while clash goes away.
	mustSyncNFT(t, s, base)
	if fake.Dump() != table {
		t.Errorf("after moving back the table differs:\n%s", lineDiff(table, fake.Dump()))
	}
}

func TestNFTablesOptionsAndTableChecked(t *testing.T) {
	fake := nftables.NewFake(DefaultNFTablesTable)
	for _, tc := range []struct {
		name  string
		cfg   Config
		opts  NFTablesOptions
		eng   nftables.Interface
		field string
	}{
		{"table size not prime", Config{}, NFTablesOptions{Consistent: &ConsistentHashing{TableSize: 250}}, fake, "consistent.tableSize"},
		{"table size too large", Config{}, NFTablesOptions{Consistent: &ConsistentHashing{TableSize: 65537}}, fake, "consistent.tableSize"},
		{"endpoint maps", Config{}, NFTablesOptions{EndpointMaps: 5000}, fake, "endpointMaps"},
		{"config", Config{MasqueradeMark: 3}, NFTablesOptions{}, fake, "config.masqueradeMark"},
		{"ip table", Config{}, NFTablesOptions{}, nftables.NewFake(nftables.Table{Family: nftables.FamilyIPv4, Name: "lbkit"}), ""},
		{"no engine", Config{}, NFTablesOptions{}, nil, ""},
	} {
		_, err := NewNFTables(tc.cfg, tc.eng, tc.opts)
		if !errors.Is(err, lb.ErrInvalid) {
			t.Errorf("%s: %v, want an error matching lb.ErrInvalid", tc.name, err)
			continue
		}
		var ve *lb.ValidationError
		if tc.field != "" && (!errors.As(err, &ve) || ve.Errors[0].Field != tc.field) {
			t.Errorf("%s: %v, want a *lb.ValidationError on %s", tc.name, err, tc.field)
		}
	}
}

// TestNFTablesWeightsExact: each endpoint owns weight/gcd slots, so that
// numgen picks it with exactly its share.
func TestNFTablesWeightsExact(t *testing.T) {
	for _, tc := range []struct {
		weights []uint32
		max     int
		want    []uint32
	}{
		{[]uint32{1, 1, 1}, 1 << 16, []uint32{1, 1, 1}},
		{[]uint32{1, 2, 3}, 1 << 16, []uint32{1, 2, 3}},
		{[]uint32{100, 50}, 1 << 16, []uint32{2, 1}},
		{[]uint32{7}, 1 << 16, []uint32{1}},
		{[]uint32{65536, 1}, 1 << 16, []uint32{65535, 1}}, // 65537 slots do not fit: apportioned
		{[]uint32{3, 3, 2}, 4, []uint32{2, 1, 1}},
		{[]uint32{1000, 1, 1}, 10, []uint32{8, 1, 1}}, // the small ones get one slot each, taken from the large
		{[]uint32{5, 5, 5, 5}, 2, []uint32{1, 1, 1, 1}},
	} {
		if got := nftSlots(tc.weights, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("nftSlots(%v, %d) = %v, want %v", tc.weights, tc.max, got, tc.want)
		}
	}
}

// FuzzNFTSlots: every endpoint keeps at least one slot, the slots fit
// max (unless there are more endpoints than that), shares are exact when
// the reduced weights fit, and otherwise each is within one slot of exact,
// or two for those that gave a slot to an endpoint whose share was below
// one.
func FuzzNFTSlots(f *testing.F) {
	f.Add(uint32(1), uint32(2), uint32(3), uint16(100))
	f.Add(uint32(65536), uint32(1), uint32(1), uint16(0))
	f.Add(uint32(65537), uint32(2), uint32(2), uint16(3))
	f.Fuzz(func(t *testing.T, a, b, c uint32, m uint16) {
		weights := []uint32{a%lb.MaxWeight + 1, b%lb.MaxWeight + 1, c%lb.MaxWeight + 1}
		max := int(m) + 1
		got := nftSlots(weights, max)
		sum, wsum := 0, 0.0
		for i, n := range got {
			if n == 0 {
				t.Fatalf("%v in %d slots: endpoint %d got none: %v", weights, max, i, got)
			}
			sum += int(n)
			wsum += float64(weights[i])
		}
		if sum > max && sum != len(weights) {
			t.Fatalf("%v: %v uses %d slots, more than %d", weights, got, sum, max)
		}
		tiny := false
		for _, w := range weights {
			tiny = tiny || float64(w)/wsum*float64(max) < 1
		}
		for i, n := range got {
			exact := float64(weights[i]) / wsum * float64(sum)
			d := float64(n) - exact
			if d < 0 {
				d = -d
			}
			switch {
			case sum < max && d > 1e-9:
				t.Fatalf("%v in %d slots: %v is not exact (endpoint %d %.3f off)", weights, max, got, i, d)
			case d >= 2 || !tiny && d >= 1:
				t.Fatalf("%v in %d slots: %v, endpoint %d is %.3f slots off its share", weights, max, got, i, d)
			}
		}
	})
}

// TestFingerprintCoversEveryField: the incremental compile must notice a
// change of any field of a service or endpoint, so the fingerprint must
// read every one: it changes each leaf field in turn.
func TestFingerprintCoversEveryField(t *testing.T) {
	se := goldenServices()[2] // front: most fields set
	se.Service.PublishNotReadyAddresses = true
	se.Service.InternalTrafficPolicy = lb.TrafficPolicyCluster
	se.Service.TrafficDistribution = lb.TrafficDistribution("PreferClose")
	se.Service.HealthCheckNodePort = 30999
	se.Service.Ports[0].TargetPort = lb.TargetPort{Number: 8443, Name: "https"}
	se.Endpoints[0].Ports = []lb.EndpointPort{{Name: "https", Protocol: lb.TCP, Port: 8443}}
	se.Endpoints[0].Zone = "zone-a"
	se.Endpoints[0].Serving, se.Endpoints[0].Terminating = true, true
	fp := newFingerprinter()
	checked := checkHashCoversEveryField(t, reflect.ValueOf(&se).Elem(), "ServiceEndpoints", "the fingerprint",
		func() uint64 { return fp.of(&se) }, nil)
	t.Logf("%d leaf fields checked", checked)
}

// firstStmt returns the first statement of type T in chain.
func firstStmt[T nftables.Stmt](t *testing.T, rs *nftables.Ruleset, chain string) T {
	t.Helper()
	c := rs.Chain(chain)
	if c == nil {
		t.Fatalf("no chain %s", chain)
	}
	for _, r := range c.Rules {
		for _, st := range r.Stmts {
			if s, ok := st.(T); ok {
				return s
			}
		}
	}
	var zero T
	t.Fatalf("chain %s has no %T", chain, zero)
	return zero
}

// slotTable returns, for a service chain programmed in the Fake, which
// endpoint each slot of its map holds, in slot order.
func slotTable(t *testing.T, rs *nftables.Ruleset, chain string) (nftables.Key, []string) {
	t.Helper()
	dm := firstStmt[nftables.DNATMap](t, rs, chain)
	var lo, n uint32
	switch k := dm.Key.(type) {
	case nftables.JHash:
		lo, n = k.Offset, k.Mod
		k.Offset = 0
		dm.Key = k
	case nftables.Numgen:
		lo, n = k.Offset, k.Mod
		k.Offset = 0
		dm.Key = k
	}
	out := make([]string, n)
	for _, e := range rs.Set(dm.Map).Elements {
		if k := e.Key[0].AsUint(); k >= lo && k < lo+n {
			out[k-lo] = e.Data[0].String() + ":" + e.Data[1].String()
		}
	}
	return dm.Key, out
}

// TestNFTablesConsistentTablesAgree: in consistent mode a service's table
// is lb.NewMaglev's for its endpoints, whatever else the syncer programmed
// before (the slots' place in the endpoint maps differs, their content does
// not), and removing one endpoint of ten reassigns only the slots Maglev
// reassigns.
func TestNFTablesConsistentTablesAgree(t *testing.T) {
	ctx := context.Background()
	opts := NFTablesOptions{Consistent: &ConsistentHashing{Seed: 42}}
	web := clusterIPService("default", "web", "198.51.100.10", 80)
	for i := range 10 {
		web.Endpoints = append(web.Endpoints, lb.Endpoint{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), Ready: true})
	}
	a, fa := newFakeNFT(t, goldenConfig(), opts)
	mustSyncNFT(t, a, []ServiceEndpoints{web})
	b, fb := newFakeNFT(t, goldenConfig(), opts)
	mustSyncNFT(t, b, bulkServices(30)[6:]) // other services first: other slots
	mustSyncNFT(t, b, append(bulkServices(30)[6:], web))
	read := func(f *recorder) (nftables.Key, []string) {
		rs, err := f.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slotTable(t, rs, "service4-SUSTUHLJ-default/web/tcp/http")
	}
	ka, ta := read(fa)
	kb, tb := read(fb)
	if ka.String() != kb.String() || !slices.Equal(ta, tb) {
		t.Fatalf("two syncers disagree:\n%s %v\n%s %v", ka, ta, kb, tb)
	}
	if want := fmt.Sprintf("jhash ip saddr . tcp sport mod %d seed 0x2a", DefaultConsistentTableSize); ka.String() != want {
		t.Errorf("key %s, want %s", ka, want)
	}
	backends := make([]lb.MaglevBackend, 10)
	for i := range backends {
		backends[i] = lb.MaglevBackend{Key: fmt.Sprintf("192.0.2.%d:8080", 10+i), Weight: 1}
	}
	m, err := lb.NewMaglev(backends, DefaultConsistentTableSize)
	if err != nil {
		t.Fatal(err)
	}
	for s := range ta {
		if want := m.Backend(m.Entry(s)).Key; ta[s] != want {
			t.Fatalf("slot %d holds %s, Maglev says %s", s, ta[s], want)
		}
	}
	// One endpoint goes: only its slots, and the few Maglev moves besides,
	// change, and they change by element updates only.
	web.Endpoints = web.Endpoints[:9]
	mustSyncNFT(t, a, []ServiceEndpoints{web})
	if strings.Contains(fa.last, "rule") || strings.Contains(fa.last, "chain") {
		t.Errorf("removing an endpoint in consistent mode touched rules:\n%s", fa.last)
	}
	_, after := read(fa)
	m9, _ := lb.NewMaglev(backends[:9], DefaultConsistentTableSize)
	moved, own := 0, 0
	for s := range ta {
		if ta[s] != after[s] {
			moved++
		}
		if ta[s] == "192.0.2.19:8080" {
			own++
		}
	}
	if moved != m.Changed(m9) || moved < own || moved > own+own/2 {
		t.Errorf("%d of %d slots moved (the removed endpoint had %d; Maglev moves %d)", moved, len(ta), own, m.Changed(m9))
	}
	t.Logf("removing 1 of 10 endpoints moved %d of %d slots (%.1f%%); it owned %d", moved, len(ta), 100*float64(moved)/float64(len(ta)), own)
}

// manyEndpoints returns an IPv6 ClusterIP service "default/<name>" with n
// ready endpoints, 2001:db8:e<k>::<i>.
func manyEndpoints(name, cip string, k, n int) ServiceEndpoints {
	svc := clusterIPService("default", name, cip, 80)
	base := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xe0, byte(k)})
	for i := range n {
		a := base.As16()
		a[13], a[14], a[15] = byte(i>>16), byte(i>>8), byte(i)
		svc.Endpoints = append(svc.Endpoints, lb.Endpoint{Addr: netip.AddrFrom16(a), Ready: true})
	}
	return svc
}

// slotMapCounts returns, for the affinity slot map of a service chain,
// how many slots each endpoint chain owns, and the rule's key.
func slotMapCounts(t *testing.T, rs *nftables.Ruleset, chain string) (nftables.Key, map[string]int) {
	t.Helper()
	vm := firstStmt[nftables.VMap](t, rs, chain)
	if vm.Map == "" {
		t.Fatalf("chain %s chooses its endpoint with an anonymous map: %s", chain, vm)
	}
	set := rs.Set(vm.Map)
	if set == nil {
		t.Fatalf("chain %s uses the map %s, which is not in the table", chain, vm.Map)
	}
	counts := map[string]int{}
	seen := map[uint32]bool{}
	for _, e := range set.Elements {
		k := e.Key[0].AsUint()
		if seen[k] {
			t.Fatalf("slot %d twice in %s", k, vm.Map)
		}
		seen[k] = true
		counts[e.Verdict.Chain]++
	}
	for k := range uint32(len(seen)) {
		if !seen[k] {
			t.Fatalf("%s has %d slots but not slot %d", vm.Map, len(seen), k)
		}
	}
	return vm.Key, counts
}

// TestNFTablesAffinityManyEndpoints: a ClientIP-affinity service with more
// endpoints than one netlink message holds in an anonymous map (2000 in
// random mode), or than the old 251-slot affinity table (300 in
// consistent mode), syncs; its slots sit in a named map with one slot per
// endpoint (random) or the Maglev table (consistent), and a sync that
// changes another service afterwards works and touches nothing of it.
func TestNFTablesAffinityManyEndpoints(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		opts  NFTablesOptions
		n     int
		slots int
	}{
		{NFTablesOptions{}, 2000, 2000},
		{NFTablesOptions{Consistent: &ConsistentHashing{}}, 300, DefaultConsistentTableSize},
		{NFTablesOptions{Consistent: &ConsistentHashing{TableSize: 251}}, 300, 1201}, // the smallest prime >= 4*300
	} {
		t.Run(fmt.Sprintf("consistent=%v/n=%d", tc.opts.Consistent != nil, tc.n), func(t *testing.T) {
			s, fake := newFakeNFT(t, goldenConfig(), tc.opts)
			sticky := manyEndpoints("sticky", "2001:db8:100::50", 1, tc.n)
			sticky.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: 600}
			other := clusterIPService("default", "other", "198.51.100.60", 80, "192.0.2.60")
			mustSyncNFT(t, s, []ServiceEndpoints{sticky, other})
			rs, err := fake.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			chain := nftName(nftKindService, nftFam6, "default/sticky/tcp/http")
			_, counts := slotMapCounts(t, rs, chain)
			total := 0
			for _, n := range counts {
				total += n
			}
			if len(counts) != tc.n || total != tc.slots {
				t.Errorf("%d slots over %d endpoint chains, want %d over %d", total, len(counts), tc.slots, tc.n)
			}
			other.Endpoints = append(other.Endpoints, lb.Endpoint{Addr: ip("192.0.2.61"), Ready: true})
			st := mustSyncNFT(t, s, []ServiceEndpoints{sticky, other})
			if st.Changed != 1 || strings.Contains(fake.last, "sticky") {
				t.Errorf("changing another service: %+v, batch:\n%s", st, fake.last)
			}
		})
	}
}

// TestNFTablesAffinityWeightsExact: the weights of an affinity port are
// exact, as those of other ports, also when their reduced sum exceeds the
// 256 slots the anonymous map used to have (100:157), and an endpoint
// change of an affinity port touches only its elements and chains.
func TestNFTablesAffinityWeightsExact(t *testing.T) {
	ctx := context.Background()
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{})
	svc := clusterIPService("default", "sticky", "198.51.100.50", 80, "192.0.2.50", "192.0.2.51")
	svc.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: 600}
	svc.Endpoints[0].Weight, svc.Endpoints[1].Weight = 100, 157
	mustSyncNFT(t, s, []ServiceEndpoints{svc, clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10")})
	rs, err := fake.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chain := nftName(nftKindService, nftFam4, "default/sticky/tcp/http")
	ep := func(a string) string {
		return nftName(nftKindEndpoint, nftFam4, "default/sticky/tcp/http__"+a+"/8080")
	}
	key, counts := slotMapCounts(t, rs, chain)
	if want := map[string]int{ep("192.0.2.50"): 100, ep("192.0.2.51"): 157}; !reflect.DeepEqual(counts, want) {
		t.Errorf("slots %v, want %v", counts, want)
	}
	if key.String() != "numgen random mod 257" {
		t.Errorf("key %s, want numgen random mod 257", key)
	}
	// The second endpoint moves: its chain and set go, the new ones come,
	// the service chain's affinity checks are rewritten, and its 157 slots
	// are updated; nothing of the first endpoint's slots, nothing else.
	svc.Endpoints[1].Addr = ip("192.0.2.52")
	mustSyncNFT(t, s, []ServiceEndpoints{svc, clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10")})
	slotOps := 0
	for _, line := range strings.Split(strings.TrimSpace(fake.last), "\n") {
		switch {
		case line == "add table inet lbkit" || strings.Contains(line, "hairpin4"):
		case !strings.Contains(line, "default/sticky/tcp/http"):
			t.Errorf("moving one endpoint of an affinity port touched something else: %q", line)
		case strings.Contains(line, "element inet lbkit service-slots4-"):
			slotOps++
			if strings.Contains(line, "192.0.2.50") {
				t.Errorf("moving one endpoint of an affinity port touched the other's slots: %q", line)
			}
		}
	}
	if slotOps != 2 { // one delete and one add statement, of 157 elements each
		t.Errorf("%d element statements on the slot map, want 2:\n%s", slotOps, fake.last)
	}
	rs, err = fake.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, counts = slotMapCounts(t, rs, chain); counts[ep("192.0.2.52")] != 157 || counts[ep("192.0.2.50")] != 100 {
		t.Errorf("after the move: slots %v", counts)
	}
}

// TestNFTablesRefusesPortsThatDoNotFit: a port with more endpoints than
// its slots, in either mode, is refused with an error matching
// lb.ErrInvalid that names it, and nothing is applied; a consistent port
// with more than 16384 endpoints gets the largest table (65521 slots), not
// one that runs into the next chain's slots.
func TestNFTablesRefusesPortsThatDoNotFit(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		opts NFTablesOptions
		n    int
	}{
		{NFTablesOptions{}, nftSlotsPerChain + 1},
		{NFTablesOptions{Consistent: &ConsistentHashing{}}, nftMaxTableSize + 1},
	} {
		s, fake := newFakeNFT(t, goldenConfig(), tc.opts)
		web := clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10")
		mustSyncNFT(t, s, []ServiceEndpoints{web})
		table, applies := fake.Dump(), fake.applies
		_, err := s.Sync(ctx, []ServiceEndpoints{web, manyEndpoints("huge", "2001:db8:100::70", 2, tc.n)})
		var ve *lb.ValidationError
		if !errors.Is(err, lb.ErrInvalid) || !errors.As(err, &ve) || !strings.Contains(err.Error(), "default/huge") {
			t.Errorf("consistent=%v, %d endpoints: %v, want a *lb.ValidationError naming default/huge", tc.opts.Consistent != nil, tc.n, err)
		}
		if fake.applies != applies || fake.Dump() != table {
			t.Errorf("consistent=%v: the refused sync changed the table", tc.opts.Consistent != nil)
		}
		// The syncer goes on with the rest.
		web.Endpoints = append(web.Endpoints, lb.Endpoint{Addr: ip("192.0.2.11"), Ready: true})
		mustSyncNFT(t, s, []ServiceEndpoints{web})
	}

	// 17 000 endpoints and a second service in one endpoint map: the
	// first one's table is the largest prime that fits its 65536 slots.
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{EndpointMaps: 1, Consistent: &ConsistentHashing{}})
	big := manyEndpoints("big", "2001:db8:100::71", 3, 17000)
	next := clusterIPService("default", "next", "2001:db8:100::72", 80, "2001:db8::72")
	mustSyncNFT(t, s, []ServiceEndpoints{big, next})
	rs, err := fake.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, slots := slotTable(t, rs, nftName(nftKindService, nftFam6, "default/big/tcp/http"))
	if k := key.(nftables.JHash); k.Mod != nftMaxTableSize || len(slots) != nftMaxTableSize || slices.Contains(slots, "") {
		t.Errorf("17000 endpoints: key %s, %d slots filled", key, len(slots)-strings.Count(strings.Join(slots, ","), ",,"))
	}
}

// TestNFTablesRefusesTooManyBalancingChains: the slot ids are bounded by
// what the endpoint maps hold (65536 chains per map), with a typed error
// instead of offsets that wrap.
func TestNFTablesRefusesTooManyBalancingChains(t *testing.T) {
	var a idAlloc
	for i := range 130 {
		if id, ok := a.alloc(130); !ok || id != uint32(i) {
			t.Fatalf("alloc %d: %d, %v", i, id, ok)
		}
	}
	if id, ok := a.alloc(130); ok {
		t.Fatalf("alloc beyond the limit gave %d", id)
	}
	a.free(7)
	if id, ok := a.alloc(130); !ok || id != 7 {
		t.Fatalf("alloc after a free: %d, %v", id, ok)
	}

	// A syncer with one endpoint map whose 65536 chains are all in use
	// (as after 65536 ports) refuses one more, naming it.
	s, fake := newFakeNFT(t, goldenConfig(), NFTablesOptions{EndpointMaps: 1})
	mustSyncNFT(t, s, nil)
	for range nftSlotsPerChain {
		s.ids.alloc(nftSlotsPerChain)
	}
	applies := fake.applies
	_, err := s.Sync(context.Background(), []ServiceEndpoints{clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10")})
	var ve *lb.ValidationError
	if !errors.Is(err, lb.ErrInvalid) || !errors.As(err, &ve) || !strings.Contains(err.Error(), "default/web") || !strings.Contains(err.Error(), "EndpointMaps") {
		t.Errorf("one chain too many: %v, want a *lb.ValidationError naming default/web and EndpointMaps", err)
	}
	if fake.applies != applies {
		t.Error("the refused sync sent a batch")
	}
}
