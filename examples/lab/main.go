// Command lab is lbkit's demo: real load balancing through the real kernel,
// in network namespaces on this machine.
//
// It builds a small network of namespaces — a client, a balancer that routes
// between the client's segment and one segment per backend, and three HTTP
// backends — compiles a ClusterIP service with package nat, programs it into
// the balancer's kernel through the chosen engine, sends HTTP requests from
// the client to the service's cluster IP, prints how many requests each
// backend answered and the rules it installed, and removes everything.
//
// Two engines can program the balancer: iptables (one iptables-restore,
// kube-proxy's chain layout) and nftables (one netlink batch into lbkit's
// own inet table: verdict-map dispatch, endpoints chosen through a map).
//
// It needs root. It never touches the host's own network namespace. A lab
// left behind by a run that was killed is removed by the next run.
//
// The lab itself is built with lbkit's internal test harness
// (internal/nettest), which other modules cannot import; in a program of
// your own, run iptables.New and nat.NewIPTables inside the node's network
// namespace, or nftables.Dial with WithNetNS and nat.NewNFTables.
//
//	go run ./examples/lab                      # 300 requests, equal weights
//	go run ./examples/lab -engine nftables     # the same through nftables
//	go run ./examples/lab -weights 1,2,3       # weighted endpoints
//	go run ./examples/lab -keep                # leave the lab up until Ctrl-C
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nat"
	"github.com/lbkit/lbkit/nftables"
)

const backendPort = 8080

var (
	clusterIP = netip.MustParseAddr("203.0.113.10")
	podCIDR   = netip.MustParsePrefix("192.0.2.0/24")
)

