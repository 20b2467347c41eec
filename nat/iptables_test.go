package nat

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func ep(addr, node string, weight uint32) lb.Endpoint {
	return lb.Endpoint{Addr: ip(addr), Ready: true, NodeName: node, Weight: weight}
}

// goldenServices covers every feature the renderer has, in both families.
func goldenServices() []ServiceEndpoints {
	web := clusterIPService("default", "web", "198.51.100.10", 80, "192.0.2.10", "192.0.2.11", "192.0.2.12")
	weighted := ServiceEndpoints{Service: lb.Service{
		Namespace: "default", Name: "weighted", ClusterIPs: []netip.Addr{ip("198.51.100.11")},
		Ports: []lb.ServicePort{{Name: "http", Protocol: lb.TCP, Port: 80, TargetPort: lb.PortName("web")}},
	}, Endpoints: []lb.Endpoint{
		{Addr: ip("192.0.2.20"), Ready: true, Weight: 1, Ports: []lb.EndpointPort{{Name: "web", Protocol: lb.TCP, Port: 8081}}},
		{Addr: ip("192.0.2.21"), Ready: true, Weight: 2, Ports: []lb.EndpointPort{{Name: "web", Protocol: lb.TCP, Port: 8082}}},
		{Addr: ip("192.0.2.22"), Ready: true, Weight: 3}, // no port named "web": left out
	}}
	lbSvc := ServiceEndpoints{Service: lb.Service{
		Namespace: "shop", Name: "front", Type: lb.ServiceTypeLoadBalancer,
		ClusterIPs:  []netip.Addr{ip("198.51.100.12"), ip("2001:db8:100::12")},
		ExternalIPs: []netip.Addr{ip("203.0.113.50")},
		LoadBalancerIngress: []lb.LoadBalancerIngress{
			{IP: ip("203.0.113.10")}, {IP: ip("203.0.113.11"), IPMode: lb.IPModeProxy}, {IP: ip("2001:db8:200::10")},
		},
		LoadBalancerSourceRanges: []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:300::/48")},
		Ports: []lb.ServicePort{
			{Name: "https", Protocol: lb.TCP, Port: 443, TargetPort: lb.PortNumber(8443), NodePort: 30443},
			{Name: "quic", Protocol: lb.UDP, Port: 443, TargetPort: lb.PortNumber(8443), NodePort: 30443},
		},
		ExternalTrafficPolicy: lb.TrafficPolicyLocal,
		SessionAffinity:       lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: 300},
	}, Endpoints: []lb.Endpoint{
		ep("192.0.2.30", "node-a", 0), ep("192.0.2.31", "node-b", 0),
		ep("2001:db8::30", "node-a", 0), ep("2001:db8::31", "node-b", 0),
	}}
	internal := ServiceEndpoints{Service: lb.Service{
		Namespace: "kube-system", Name: "dns", ClusterIPs: []netip.Addr{ip("198.51.100.13")},
		Ports:                 []lb.ServicePort{{Name: "dns", Protocol: lb.UDP, Port: 53}},
		InternalTrafficPolicy: lb.TrafficPolicyLocal,
	}, Endpoints: []lb.Endpoint{ep("192.0.2.40", "node-b", 0)}}
	empty := clusterIPService("default", "empty", "198.51.100.14", 80)
	empty.Service.Type = lb.ServiceTypeNodePort
	empty.Service.Ports[0].NodePort = 30080
	sctp := clusterIPService("default", "sctp", "198.51.100.15", 9999, "192.0.2.50")
	sctp.Service.Ports[0].Protocol = lb.SCTP
	// External policy Local with endpoints only on another node: the
	// external chain still short-circuits pod and node traffic to the
	// cluster endpoints; the rest meets the filter DROP.
	remote := ServiceEndpoints{Service: lb.Service{
		Namespace: "shop", Name: "remote", Type: lb.ServiceTypeLoadBalancer,
		ClusterIPs:            []netip.Addr{ip("198.51.100.16")},
		LoadBalancerIngress:   []lb.LoadBalancerIngress{{IP: ip("203.0.113.16")}},
		Ports:                 []lb.ServicePort{{Name: "http", Protocol: lb.TCP, Port: 80, TargetPort: lb.PortNumber(8080), NodePort: 30016}},
		ExternalTrafficPolicy: lb.TrafficPolicyLocal,
	}, Endpoints: []lb.Endpoint{ep("192.0.2.60", "node-b", 0)}}
	// Internal policy Local with a local endpoint: the masquerade rule
	// for traffic from outside the cluster CIDR goes into the SVL chain.
	localDNS := ServiceEndpoints{Service: lb.Service{
		Namespace: "kube-system", Name: "dns-local", ClusterIPs: []netip.Addr{ip("198.51.100.17")},
		Ports:                 []lb.ServicePort{{Name: "dns", Protocol: lb.UDP, Port: 53}},
		InternalTrafficPolicy: lb.TrafficPolicyLocal,
	}, Endpoints: []lb.Endpoint{ep("192.0.2.70", "node-a", 0), ep("192.0.2.71", "node-b", 0)}}
	return []ServiceEndpoints{web, weighted, lbSvc, internal, empty, sctp, remote, localDNS}
}

