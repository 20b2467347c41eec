package nat_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nat"
)

// TestIPTablesBehaviour runs the behaviour suite through the iptables
// engine, on both of its backends.
func TestIPTablesBehaviour(t *testing.T) {
	for _, backend := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(backend.String(), func(t *testing.T) {
			runSuite(t, iptablesEngine(backend))
		})
	}
}

func iptablesEngine(backend iptables.Backend) engineUnderTest {
	tool := "iptables-nft"
	if backend == iptables.BackendLegacy {
		tool = "iptables-legacy"
	}
	return engineUnderTest{
		name:  "iptables (" + backend.String() + ")",
		tools: []string{tool, tool + "-restore", tool + "-save", strings.Replace(tool, "iptables", "ip6tables", 1) + "-restore"},
		start: func(t *testing.T, host *nettest.Host, cfg nat.Config) engine {
			e := &iptEngine{host: host, tool: tool, clock: &clock{now: time.Unix(1e9, 0)}}
			err := host.Do(func() error {
				ctx := context.Background()
				v4, err := iptables.NewWithConfig(ctx, iptables.Config{Family: iptables.IPv4, Backend: backend})
				if err != nil {
					return err
				}
				v6, err := iptables.NewWithConfig(ctx, iptables.Config{Family: iptables.IPv6, Backend: backend})
				if err != nil {
					return err
				}
				e.syncer, err = nat.NewIPTables(cfg, v4, v6, nat.IPTablesOptions{Now: e.clock.Now})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return e
		},
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type iptEngine struct {
	host   *nettest.Host
	tool   string // iptables-legacy or iptables-nft
	syncer *nat.IPTables
	clock  *clock
}

func (e *iptEngine) Sync(ctx context.Context, svcs []nat.ServiceEndpoints) error {
	_, err := e.SyncFlows(ctx, svcs)
	return err
}

// SyncFlows is Sync that returns the conntrack entries the sync deleted,
// over both families.
func (e *iptEngine) SyncFlows(ctx context.Context, svcs []nat.ServiceEndpoints) (int, error) {
	n := 0
	err := e.host.Do(func() error {
		stats, err := e.syncer.Sync(ctx, svcs)
		for _, st := range stats {
			n += st.FlowsDeleted
		}
		return err
	})
	return n, err
}

// PeriodicSync lets the full-sync interval pass, as it does on a running
// node, and syncs.
func (e *iptEngine) PeriodicSync(ctx context.Context, svcs []nat.ServiceEndpoints) error {
	e.clock.Advance(nat.DefaultFullSyncInterval)
	var stats []nat.IPTablesStats
	err := e.host.Do(func() error {
		var err error
		stats, err = e.syncer.Sync(ctx, svcs)
		return err
	})
	for _, st := range stats {
		if !st.Full {
			return fmt.Errorf("the sync after the full-sync interval was not full: %+v", st)
		}
	}
	return err
}

func (e *iptEngine) Cleanup(ctx context.Context) error {
	return e.host.Do(func() error { return e.syncer.Cleanup(ctx) })
}

func (e *iptEngine) ipt(t *testing.T, family string, args ...string) string {
	t.Helper()
	tool := e.tool
	if family == "6" {
		tool = strings.Replace(tool, "iptables", "ip6tables", 1)
	}
	return e.host.MustRun(t, tool, args...)
}

// BreakNextApply makes a chain of another program jump to every endpoint
// chain of svc, so that the kernel refuses to delete any of them.
func (e *iptEngine) BreakNextApply(t *testing.T, svc lb.ServicePortName) func() {
	save := e.ipt(t, "4", "-t", "nat", "-S")
	e.ipt(t, "4", "-t", "nat", "-N", "HOLD-SEPS")
	held := 0
	for _, line := range strings.Split(save, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "-A" && strings.HasPrefix(f[1], "LBK-SEP-") && strings.Contains(line, `"`+svc.String()+`"`) ||
			len(f) > 1 && f[0] == "-A" && strings.HasPrefix(f[1], "LBK-SEP-") && strings.Contains(line, " "+svc.String()+" ") {
			e.ipt(t, "4", "-t", "nat", "-A", "HOLD-SEPS", "-j", f[1])
			held++
		}
	}
	if held == 0 {
		t.Fatalf("found no endpoint chain of %s to hold:\n%s", svc, save)
	}
	return func() {
		e.ipt(t, "4", "-t", "nat", "-F", "HOLD-SEPS")
		e.ipt(t, "4", "-t", "nat", "-X", "HOLD-SEPS")
	}
}

// Vandalize flushes the service chain of svc.
func (e *iptEngine) Vandalize(t *testing.T, svc lb.ServicePortName) {
	name, err := iptables.ChainNamer{Prefix: nat.DefaultPrefix}.Name("SVC-", svc.String(), svc.Protocol.Lower())
	if err != nil {
		t.Fatal(err)
	}
	e.ipt(t, "4", "-t", "nat", "-F", string(name))
}

// AddForeign adds another program's chains and rules to the nat and filter
// tables of both families, including rules in the built-in chains lbkit
// hooks into.
func (e *iptEngine) AddForeign(t *testing.T) {
	for _, fam := range []struct{ v, addr string }{{"4", "203.0.113.250"}, {"6", "2001:db8:fd::250"}} {
		e.ipt(t, fam.v, "-t", "nat", "-N", "FOREIGN-NAT")
		e.ipt(t, fam.v, "-t", "nat", "-A", "FOREIGN-NAT", "-s", fam.addr, "-m", "comment", "--comment", `foreign "quoted" rule`, "-j", "RETURN")
		e.ipt(t, fam.v, "-t", "nat", "-A", "PREROUTING", "-s", fam.addr, "-m", "comment", "--comment", "foreign hook", "-j", "FOREIGN-NAT")
		e.ipt(t, fam.v, "-t", "nat", "-A", "POSTROUTING", "-s", fam.addr, "-m", "comment", "--comment", "foreign snat", "-j", "MASQUERADE")
		e.ipt(t, fam.v, "-t", "filter", "-N", "FOREIGN-FLT")
		e.ipt(t, fam.v, "-t", "filter", "-A", "FOREIGN-FLT", "-p", "tcp", "--dport", "9", "-m", "comment", "--comment", "foreign filter", "-j", "DROP")
		e.ipt(t, fam.v, "-t", "filter", "-I", "INPUT", "-m", "comment", "--comment", "foreign input", "-j", "FOREIGN-FLT")
		e.ipt(t, fam.v, "-t", "filter", "-A", "FORWARD", "-s", fam.addr, "-m", "comment", "--comment", "foreign forward", "-j", "ACCEPT")
	}
}

// Foreign returns what iptables-save prints for the nat and filter tables
// of both families, minus every line that names one of lbkit's chains
// (its chains, their rules, its hooks), minus the "# Generated" comments
// and the packet counters of the built-in chains: everything of other
// programs, byte for byte.
func (e *iptEngine) Foreign(t *testing.T) string {
	var out []string
	for _, v := range []string{"4", "6"} {
		for _, table := range []string{"nat", "filter"} {
			tool := e.tool + "-save"
			if v == "6" {
				tool = strings.Replace(tool, "iptables", "ip6tables", 1)
			}
			for _, line := range strings.Split(e.host.MustRun(t, tool, "-t", table), "\n") {
				if strings.HasPrefix(line, "#") || strings.Contains(line, nat.DefaultPrefix) {
					continue
				}
				out = append(out, v+" "+table+": "+counters.ReplaceAllString(line, "[-]"))
			}
		}
	}
	return strings.Join(out, "\n")
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// TestIPTablesRepairsHooksAndStaleChains checks the repair of a full sync
// against what the real tools print, not lbkit's own rendering (the
// Fake's): a hook deleted by hand from a built-in chain is put back once,
// a stale chain left with lbkit's prefix is deleted, and repeated full
// syncs never duplicate a hook. On both backends, both families.
func TestIPTablesRepairsHooksAndStaleChains(t *testing.T) {
	for _, backend := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(backend.String(), func(t *testing.T) {
			ctx := context.Background()
			eut := iptablesEngine(backend)
			s := newSuiteLab(t, append(eut.tools, strings.Replace(eut.tools[2], "iptables", "ip6tables", 1)))
			e := eut.start(t, s.lb, s.cfg).(*iptEngine)
			web := service("web", 1, lb.IPv4, s.endpoints(lb.IPv4, 0, 1, 2))
			web6 := service("web6", 1, lb.IPv6, s.endpoints(lb.IPv6, 0, 1, 2))
			svcs := []nat.ServiceEndpoints{web, web6}
			if err := e.Sync(ctx, svcs); err != nil {
				t.Fatal(err)
			}
			want := e.hookLines(t)
			if len(want) == 0 {
				t.Fatal("no hook lines in iptables-save: the check would be vacuous")
			}
			for line, n := range want {
				if n != 1 {
					t.Fatalf("after the first sync %q appears %d times", line, n)
				}
			}
			// Behind lbkit's back: the nat PREROUTING hook goes, and a
			// chain with lbkit's prefix that no service wants appears.
			for _, v := range []string{"4", "6"} {
				num := 0
				for _, line := range strings.Split(e.ipt(t, v, "-t", "nat", "-S", "PREROUTING"), "\n") {
					if !strings.HasPrefix(line, "-A ") {
						continue
					}
					num++
					if strings.Contains(line, "-j "+nat.DefaultPrefix) {
						break
					}
				}
				e.ipt(t, v, "-t", "nat", "-D", "PREROUTING", fmt.Sprint(num))
				e.ipt(t, v, "-t", "nat", "-N", "LBK-SEP-STALESTALESTALE")
				e.ipt(t, v, "-t", "nat", "-A", "LBK-SEP-STALESTALESTALE", "-j", "RETURN")
			}
			if got := e.hookLines(t); len(got) != len(want)-2 {
				t.Fatalf("deleting the two PREROUTING hooks left %d of %d hook lines: the test would prove nothing", len(got), len(want))
			}
			c, err := s.client1.Count(ctx, nettest.Probe{To: clusterIP(web), N: 5, Timeout: 500 * time.Millisecond})
			if err != nil || c.Total() != 0 {
				t.Fatalf("without its hook the service still answers (%v, %v): the test would prove nothing", c.Backends, err)
			}
			for i := range 4 { // the repair, then three more full syncs
				if err := e.PeriodicSync(ctx, svcs); err != nil {
					t.Fatalf("full sync %d: %v", i, err)
				}
				got := e.hookLines(t)
				for line, n := range got {
					if n != 1 || want[line] == 0 {
						t.Errorf("full sync %d: %q appears %d times (before the damage: %d)", i, line, n, want[line])
					}
				}
				for line := range want {
					if got[line] == 0 {
						t.Errorf("full sync %d: hook %q is missing", i, line)
					}
				}
				for _, v := range []string{"4", "6"} {
					if save := e.ipt(t, v, "-t", "nat", "-S"); strings.Contains(save, "STALESTALESTALE") {
						t.Errorf("full sync %d: IPv%s still has the stale chain:\n%s", i, v, save)
					}
				}
			}
			distribution(t, s.client1, nettest.Probe{To: clusterIP(web), N: 300}, even(s.beNames...))
		})
	}
}

// hookLines counts, per family, table and line, the rules in built-in
// chains that jump to one of lbkit's chains, as iptables-save prints them.
func (e *iptEngine) hookLines(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, v := range []string{"4", "6"} {
		tool := e.tool + "-save"
		if v == "6" {
			tool = strings.Replace(tool, "iptables", "ip6tables", 1)
		}
		for _, table := range []string{"nat", "filter"} {
			for _, line := range strings.Split(e.host.MustRun(t, tool, "-t", table), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 || f[0] != "-A" || strings.HasPrefix(f[1], nat.DefaultPrefix) || !strings.Contains(line, "-j "+nat.DefaultPrefix) {
					continue
				}
				out[v+" "+table+": "+line]++
			}
		}
	}
	return out
}