func main() {
	engine := flag.String("engine", "iptables", "NAT engine: iptables or nftables")
	weights := flag.String("weights", "1,1,1", "comma-separated weights of the three backends")
	requests := flag.Int("requests", 300, "number of HTTP requests the client sends")
	keep := flag.Bool("keep", false, "leave the lab up for poking at until Ctrl-C, then remove it")
	flag.Parse()
	if err := run(*engine, *weights, *requests, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func parseWeights(s string) ([]uint32, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, fmt.Errorf("-weights wants three numbers, got %q", s)
	}
	out := make([]uint32, 3)
	for i, p := range parts {
		w, err := strconv.ParseUint(strings.TrimSpace(p), 10, 31)
		if err != nil || w == 0 {
			return nil, fmt.Errorf("-weights: %q is not a positive integer", p)
		}
		out[i] = uint32(w)
	}
	return out, nil
}

func run(engine, weightList string, requests int, keep bool) error {
	if engine != "iptables" && engine != "nftables" {
		return fmt.Errorf("-engine %q: want iptables or nftables", engine)
	}
	weights, err := parseWeights(weightList)
	if err != nil {
		return err
	}
	if requests < 1 {
		return fmt.Errorf("-requests must be at least 1")
	}
	if os.Geteuid() != 0 {
		return errors.New("the lab builds network namespaces and needs root")
	}
	start := time.Now()
	// A closed stdout (| head) must not kill the demo before it removes
	// its lab: writes then fail instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	fmt.Println("== building the lab: client ── balancer ── be1, be2, be3 (network namespaces)")
	lab, err := nettest.Build(nettest.Topology{
		Segments: []nettest.Segment{
			{Name: "wan", Prefix4: netip.MustParsePrefix("198.51.100.0/24")},
			{Name: "p1", Prefix4: netip.MustParsePrefix("192.0.2.0/28")},
			{Name: "p2", Prefix4: netip.MustParsePrefix("192.0.2.16/28")},
			{Name: "p3", Prefix4: netip.MustParsePrefix("192.0.2.32/28")},
		},
		Hosts: []nettest.HostSpec{
			{Name: "client", Segments: []string{"wan"}},
			{Name: "balancer", Segments: []string{"wan", "p1", "p2", "p3"}, Forwarding: true},
			{Name: "be1", Segments: []string{"p1"}},
			{Name: "be2", Segments: []string{"p2"}},
			{Name: "be3", Segments: []string{"p3"}},
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("== removing the lab")
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "lab: cleanup:", err)
		}
		fmt.Printf("== done in %.1fs\n", time.Since(start).Seconds())
	}()
	client, balancer := lab.Host("client"), lab.Host("balancer")
	backends := []*nettest.Host{lab.Host("be1"), lab.Host("be2"), lab.Host("be3")}
	var eps []lb.Endpoint
	for i, be := range backends {
		gw := balancer.Iface(fmt.Sprintf("p%d", i+1)).Addr4
		if err := be.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw); err != nil {
			return err
		}
		if err := be.StartHTTP(backendPort); err != nil {
			return err
		}
		eps = append(eps, lb.Endpoint{Addr: be.IP4(), Ready: true, Weight: weights[i]})
		fmt.Printf("   %-8s %-15s HTTP on :%d, weight %d\n", be.Name(), be.IP4(), backendPort, weights[i])
	}
	if err := client.AddRoute(netip.PrefixFrom(clusterIP, 32), balancer.Iface("wan").Addr4); err != nil {
		return err
	}

	svc := nat.ServiceEndpoints{
		Service: lb.Service{
			Namespace: "demo", Name: "web",
			ClusterIPs: []netip.Addr{clusterIP},
			Ports:      []lb.ServicePort{{Name: "http", Protocol: lb.TCP, Port: 80, TargetPort: lb.PortNumber(backendPort)}},
		},
		Endpoints: eps,
	}
	fmt.Printf("== service demo/web: ClusterIP %s:80 → :%d on three endpoints, engine %s\n", clusterIP, backendPort, engine)
	cfg := nat.Config{Node: lb.Node{Name: "balancer"}, ClusterCIDRs: []netip.Prefix{podCIDR}}
	prog, err := program(ctx, engine, balancer, cfg, svc)
	if err != nil {
		return err
	}
	defer prog.close()
	fmt.Println("   " + prog.summary)

	fmt.Printf("== sending %d HTTP requests from the client to http://%s/\n", requests, clusterIP)
	httpc := client.HTTPClient()
	counts := map[string]int{}
	failures := 0
	for range requests {
		if err := ctx.Err(); err != nil {
			return err
		}
		resp, err := httpc.Get("http://" + clusterIP.String() + "/")
		if err != nil {
			failures++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.Header.Get("X-Backend")]++
	}
	total := uint32(0)
	for _, w := range weights {
		total += w
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\taddress\tweight\texpected\trequests\tshare\t")
	for i, be := range backends {
		n := counts[be.Name()]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f%%\t%d\t%.1f%%\t\n", be.Name(), be.IP4(), weights[i],
			100*float64(weights[i])/float64(total), n, 100*float64(n)/float64(requests))
	}
	tw.Flush()
	if failures > 0 {
		fmt.Printf("   %d requests failed\n", failures)
	}
	res, err := nettest.ChiSquare(counts, map[string]float64{"be1": float64(weights[0]), "be2": float64(weights[1]), "be3": float64(weights[2])})
	if err == nil {
		fmt.Printf("   chi-square against the weights: %.2f with %d degrees of freedom, p = %.3f (above 0.01: the shares fit the weights)\n", res.Stat, res.DF, res.P)
	}

	fmt.Printf("== the rules lbkit installed in the balancer (%s)\n", prog.listing)
	rules, err := prog.rules(ctx)
	if err != nil {
		return err
	}
	for _, line := range rules {
		fmt.Println("   " + line)
	}
	if engine == "nftables" {
		fmt.Println("   (nft lists the numgen-keyed endpoint maps as \"type 0\": google/nftables writes no typeof")
		fmt.Println("   metadata; the kernel's data is right. `go doc github.com/lbkit/lbkit/nftables` says more.)")
	}

	if keep {
		fmt.Println("== the lab stays up until Ctrl-C; poke at it with, for example:")
		fmt.Printf("   ip netns exec %s curl -s http://%s/   # if curl is installed\n", client.Namespace(), clusterIP)
		fmt.Printf("   ip netns exec %s %s\n", balancer.Namespace(), prog.listing)
		fmt.Printf("   ip netns exec %s conntrack -L   # if conntrack is installed\n", balancer.Namespace())
		<-ctx.Done()
	}
	if err := prog.cleanup(context.Background()); err != nil {
		return fmt.Errorf("removing the rules: %w", err)
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d requests failed", failures, requests)
	}
	return nil
}