func goldenConfig() Config {
	return Config{
		Node:         lb.Node{Name: "node-a"},
		ClusterCIDRs: []netip.Prefix{pfx("192.0.2.0/24"), pfx("2001:db8::/64")},
		RandomFully:  true,
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendering (go test -update rewrites it after review):\n%s", path, lineDiff(string(want), string(got)))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// recordingConntrack is a Conntrack that records what it is asked to
// delete. Unit tests use it: the default, netlink, would act on the
// namespace the test runs in.
type recordingConntrack struct {
	deleted map[lb.IPFamily][]FlowFilter
}

func (r *recordingConntrack) Delete(_ context.Context, fam lb.IPFamily, filters []FlowFilter) (int, error) {
	if r.deleted == nil {
		r.deleted = map[lb.IPFamily][]FlowFilter{}
	}
	r.deleted[fam] = append(r.deleted[fam], filters...)
	return len(filters), nil
}

func newFakeSyncer(t *testing.T, cfg Config, opts IPTablesOptions) (*IPTables, *iptables.Fake, *iptables.Fake) {
	t.Helper()
	v4, v6 := iptables.NewFake(iptables.IPv4), iptables.NewFake(iptables.IPv6)
	if opts.Conntrack == nil {
		opts.Conntrack = &recordingConntrack{}
	}
	s, err := NewIPTables(cfg, v4, v6, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, v4, v6
}

// TestIPTablesGolden syncs every feature into the Fake and compares what
// iptables-save would print with the reviewed golden files.
func TestIPTablesGolden(t *testing.T) {
	s, v4, v6 := newFakeSyncer(t, goldenConfig(), IPTablesOptions{})
	if _, err := s.Sync(context.Background(), goldenServices()); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "iptables-v4.golden", v4.Dump())
	checkGolden(t, "iptables-v6.golden", v6.Dump())

	// Render (the dry run) writes exactly the chains the sync put there.
	text, err := s.Render(goldenServices())
	if err != nil {
		t.Fatal(err)
	}
	fresh := iptables.NewFake(iptables.IPv4)
	if err := fresh.RestoreText(context.Background(), text[lb.IPv4]); err != nil {
		t.Fatalf("the rendered text does not restore: %v", err)
	}
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		got, _ := fresh.SaveText(context.Background(), table)
		want, _ := v4.SaveText(context.Background(), table)
		if ownLines(got) != ownLines(want) {
			t.Errorf("Render and Sync differ in %s:\n%s", table, lineDiff(ownLines(want), ownLines(got)))
		}
	}
}

// ownLines keeps the lines of a save text that declare or fill lbkit's
// chains (the hooks in built-in chains are added by Sync, not Render).
func ownLines(save []byte) string {
	var out []string
	for _, l := range strings.Split(string(save), "\n") {
		if strings.HasPrefix(l, ":LBK-") || strings.HasPrefix(l, "-A LBK-") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPartialSyncEqualsFullSync drives a syncer through random changes to
// a set of services: endpoints, weights, readiness, frontends and ipMode,
// both traffic policies, affinity, source ranges, removal and re-adding. After every partial sync, the Fake must hold exactly
// what a fresh full sync of the same services produces, while the restore
// wrote only the chains of the ports that changed.
func TestPartialSyncEqualsFullSync(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := goldenConfig()
	s, v4, _ := newFakeSyncer(t, cfg, IPTablesOptions{})
	services := goldenServices()
	for i := range 20 {
		services = append(services, clusterIPService("bulk", fmt.Sprintf("svc-%d", i), fmt.Sprintf("198.51.100.%d", 100+i), 80,
			fmt.Sprintf("192.0.2.%d", 100+i), fmt.Sprintf("192.0.2.%d", 150+i)))
	}
	if st, err := s.Sync(ctx, services); err != nil || !st[0].Full {
		t.Fatalf("first sync: %+v, %v", st, err)
	}
	bulk := len(goldenServices())
	removed := map[int]ServiceEndpoints{}
	for step := range 120 {
		i := bulk + rng.IntN(20)
		svc := &services[i]
		var what string
		// Frontend, policy and affinity changes are only valid on
		// LoadBalancer services with a node port; turn one into that.
		lbify := func() {
			if svc.Service.Type != lb.ServiceTypeLoadBalancer {
				svc.Service.Type = lb.ServiceTypeLoadBalancer
				svc.Service.Ports[0].NodePort = uint16(30100 + i)
				svc.Service.LoadBalancerIngress = []lb.LoadBalancerIngress{{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)})}}
			}
		}
		action := rng.IntN(10)
		if _, gone := removed[i]; gone {
			action = 9 // a removed service can only come back
		}
		switch action {
		case 0:
			what = "add an endpoint"
			svc.Endpoints = append(svc.Endpoints, lb.Endpoint{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + step%50)}), Ready: true, NodeName: "node-a"})
		case 1:
			what = "remove an endpoint"
			if len(svc.Endpoints) > 0 {
				svc.Endpoints = svc.Endpoints[1:]
			}
		case 2:
			what = "change a weight"
			if len(svc.Endpoints) > 0 {
				svc.Endpoints[0].Weight = uint32(1 + rng.IntN(5))
			}
		case 3:
			what = "toggle readiness"
			if len(svc.Endpoints) > 0 {
				svc.Endpoints[0].Ready = !svc.Endpoints[0].Ready
			}
		case 4:
			what = "make it a LoadBalancer / toggle its ipMode"
			if svc.Service.Type == lb.ServiceTypeLoadBalancer {
				ing := &svc.Service.LoadBalancerIngress[0]
				if ing.IPMode == lb.IPModeProxy {
					ing.IPMode = lb.IPModeVIP
				} else {
					ing.IPMode = lb.IPModeProxy
				}
			}
			lbify()
		case 5:
			what = "toggle the external traffic policy"
			lbify()
			if svc.Service.ExternalTrafficPolicy == lb.TrafficPolicyLocal {
				svc.Service.ExternalTrafficPolicy = lb.TrafficPolicyCluster
			} else {
				svc.Service.ExternalTrafficPolicy = lb.TrafficPolicyLocal
			}
		case 6:
			what = "toggle the internal traffic policy"
			if svc.Service.InternalTrafficPolicy == lb.TrafficPolicyLocal {
				svc.Service.InternalTrafficPolicy = lb.TrafficPolicyCluster
			} else {
				svc.Service.InternalTrafficPolicy = lb.TrafficPolicyLocal
			}
		case 7:
			what = "toggle ClientIP affinity"
			if svc.Service.SessionAffinity.Enabled() {
				svc.Service.SessionAffinity = lb.SessionAffinity{}
			} else {
				svc.Service.SessionAffinity = lb.SessionAffinity{Type: lb.AffinityClientIP, TimeoutSeconds: int32(60 + step)}
			}
		case 8:
			what = "toggle source ranges"
			lbify()
			if len(svc.Service.LoadBalancerSourceRanges) > 0 {
				svc.Service.LoadBalancerSourceRanges = nil
			} else {
				svc.Service.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")}
			}
		case 9:
			if old, ok := removed[i]; ok {
				what = "re-add the service"
				*svc = old
				delete(removed, i)
			} else {
				what = "remove the service"
				svc.Service.Ports = slices.Clone(svc.Service.Ports)
				removed[i] = *svc
			}
		}
		current := make([]ServiceEndpoints, 0, len(services))
		for j := range services {
			if _, gone := removed[j]; !gone {
				current = append(current, services[j])
			}
		}
		before := v4.Restores()
		st, err := s.Sync(ctx, current)
		if err != nil {
			t.Fatalf("step %d (%s): %v", step, what, err)
		}
		if st[0].Full || st[0].Changed > 1 {
			t.Fatalf("step %d (%s): %+v, want a partial sync of at most one port", step, what, st[0])
		}
		if st[0].ChainsWritten == 0 && st[0].ChainsDeleted == 0 && v4.Restores() != before {
			t.Errorf("step %d (%s): nothing to write, yet a restore ran", step, what)
		}
		ref, refV4, _ := newFakeSyncer(t, cfg, IPTablesOptions{})
		if _, err := ref.Sync(ctx, current); err != nil {
			t.Fatal(err)
		}
		if got, want := v4.Dump(), refV4.Dump(); !bytes.Equal(got, want) {
			t.Fatalf("step %d (%s): partial sync diverged from a full sync:\n%s", step, what, lineDiff(string(want), string(got)))
		}
	}
}

func TestPartialSyncWritesOnlyTheChangedPort(t *testing.T) {
	ctx := context.Background()
	s, v4, _ := newFakeSyncer(t, goldenConfig(), IPTablesOptions{})
	services := goldenServices()
	if _, err := s.Sync(ctx, services); err != nil {
		t.Fatal(err)
	}
	// Replace one endpoint of default/web.
	services[0].Endpoints[2].Addr = ip("192.0.2.13")
	st, err := s.Sync(ctx, services)
	if err != nil {
		t.Fatal(err)
	}
	// SVC chain rewritten, new SEP chain written, old SEP chain deleted;
	// no shared chain changes (the frontends did not change).
	if st[0].Full || st[0].Changed != 1 || st[0].ChainsWritten != 4 || st[0].ChainsDeleted != 1 {
		t.Fatalf("stats %+v, want 1 port changed, 4 chains written (SVC + 3 SEP), 1 deleted", st[0])
	}
	text := string(v4.LastRestore())
	if strings.Contains(text, "LBK-SERVICES") || strings.Contains(text, "*filter") || strings.Contains(text, "shop/front") {
		t.Errorf("the partial restore touched shared chains or other services:\n%s", text)
	}
	if !strings.Contains(text, "-X LBK-SEP-") || !strings.Contains(text, "192.0.2.13:80") {
		t.Errorf("the partial restore does not swap the endpoint chains:\n%s", text)
	}
	// Nothing changed: no restore at all.
	n := v4.Restores()
	if _, err := s.Sync(ctx, services); err != nil || v4.Restores() != n {
		t.Errorf("an unchanged sync ran a restore (%d → %d): %v", n, v4.Restores(), err)
	}
}