// programmed is a service programmed into the balancer by one engine.
type programmed struct {
	summary string                                  // what the sync did
	listing string                                  // the command that shows the rules
	rules   func(context.Context) ([]string, error) // lbkit's rules, as the kernel lists them
	cleanup func(context.Context) error
	close   func()
}

// program compiles svc with package nat and programs it into the
// balancer's kernel through the engine.
func program(ctx context.Context, engine string, balancer *nettest.Host, cfg nat.Config, svc nat.ServiceEndpoints) (*programmed, error) {
	if engine == "nftables" {
		return programNFTables(ctx, balancer, cfg, svc)
	}
	var syncer *nat.IPTables
	var stats []nat.IPTablesStats
	var backend iptables.Backend
	err := balancer.Do(func() error {
		v4, err := iptables.New(ctx, iptables.IPv4)
		if err != nil {
			return err
		}
		backend = v4.Backend()
		if syncer, err = nat.NewIPTables(cfg, v4, nil, nat.IPTablesOptions{}); err != nil {
			return err
		}
		stats, err = syncer.Sync(ctx, []nat.ServiceEndpoints{svc})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &programmed{
		summary: fmt.Sprintf("one iptables-restore (%s backend): %d chains, %d rules, %d bytes", backend, stats[0].ChainsWritten, stats[0].Rules, stats[0].Bytes),
		listing: "iptables-save",
		rules: func(ctx context.Context) ([]string, error) {
			// lbkit's rules of both tables it writes: DNAT and
			// masquerading in nat, rejects for ports without endpoints
			// in filter.
			var lines []string
			for _, table := range []string{"nat", "filter"} {
				out, err := balancer.Run(ctx, "iptables-save", "-t", table)
				if err != nil {
					return nil, err
				}
				lines = append(lines, "*"+table)
				for _, line := range strings.Split(string(out), "\n") {
					if strings.Contains(line, nat.DefaultPrefix) {
						lines = append(lines, line)
					}
				}
			}
			return lines, nil
		},
		cleanup: func(ctx context.Context) error { return balancer.Do(func() error { return syncer.Cleanup(ctx) }) },
		close:   func() {},
	}, nil
}

// programNFTables programs svc through nat.NFTables: one netlink batch
// into lbkit's inet table, from outside the balancer's namespace.
func programNFTables(ctx context.Context, balancer *nettest.Host, cfg nat.Config, svc nat.ServiceEndpoints) (*programmed, error) {
	eng, err := nftables.Dial(nat.DefaultNFTablesTable, nftables.WithNetNS(balancer.NamespaceFd()))
	if err != nil {
		return nil, err
	}
	syncer, err := nat.NewNFTables(cfg, eng, nat.NFTablesOptions{Conntrack: nat.NetlinkConntrack{Handle: balancer.Netlink()}})
	if err != nil {
		eng.Close()
		return nil, err
	}
	st, err := syncer.Sync(ctx, []nat.ServiceEndpoints{svc})
	if err != nil {
		eng.Close()
		return nil, err
	}
	t := nat.DefaultNFTablesTable
	return &programmed{
		summary: fmt.Sprintf("one netlink batch: %d operations (compile %v, build %v, kernel %v)",
			st.Ops, st.Compile.Round(time.Microsecond), st.Build.Round(time.Microsecond), st.Apply.Round(time.Microsecond)),
		listing: fmt.Sprintf("nft list table %s %s", t.Family, t.Name),
		rules: func(ctx context.Context) ([]string, error) {
			out, err := balancer.Run(ctx, "nft", "list", "table", string(t.Family), t.Name)
			if err != nil {
				return nil, err
			}
			return strings.Split(strings.TrimRight(string(out), "\n"), "\n"), nil
		},
		cleanup: syncer.Cleanup,
		close:   func() { eng.Close() },
	}, nil
}