func TestFullSyncEveryIntervalAndAfterFailure(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	s, v4, _ := newFakeSyncer(t, goldenConfig(), IPTablesOptions{FullSyncInterval: time.Minute, Now: func() time.Time { return now }})
	services := goldenServices()
	full := func() bool {
		t.Helper()
		st, err := s.Sync(ctx, services)
		if err != nil {
			t.Fatal(err)
		}
		return st[0].Full
	}
	if !full() {
		t.Fatal("the first sync must be full")
	}
	now = now.Add(30 * time.Second)
	if full() {
		t.Fatal("a sync within the interval must be partial")
	}
	now = now.Add(31 * time.Second)
	if !full() {
		t.Fatal("a sync after the interval must be full")
	}
	// A stale chain left behind (by a crashed earlier run, say) is
	// deleted by the next full sync and only then.
	if err := v4.RestoreText(ctx, []byte("*nat\n:LBK-SEP-STALESTALESTALE - [0:0]\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	v4.BeforeRestore = func([]byte) error { return errors.New("refused on purpose") }
	services[0].Endpoints = services[0].Endpoints[:1]
	if _, err := s.Sync(ctx, services); err == nil {
		t.Fatal("the refused restore did not fail the sync")
	}
	v4.BeforeRestore = nil
	if !full() {
		t.Fatal("the sync after a failed one must be full")
	}
	if chains, _ := v4.ListChains(ctx, iptables.TableNAT, "LBK-SEP-STALE"); len(chains) != 0 {
		t.Errorf("the full sync left the stale chain: %v", chains)
	}
}

func TestCleanupRemovesOnlyOwnChains(t *testing.T) {
	ctx := context.Background()
	s, v4, v6 := newFakeSyncer(t, goldenConfig(), IPTablesOptions{})
	foreign := "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j RETURN\nCOMMIT\n"
	if err := v4.RestoreText(ctx, []byte(foreign)); err != nil {
		t.Fatal(err)
	}
	before, _ := v4.SaveText(ctx, iptables.TableNAT)
	if _, err := s.Sync(ctx, goldenServices()); err != nil {
		t.Fatal(err)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := v4.SaveText(ctx, iptables.TableNAT); !bytes.Equal(got, before) {
		t.Errorf("cleanup did not restore the nat table:\n%s", lineDiff(string(before), string(got)))
	}
	if got, _ := v4.SaveText(ctx, iptables.TableFilter); strings.Contains(string(got), "-A ") || strings.Contains(string(got), "LBK-") {
		t.Errorf("the filter table still holds rules after cleanup:\n%s", got)
	}
	if got := string(v6.Dump()); strings.Contains(got, "LBK-") {
		t.Errorf("IPv6 still holds lbkit's chains after cleanup:\n%s", got)
	}
}

func TestNamesCannotInjectRules(t *testing.T) {
	for _, name := range []string{`web" -j ACCEPT`, "web\n-A INPUT -j ACCEPT", "web\x00", "web -j DROP"} {
		svc := clusterIPService("default", "ok", "198.51.100.10", 80, "192.0.2.10")
		svc.Service.Name = name
		s, v4, _ := newFakeSyncer(t, Config{}, IPTablesOptions{})
		_, err := s.Sync(context.Background(), []ServiceEndpoints{svc})
		var ve *lb.ValidationError
		if !errors.As(err, &ve) || ve.Field("metadata.name") == nil {
			t.Errorf("service name %q: %v, want a validation error on metadata.name", name, err)
		}
		if v4.Restores() != 0 {
			t.Errorf("service name %q: a restore ran", name)
		}
	}
	// Port names are spelled into comments too.
	svc := clusterIPService("default", "ok", "198.51.100.10", 80, "192.0.2.10")
	svc.Service.Ports[0].Name = `h"ttp`
	if _, err := Compile(Config{}, []ServiceEndpoints{svc}); !errors.Is(err, lb.ErrInvalid) {
		t.Errorf("port name with a quote: %v, want lb.ErrInvalid", err)
	}
}

func TestNoEngineForFamily(t *testing.T) {
	s, err := NewIPTables(Config{}, iptables.NewFake(iptables.IPv4), nil, IPTablesOptions{Conntrack: &recordingConntrack{}})
	if err != nil {
		t.Fatal(err)
	}
	svc := clusterIPService("default", "v6", "2001:db8:100::1", 80, "2001:db8::1")
	if _, err := s.Sync(context.Background(), []ServiceEndpoints{svc}); !errors.Is(err, ErrNoEngine) {
		t.Errorf("IPv6 service without an IPv6 engine: %v, want ErrNoEngine", err)
	}
	if _, err := NewIPTables(Config{}, nil, nil, IPTablesOptions{}); !errors.Is(err, ErrNoEngine) {
		t.Errorf("no engines: %v", err)
	}
	if _, err := NewIPTables(Config{}, iptables.NewFake(iptables.IPv6), nil, IPTablesOptions{}); err == nil {
		t.Error("an IPv6 engine accepted for IPv4")
	}
}

// TestPortHashCoversEveryField makes sure the change detection of partial
// syncs reads every field of lb.ResolvedPort: it changes each leaf field in
// turn and expects the hash to change. A field lb adds later fails here
// until the hash covers it.
func TestPortHashCoversEveryField(t *testing.T) {
	plan, err := Compile(goldenConfig(), goldenServices())
	if err != nil {
		t.Fatal(err)
	}
	var base *Port
	for i := range plan.Ports {
		if plan.Ports[i].Key == "shop/front:https/tcp" && plan.Ports[i].Family == lb.IPv4 {
			base = &plan.Ports[i]
		}
	}
	ph := newPortHasher()
	checked := checkHashCoversEveryField(t, reflect.ValueOf(base).Elem(), "Port", "the port hash",
		func() uint64 { return ph.port(base) }, skipHashField)
	t.Logf("%d leaf fields checked", checked)
}

// checkHashCoversEveryField walks the value root (addressable, named path)
// and, for each leaf field in turn, changes it, expects hash to change,
// and restores it; each slice must be non-empty in the sample, its first
// element is walked, and a slice one element longer must change the hash
// too. skip names leaf paths hash may ignore; what names the hash in
// messages. It returns the number of leaves checked.
func checkHashCoversEveryField(t *testing.T, root reflect.Value, path, what string, hash func() uint64, skip func(string) bool) int {
	t.Helper()
	h0 := hash()
	checked := 0
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			switch v.Type() {
			case reflect.TypeFor[netip.Addr](), reflect.TypeFor[netip.AddrPort](), reflect.TypeFor[netip.Prefix]():
				// a leaf: mutate changes it
			default:
				for i := range v.NumField() {
					walk(v.Field(i), path+"."+v.Type().Field(i).Name)
				}
				return
			}
		case reflect.Slice:
			if v.Len() == 0 {
				t.Errorf("%s is empty in the sample: the test cannot vary it", path)
				return
			}
			walk(v.Index(0), path+"[0]")
			// Adding an element must count too.
			old := reflect.ValueOf(v.Interface())
			v.Set(reflect.Append(v, v.Index(0)))
			if hash() == h0 {
				t.Errorf("a longer %s does not change %s", path, what)
			}
			v.Set(old)
			return
		}
		if skip != nil && skip(path) {
			return
		}
		old := reflect.ValueOf(v.Interface())
		mutate(t, v, path)
		if hash() == h0 {
			t.Errorf("changing %s does not change %s", path, what)
		}
		v.Set(old)
		if hash() != h0 {
			t.Fatalf("restoring %s did not restore %s", path, what)
		}
		checked++
	}
	walk(root, path)
	return checked
}

// Fields that describe an endpoint but do not change what any engine
// writes (the selection lists already say which endpoints are used).
func skipHashField(path string) bool {
	for _, suffix := range []string{".NodeName", ".Zone", ".Ready", ".Serving", ".Terminating"} {
		if strings.HasSuffix(path, suffix) && strings.Contains(path, "Endpoints.") {
			return true
		}
	}
	return false
}

func mutate(t *testing.T, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Struct:
		switch x := v.Interface().(type) {
		case netip.Addr:
			v.Set(reflect.ValueOf(x.Next()))
		case netip.AddrPort:
			v.Set(reflect.ValueOf(netip.AddrPortFrom(x.Addr().Next(), x.Port())))
		case netip.Prefix:
			v.Set(reflect.ValueOf(netip.PrefixFrom(x.Addr(), x.Bits()-1)))
		default:
			t.Fatalf("%s: cannot mutate %T", path, x)
		}
	default:
		t.Fatalf("%s: cannot mutate kind %s", path, v.Kind())
	}
}

// failingConntrack is a Conntrack whose every Delete fails.
type failingConntrack struct{ calls int }

func (f *failingConntrack) Delete(context.Context, lb.IPFamily, []FlowFilter) (int, error) {
	f.calls++
	return 0, errors.New("conntrack refused on purpose")
}

// TestOneFamilysFailureDoesNotForceTheOtherFull: the full-sync clock is
// per family, so an IPv6 table that refuses every restore leaves IPv4 on
// partial syncs, and IPv4's stats are returned alongside the error.
func TestOneFamilysFailureDoesNotForceTheOtherFull(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	s, v4, v6 := newFakeSyncer(t, goldenConfig(), IPTablesOptions{FullSyncInterval: time.Minute, Now: func() time.Time { return now }})
	v6.BeforeRestore = func([]byte) error { return errors.New("refused on purpose") }
	services := goldenServices()
	for i := range 3 {
		st, err := s.Sync(ctx, services)
		if err == nil {
			t.Fatalf("sync %d: the refused IPv6 restore did not fail the sync", i)
		}
		if len(st) != 1 || st[0].Family != lb.IPv4 {
			t.Fatalf("sync %d: stats %+v, want IPv4's only", i, st)
		}
		if want := i == 0; st[0].Full != want {
			t.Errorf("sync %d: IPv4 Full=%v, want %v", i, st[0].Full, want)
		}
		now = now.Add(time.Second)
	}
	if n := v4.Restores(); n != 1 {
		t.Errorf("IPv4 restores: %d, want 1 (the partial syncs had nothing to write)", n)
	}
	v6.BeforeRestore = nil
	st, err := s.Sync(ctx, services)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st {
		if want := x.Family == lb.IPv6; x.Full != want {
			t.Errorf("after IPv6 recovered: %s Full=%v, want %v", x.Family, x.Full, want)
		}
	}
}

// TestConntrackFailureDoesNotForceFullSyncs: rules that were applied are
// applied even when the conntrack cleanup after them fails: the stats say
// so, and the next sync with nothing changed writes nothing.
func TestConntrackFailureDoesNotForceFullSyncs(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	ct := &failingConntrack{}
	v4 := iptables.NewFake(iptables.IPv4)
	s, err := NewIPTables(goldenConfig(), v4, nil, IPTablesOptions{Conntrack: ct, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	dns := clusterIPService("kube-system", "dns", "198.51.100.13", 53, "192.0.2.40")
	dns.Service.Ports[0].Protocol = lb.UDP
	services := []ServiceEndpoints{dns}
	st, err := s.Sync(ctx, services)
	if err == nil || ct.calls == 0 {
		t.Fatalf("the full sync did not try (and fail) the conntrack cleanup: calls %d, err %v", ct.calls, err)
	}
	if len(st) != 1 || !st[0].Full || st[0].Ports != 1 {
		t.Fatalf("stats of the applied full sync: %+v", st)
	}
	restores := v4.Restores()
	for i := range 3 {
		now = now.Add(time.Second)
		st, err := s.Sync(ctx, services)
		if err != nil {
			t.Fatalf("sync %d: nothing changed, yet: %v", i, err)
		}
		if len(st) != 1 || st[0].Full || st[0].Changed != 0 {
			t.Errorf("sync %d: stats %+v, want one partial sync with no change", i, st)
		}
	}
	if n := v4.Restores(); n != restores {
		t.Errorf("%d restores after the first sync, want none: nothing changed", n-restores)
	}
}

// missingHooksEveryLine is the previous missingHooks, kept as the
// reference for TestMissingHooksMatchesReference and the benchmark: it
// turns every -A line of the save into a map key.
func missingHooksEveryLine(save []byte, hooks []hook, t iptables.Table) []iptables.ChainRule {
	present := map[string]bool{}
	for line := range bytes.Lines(save) {
		if bytes.HasPrefix(line, []byte("-A ")) {
			present[string(bytes.TrimRight(line, "\n"))] = true
		}
	}
	var out []iptables.ChainRule
	for _, h := range hooks {
		if h.table != t {
			continue
		}
		if !present["-A "+string(h.chain)+" "+h.rule.String()] {
			out = append(out, iptables.ChainRule{Chain: h.chain, Rule: h.rule})
		}
	}
	return out
}

func testHooks(t testing.TB) []hook {
	t.Helper()
	s, err := NewIPTables(goldenConfig(), iptables.NewFake(iptables.IPv4), nil, IPTablesOptions{Conntrack: &recordingConntrack{}})
	if err != nil {
		t.Fatal(err)
	}
	return s.names.hooks()
}

// randomSave writes an iptables-save-like text of about n rule lines in
// which each hook line appears with probability pHook, sometimes twice,
// sometimes altered by one byte, mixed with chain declarations, comments
// and ordinary rules; the last line may lack its newline.
func randomSave(rng *rand.Rand, hooks []hook, n int, pHook float64) []byte {
	var b bytes.Buffer
	b.WriteString("# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:LBK-SERVICES - [0:0]\n")
	var lines []string
	for _, h := range hooks {
		line := "-A " + string(h.chain) + " " + h.rule.String()
		if rng.Float64() < pHook {
			lines = append(lines, line)
			if rng.IntN(4) == 0 {
				lines = append(lines, line)
			}
		}
		if rng.IntN(3) == 0 {
			lines = append(lines, line[:len(line)-1], line+" ", "-I"+line[2:])
		}
	}
	for i := range n {
		lines = append(lines, fmt.Sprintf("-A LBK-SEP-%016X -p tcp -m comment --comment \"ns%d/svc%d:http\" -m tcp -j DNAT --to-destination 10.%d.%d.%d:8080",
			rng.Uint64(), i%97, i, i>>16&255, i>>8&255, i&255))
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n# Completed")
	if rng.IntN(2) == 0 {
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestMissingHooksMatchesReference: the lookup of only the wanted lines
// finds exactly what the map of every line found, on random saves.
func TestMissingHooksMatchesReference(t *testing.T) {
	hooks := testHooks(t)
	rng := rand.New(rand.NewPCG(1, 2))
	missed := 0
	for i := range 300 {
		save := randomSave(rng, hooks, rng.IntN(50), rng.Float64())
		for _, tb := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
			want := missingHooksEveryLine(save, hooks, tb)
			got := missingHooks(save, hooks, tb)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("save %d, table %s: missing %v, reference %v\n%s", i, tb, got, want, save)
			}
			missed += len(got)
			found := foundHooks(save, hooks, tb)
			for j, h := range hooks {
				inMissing := slices.ContainsFunc(want, func(m iptables.ChainRule) bool {
					return m.Chain == h.chain && m.Rule.String() == h.rule.String()
				})
				if wantFound := h.table == tb && !inMissing; found[j] != wantFound {
					t.Fatalf("save %d, table %s, hook %d: found %v, want %v", i, tb, j, found[j], wantFound)
				}
			}
		}
	}
	if missed == 0 {
		t.Fatal("no save missed a hook: the comparison proved nothing")
	}
}

// BenchmarkMissingHooks compares, on a synthetic save of the size of a
// 10k-service x 10-endpoint nat table, the lookup of only the wanted hook
// lines with the previous map of every -A line, in one run.
func BenchmarkMissingHooks(b *testing.B) {
	hooks := testHooks(b)
	save := randomSave(rand.New(rand.NewPCG(3, 4)), hooks, 300_000, 0.5)
	if want, got := missingHooksEveryLine(save, hooks, iptables.TableNAT), missingHooks(save, hooks, iptables.TableNAT); !reflect.DeepEqual(got, want) {
		b.Fatalf("results differ: %v, reference %v", got, want)
	}
	measure := func(f func([]byte, []hook, iptables.Table) []iptables.ChainRule) (time.Duration, uint64, uint64) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		f(save, hooks, iptables.TableNAT)
		d := time.Since(start)
		runtime.ReadMemStats(&m1)
		return d, m1.Mallocs - m0.Mallocs, m1.TotalAlloc - m0.TotalAlloc
	}
	var oldT, newT time.Duration
	var oldA, newA, oldB, newB uint64
	for b.Loop() {
		d, a, by := measure(missingHooksEveryLine)
		oldT, oldA, oldB = oldT+d, oldA+a, oldB+by
		d, a, by = measure(missingHooks)
		newT, newA, newB = newT+d, newA+a, newB+by
	}
	n := float64(b.N)
	b.ReportMetric(float64(len(save))/1e6, "save-MB")
	b.ReportMetric(oldT.Seconds()*1e3/n, "every-line-ms")
	b.ReportMetric(newT.Seconds()*1e3/n, "wanted-lines-ms")
	b.ReportMetric(float64(oldA)/n, "every-line-allocs")
	b.ReportMetric(float64(newA)/n, "wanted-lines-allocs")
	b.ReportMetric(float64(oldB)/n/1e6, "every-line-MB")
	b.ReportMetric(float64(newB)/n/1e6, "wanted-lines-MB")
	b.ReportMetric(oldT.Seconds()/newT.Seconds(), "speedup")
}

// TestMissingHooksAllocationsDoNotGrowWithTheSave: a full sync reads
// saves of tens of megabytes; finding the hooks in one must not allocate
// per line.
func TestMissingHooksAllocationsDoNotGrowWithTheSave(t *testing.T) {
	hooks := testHooks(t)
	save := randomSave(rand.New(rand.NewPCG(5, 6)), hooks, 5000, 0.5)
	for _, tb := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		if n := testing.AllocsPerRun(5, func() { missingHooks(save, hooks, tb) }); n > 100 {
			t.Errorf("%s: %.0f allocations for a save of 5000 rules, want at most 100", tb, n)
		}
	}
}

// TestIPv4StaysAppliedWhenIPv6IsRefused pins what Sync's doc promises: the
// families are applied one after the other, and a refused IPv6 restore
// does not roll back IPv4's new rules.
func TestIPv4StaysAppliedWhenIPv6IsRefused(t *testing.T) {
	ctx := context.Background()
	s, v4, v6 := newFakeSyncer(t, goldenConfig(), IPTablesOptions{})
	services := goldenServices()
	if _, err := s.Sync(ctx, services); err != nil {
		t.Fatal(err)
	}
	v4Before, v6Before := ownLines(v4.Dump()), ownLines(v6.Dump())
	front := &services[2] // loses one endpoint of each family
	front.Endpoints = []lb.Endpoint{front.Endpoints[1], front.Endpoints[3]}
	v6.BeforeRestore = func([]byte) error { return errors.New("refused on purpose") }
	st, err := s.Sync(ctx, services)
	var re *iptables.RestoreError
	if !errors.As(err, &re) || re.Family != iptables.IPv6 {
		t.Fatalf("want IPv6's RestoreError, got %v", err)
	}
	if len(st) != 1 || st[0].Family != lb.IPv4 || st[0].Changed == 0 {
		t.Errorf("stats %+v, want IPv4's partial sync only", st)
	}
	if ownLines(v4.Dump()) == v4Before {
		t.Error("IPv4's new rules are not in force")
	}
	if ownLines(v6.Dump()) != v6Before {
		t.Error("the refused IPv6 restore changed IPv6's rules")
	}
}
