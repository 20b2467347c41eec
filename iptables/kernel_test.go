package iptables

// Tier 2: the real iptables tools on the kernel, inside network namespaces
// built by internal/nettest. Every command runs inside the namespace: the
// Client is created and called from nettest's Host.Do, whose goroutine is
// locked to a thread switched into the namespace, and both os/exec (restore
// and save) and go-iptables fork from that thread.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
)

var kernelTools = []string{
	"iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save",
	"iptables-nft", "iptables-nft-restore", "iptables-nft-save",
	"ip6tables-legacy", "ip6tables-legacy-restore", "ip6tables-legacy-save",
	"ip6tables-nft", "ip6tables-nft-restore", "ip6tables-nft-save",
}

var backends = []Backend{BackendLegacy, BackendNFT}

// nsClient is an Interface that runs every call of a Client inside a
// nettest host's namespace.
type nsClient struct {
	h *nettest.Host
	c *Client
}

var _ Interface = (*nsClient)(nil)

// countingRunner counts the commands it runs, by binary.
type countingRunner struct {
	mu    sync.Mutex
	calls []Cmd
}

func (r *countingRunner) Run(ctx context.Context, c *Cmd) error {
	r.mu.Lock()
	r.calls = append(r.calls, Cmd{Name: c.Name, Args: append([]string(nil), c.Args...)})
	r.mu.Unlock()
	return ExecRunner{}.Run(ctx, c)
}

func (r *countingRunner) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.Name == name {
			n++
		}
	}
	return n
}

// kernelHosts builds a lab with one namespace per name.
func kernelHosts(t *testing.T, names ...string) map[string]*nettest.Host {
	t.Helper()
	nettest.RequireKernel(t, kernelTools...)
	topo := nettest.Topology{}
	for _, n := range names {
		topo.Hosts = append(topo.Hosts, nettest.HostSpec{Name: n})
	}
	lab := nettest.New(t, topo)
	out := map[string]*nettest.Host{}
	for _, n := range names {
		out[n] = lab.Host(n)
	}
	return out
}

// newNSClient creates a Client inside h's namespace.
func newNSClient(t *testing.T, h *nettest.Host, cfg Config) *nsClient {
	t.Helper()
	var c *Client
	err := h.Do(func() error {
		var err error
		c, err = NewWithConfig(context.Background(), cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend() != cfg.Backend || c.Family() != cfg.Family {
		t.Fatalf("client reports %s %s, want %s %s", c.Family(), c.Backend(), cfg.Family, cfg.Backend)
	}
	return &nsClient{h: h, c: c}
}

func (n *nsClient) Family() Family   { return n.c.Family() }
func (n *nsClient) Backend() Backend { return n.c.Backend() }
func (n *nsClient) Apply(ctx context.Context, s *Sync) error {
	return n.h.Do(func() error { return n.c.Apply(ctx, s) })
}
func (n *nsClient) Restore(ctx context.Context, b *Buffer) error {
	return n.h.Do(func() error { return n.c.Restore(ctx, b) })
}
func (n *nsClient) RestoreText(ctx context.Context, text []byte) error {
	return n.h.Do(func() error { return n.c.RestoreText(ctx, text) })
}
func (n *nsClient) Save(ctx context.Context, t Table) (td *TableDump, err error) {
	err = n.h.Do(func() error { td, err = n.c.Save(ctx, t); return err })
	return td, err
}
func (n *nsClient) SaveText(ctx context.Context, t Table) (out []byte, err error) {
	err = n.h.Do(func() error { out, err = n.c.SaveText(ctx, t); return err })
	return out, err
}
func (n *nsClient) ListChains(ctx context.Context, t Table, prefix string) (out []ChainName, err error) {
	err = n.h.Do(func() error { out, err = n.c.ListChains(ctx, t, prefix); return err })
	return out, err
}
func (n *nsClient) EnsureRule(ctx context.Context, t Table, c ChainName, pos Position, r *Rule) (added bool, err error) {
	err = n.h.Do(func() error { added, err = n.c.EnsureRule(ctx, t, c, pos, r); return err })
	return added, err
}
func (n *nsClient) DeleteRule(ctx context.Context, t Table, c ChainName, r *Rule) error {
	return n.h.Do(func() error { return n.c.DeleteRule(ctx, t, c, r) })
}
func (n *nsClient) EnsureJump(ctx context.Context, t Table, from, to ChainName, pos Position, comment string) (added bool, err error) {
	err = n.h.Do(func() error { added, err = n.c.EnsureJump(ctx, t, from, to, pos, comment); return err })
	return added, err
}
func (n *nsClient) DeleteJump(ctx context.Context, t Table, from, to ChainName, comment string) error {
	return n.h.Do(func() error { return n.c.DeleteJump(ctx, t, from, to, comment) })
}

// saveNoComments is SaveText without iptables-save's "#" lines and with
// the chain counters zeroed (packets the namespace sends on its own, IPv6
// neighbour discovery for one, count in OUTPUT).
func saveNoComments(t *testing.T, in Interface, table Table) string {
	t.Helper()
	out, err := in.SaveText(t.Context(), table)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(withoutComments(out)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ":") {
			if j := strings.LastIndexByte(l, '['); j > 0 {
				lines[i] = l[:j] + "[0:0]\n"
			}
		}
	}
	return strings.Join(lines, "")
}

var scenarioTables = []Table{TableFilter, TableNAT, TableMangle, TableRaw}

// TestKernelDifferential runs every scenario on the kernel (legacy and
// nf_tables) and on the Fake, and requires the same outcome of every step
// and the same iptables-save text of every table after it.
func TestKernelDifferential(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			hosts := kernelHosts(t, "legacy", "nft")
			for _, b := range backends {
				t.Run(b.String(), func(t *testing.T) {
					real := newNSClient(t, hosts[hostOf(b)], Config{Family: sc.family, Backend: b})
					fake := NewFake(sc.family)
					ctx := t.Context()
					for i, st := range sc.steps {
						rerr := real.RestoreText(ctx, []byte(st.text))
						ferr := fake.RestoreText(ctx, []byte(st.text))
						if b == BackendNFT && st.nftAccepts {
							// A documented difference of iptables-nft: the
							// Fake follows legacy (and the kernel's own
							// checks), nft does not run them here.
							if rerr != nil {
								t.Fatalf("%s: nft refused a step it is known to accept: %v", stepLabel(sc, i), rerr)
							}
							if ferr == nil {
								t.Fatalf("%s: the Fake accepted it", stepLabel(sc, i))
							}
							if i != len(sc.steps)-1 {
								t.Fatalf("%s: an nftAccepts step must be the last", stepLabel(sc, i))
							}
							return
						}
						if (rerr == nil) != (ferr == nil) {
							t.Fatalf("%s: kernel says %v, Fake says %v", stepLabel(sc, i), rerr, ferr)
						}
						if (rerr == nil) != (st.failLine == 0) {
							t.Fatalf("%s: kernel says %v, want failure at line %d", stepLabel(sc, i), rerr, st.failLine)
						}
						if rerr != nil {
							var re *RestoreError
							if !errors.As(rerr, &re) {
								t.Fatalf("%s: %T %v", stepLabel(sc, i), rerr, rerr)
							}
							if b == BackendLegacy && re.Line != st.failLine {
								t.Errorf("%s: legacy blamed line %d, want %d: %v", stepLabel(sc, i), re.Line, st.failLine, rerr)
							}
							if re.Line == 0 {
								t.Errorf("%s: no line in %v", stepLabel(sc, i), rerr)
							}
							t.Logf("%s: %v", stepLabel(sc, i), rerr)
						}
						for _, table := range scenarioTables {
							got, want := saveNoComments(t, real, table), saveNoComments(t, fake, table)
							if got != want {
								t.Fatalf("%s: table %s differs\n--- kernel\n%s--- Fake\n%s", stepLabel(sc, i), table, got, want)
							}
						}
					}
				})
			}
		})
	}
}

// TestKernelRoundTrip applies a rule of every match and target type and
// reads it back: the typed rules and the text must be what was rendered.
func TestKernelRoundTrip(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	eachKernel(t, hosts, Config{}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		ctx := t.Context()
		s := everyRuleSync(f)
		if err := c.Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
		buf := NewBuffer(f)
		_ = s.Render(buf)
		for _, ts := range s.Tables {
			td, err := c.Save(ctx, ts.Table)
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range ts.Chains {
				got := td.Chain(ch.Name)
				if got == nil {
					t.Fatalf("%s/%s missing", ts.Table, ch.Name)
				}
				if len(got.Rules) != len(ch.Rules) {
					t.Fatalf("%s/%s: %d rules, want %d", ts.Table, ch.Name, len(got.Rules), len(ch.Rules))
				}
				for i := range ch.Rules {
					if !reflect.DeepEqual(got.Rules[i], ch.Rules[i]) {
						t.Errorf("%s/%s rule %d:\nkernel %s\n%#v\nwant   %s\n%#v", ts.Table, ch.Name, i,
							got.Rules[i].String(), got.Rules[i], ch.Rules[i].String(), ch.Rules[i])
					}
				}
			}
			// Text: every rendered -A line of this table is in the save
			// output verbatim.
			saved, _ := c.SaveText(ctx, ts.Table)
			for _, ch := range ts.Chains {
				for i := range ch.Rules {
					spec, _ := appendRuleSpec(nil, f, &ch.Rules[i])
					line := "-A " + string(ch.Name) + string(spec) + "\n"
					if !bytes.Contains(saved, []byte(line)) {
						t.Errorf("iptables-save lacks %q", line)
					}
				}
			}
		}
	})
}

// eachKernel runs fn for both backends and both families, each in a
// subtest with its own Client in the namespace of that backend's host.
func eachKernel(t *testing.T, hosts map[string]*nettest.Host, cfg Config, fn func(t *testing.T, c *nsClient, b Backend, f Family)) {
	for _, b := range backends {
		for _, f := range []Family{IPv4, IPv6} {
			cfg.Family, cfg.Backend = f, b
			c := cfg
			t.Run(b.String()+"/"+f.String(), func(t *testing.T) { fn(t, newNSClient(t, hosts[hostOf(b)], c), b, f) })
		}
	}
}

// seedForeign restores another program's rules (foreignV4/foreignV6).
func seedForeign(t *testing.T, c Interface) {
	t.Helper()
	seed := foreignV4
	if c.Family() == IPv6 {
		seed = foreignV6
	}
	if err := c.RestoreText(t.Context(), []byte(seed)); err != nil {
		t.Fatal(err)
	}
}

func hostOf(b Backend) string {
	if b == BackendLegacy {
		return "legacy"
	}
	return "nft"
}

// TestKernelProbabilities checks that random probabilities survive the
// kernel exactly (the kernel keeps lround(p * 2^31), iptables-save prints
// 11 decimals, the parser turns them back into the same integer).
func TestKernelProbabilities(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	rng := rand.New(rand.NewPCG(1, 2))
	var rules []Rule
	for i := 0; i < 150; i++ {
		p := Probability(rng.Uint32N(uint32(ProbabilityOne) + 1))
		if i < 3 {
			p = []Probability{0, 1 << 19, ProbabilityOne}[i]
		}
		rules = append(rules, Rule{Matches: []Match{Statistic{Probability: p}}, Target: Return})
	}
	s := &Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{{Name: "LBK-P", Rules: rules}}}}}
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			c := newNSClient(t, hosts[hostOf(b)], Config{Family: IPv4, Backend: b})
			if err := c.Apply(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			td, err := c.Save(t.Context(), TableNAT)
			if err != nil {
				t.Fatal(err)
			}
			if got := td.Chain("LBK-P").Rules; !reflect.DeepEqual(got, rules) {
				for i := range rules {
					if !reflect.DeepEqual(got[i], rules[i]) {
						t.Errorf("rule %d: %s, want %s", i, got[i].String(), rules[i].String())
					}
				}
			}
		})
	}
}

// foreignLines returns the lines of a save that are not lbkit's.
func foreignLines(save string) string {
	var out []string
	for _, l := range strings.SplitAfter(save, "\n") {
		if !strings.Contains(l, "LBK-") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestKernelForeignRulesSurvive seeds another program's rules in filter
// and nat, runs syncs of every kind and requires those rules unchanged,
// byte for byte, after each.
func TestKernelForeignRulesSurvive(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	eachKernel(t, hosts, Config{}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		ctx := t.Context()
		seedForeign(t, c)
		snapshot := func() string {
			return foreignLines(saveNoComments(t, c, TableFilter) + saveNoComments(t, c, TableNAT))
		}
		want := snapshot()
		if !strings.Contains(want, "FOREIGN-PRE") {
			t.Fatalf("seed missing: %s", want)
		}
		check := func(what string) {
			t.Helper()
			if got := snapshot(); got != want {
				t.Fatalf("after %s foreign rules changed:\n%s\nwant\n%s", what, got, want)
			}
		}
		full := serviceSync(f, 5, 3)
		if err := c.Apply(ctx, full); err != nil {
			t.Fatal(err)
		}
		check("a full sync")
		svcChain := full.Tables[0].Chains[len(full.Tables[0].Chains)-1].Name
		if _, err := c.EnsureJump(ctx, TableNAT, ChainPrerouting, svcChain, Prepend, "lbkit services"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.EnsureJump(ctx, TableNAT, ChainOutput, svcChain, Append, "lbkit services"); err != nil {
			t.Fatal(err)
		}
		check("EnsureJump")
		// Partial: one service chain only.
		part := &Sync{Tables: []TableSync{{Table: TableNAT, Chains: full.Tables[0].Chains[2:3]}}}
		if err := c.Apply(ctx, part); err != nil {
			t.Fatal(err)
		}
		check("a partial sync")
		// Refused by the kernel at commit: MASQUERADE reachable from
		// PREROUTING through the services chain.
		bad := &Sync{Tables: []TableSync{{Table: TableNAT, Chains: []Chain{{Name: svcChain, Rules: []Rule{{Target: Masquerade{}}}}}}}}
		if err := c.Apply(ctx, bad); !errors.Is(err, ErrRestore) {
			t.Fatalf("MASQUERADE reachable from PREROUTING: %v", err)
		}
		check("a failed sync")
		// Cleanup: jumps, then every lbkit chain.
		for _, from := range []ChainName{ChainPrerouting, ChainOutput} {
			if err := c.DeleteJump(ctx, TableNAT, from, svcChain, "lbkit services"); err != nil {
				t.Fatal(err)
			}
		}
		clean := &Sync{}
		for _, table := range []Table{TableNAT, TableFilter} {
			chains, err := c.ListChains(ctx, table, DefaultPrefix)
			if err != nil {
				t.Fatal(err)
			}
			clean.Tables = append(clean.Tables, TableSync{Table: table, Delete: chains})
		}
		if err := c.Apply(ctx, clean); err != nil {
			t.Fatal(err)
		}
		check("cleanup")
		all := saveNoComments(t, c, TableFilter) + saveNoComments(t, c, TableNAT)
		if strings.Contains(all, "LBK-") {
			t.Errorf("cleanup left lbkit chains:\n%s", all)
		}
	})
}

// TestKernelFailedRestoreKeepsRules proves on the kernel that a refused
// restore leaves the table exactly as it was, and that the error names the
// line and its text.
func TestKernelFailedRestoreKeepsRules(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	eachKernel(t, hosts, Config{}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		ctx := t.Context()
		good := serviceSync(f, 3, 2)
		if err := c.Apply(ctx, good); err != nil {
			t.Fatal(err)
		}
		nat := good.Tables[0]
		services := nat.Chains[len(nat.Chains)-1].Name
		if _, err := c.EnsureJump(ctx, TableNAT, ChainPrerouting, services, Append, ""); err != nil {
			t.Fatal(err)
		}
		before := saveNoComments(t, c, TableNAT) + saveNoComments(t, c, TableFilter)

		// 1. Refused when the table is committed: every chain of the
		// sync is rewritten and flushed first, MASQUERADE is made
		// reachable from PREROUTING at the end.
		bad := serviceSync(f, 3, 2)
		bnat := &bad.Tables[0]
		bnat.Chains[2].Rules = append(bnat.Chains[2].Rules, Rule{Target: Jump{Chain: nat.Chains[1].Name}})
		err := c.Apply(ctx, bad)
		var re *RestoreError
		if !errors.As(err, &re) {
			t.Fatalf("err = %v", err)
		}
		if re.Line == 0 || re.Table != TableNAT || re.ExitCode == 0 || re.Family != f {
			t.Errorf("error lacks detail: %+v", re)
		}
		buf := NewBuffer(f)
		_ = bad.Render(buf)
		lines := strings.Split(buf.String(), "\n")
		if re.Line > len(lines) || re.Text != lines[re.Line-1] {
			t.Errorf("Text %q is not line %d of the input", re.Text, re.Line)
		}
		t.Logf("kernel refusal: %v", err)
		if after := saveNoComments(t, c, TableNAT) + saveNoComments(t, c, TableFilter); after != before {
			t.Fatalf("a refused restore changed the tables:\n%s\nwant\n%s", after, before)
		}

		// 2. Refused by iptables-restore itself: deleting a chain a
		// built-in chain still jumps to, in the second table of the
		// input, after a nat change that must be rolled back too.
		bad2 := &Sync{Tables: []TableSync{
			{Table: TableFilter, Chains: []Chain{{Name: "LBK-FILTER", Rules: []Rule{{Target: Drop}}}}},
			{Table: TableNAT, Chains: []Chain{{Name: nat.Chains[2].Name}}, Delete: []ChainName{services}},
		}}
		err = c.Apply(ctx, bad2)
		if !errors.As(err, &re) || re.Table != TableNAT || !strings.HasPrefix(re.Text, "-X ") && re.Text != "COMMIT" {
			t.Fatalf("err = %v (%+v)", err, re)
		}
		t.Logf("userspace refusal: %v", err)
		afterNAT := saveNoComments(t, c, TableNAT)
		if !strings.Contains(before, afterNAT) {
			t.Fatalf("nat changed by a refused restore:\n%s", afterNAT)
		}
		// filter was committed before nat failed: iptables-restore is
		// atomic per table, not across tables.
		if got := saveNoComments(t, c, TableFilter); !strings.Contains(got, "-A LBK-FILTER -j DROP\n") {
			t.Errorf("filter, committed before the failing table, was not applied:\n%s", got)
		}
	})
}

// TestKernelStaleChains deletes the chains ListChains reports and the
// desired state lacks.
func TestKernelStaleChains(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			ctx := t.Context()
			c := newNSClient(t, hosts[hostOf(b)], Config{Family: IPv4, Backend: b})
			if err := c.RestoreText(ctx, []byte(foreignV4)); err != nil {
				t.Fatal(err)
			}
			first := serviceSync(IPv4, 4, 2)
			if err := c.Apply(ctx, first); err != nil {
				t.Fatal(err)
			}
			// The next desired state has two services fewer.
			next := serviceSync(IPv4, 2, 2)
			existing, err := c.ListChains(ctx, TableNAT, DefaultPrefix)
			if err != nil {
				t.Fatal(err)
			}
			var desired []ChainName
			for _, ch := range next.Tables[0].Chains {
				desired = append(desired, ch.Name)
			}
			stale := Stale(existing, desired)
			if len(stale) != 2*3 { // 2 service chains with 2 endpoint chains each
				t.Fatalf("stale = %v", stale)
			}
			next.Tables[0].Delete = stale
			if err := c.Apply(ctx, next); err != nil {
				t.Fatal(err)
			}
			got, err := c.ListChains(ctx, TableNAT, DefaultPrefix)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(desired) || len(Stale(got, desired)) != 0 {
				t.Errorf("after the sync: %v, want %v", got, desired)
			}
			if all, _ := c.ListChains(ctx, TableNAT, ""); !containsChain(all, "FOREIGN-PRE") {
				t.Errorf("foreign chain gone: %v", all)
			}
		})
	}
}

func containsChain(cs []ChainName, c ChainName) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// TestKernelEnsureJump exercises the go-iptables operations.
func TestKernelEnsureJump(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	eachKernel(t, hosts, Config{}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		ctx := t.Context()
		seedForeign(t, c)
		comment := `lbkit "services" \ portal`
		added, err := c.EnsureJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", Prepend, comment)
		if err != nil || !added {
			t.Fatalf("EnsureJump = %v, %v", added, err)
		}
		added, err = c.EnsureJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", Prepend, comment)
		if err != nil || added {
			t.Fatalf("second EnsureJump = %v, %v", added, err)
		}
		if _, err := c.EnsureJump(ctx, TableNAT, ChainPrerouting, "LBK-LAST", Append, ""); err != nil {
			t.Fatal(err)
		}
		td, err := c.Save(ctx, TableNAT)
		if err != nil {
			t.Fatal(err)
		}
		pre := td.Chain(ChainPrerouting).Rules
		want := []Rule{
			{Matches: []Match{Comment(comment)}, Target: Jump{Chain: "LBK-SERVICES"}},
			{Target: Jump{Chain: "FOREIGN-PRE"}},
			{Target: Jump{Chain: "LBK-LAST"}},
		}
		if !reflect.DeepEqual(pre, want) {
			t.Fatalf("PREROUTING = %v", pre)
		}
		if td.Chain("LBK-SERVICES") == nil || td.Chain("LBK-LAST") == nil {
			t.Fatal("EnsureJump did not create the chains")
		}
		// EnsureRule with a typed rule, checked by iptables -C.
		r := &Rule{Proto: ProtoMatch{Proto: ProtoTCP}, Matches: []Match{Comment("x y"), Ports{Dst: PortRange{1000, 2000}}, MarkMatch{Value: 1, Mask: 1}}, Target: Accept}
		for i, wantAdded := range []bool{true, false} {
			added, err := c.EnsureRule(ctx, TableFilter, ChainForward, Append, r)
			if err != nil || added != wantAdded {
				t.Fatalf("EnsureRule #%d = %v, %v", i, added, err)
			}
		}
		if err := c.DeleteRule(ctx, TableFilter, ChainForward, r); err != nil {
			t.Fatal(err)
		}
		for _, to := range []ChainName{"LBK-SERVICES", "LBK-LAST", "LBK-NEVER-EXISTED"} {
			if err := c.DeleteJump(ctx, TableNAT, ChainPrerouting, to, map[ChainName]string{"LBK-SERVICES": comment}[to]); err != nil {
				t.Fatalf("DeleteJump %s: %v", to, err)
			}
		}
		if err := c.DeleteJump(ctx, TableNAT, ChainPrerouting, "LBK-SERVICES", comment); err != nil {
			t.Fatalf("second DeleteJump: %v", err)
		}
		td, _ = c.Save(ctx, TableNAT)
		if pre := td.Chain(ChainPrerouting).Rules; len(pre) != 1 {
			t.Errorf("PREROUTING after DeleteJump = %v", pre)
		}
		if fw, _ := c.Save(ctx, TableFilter); len(fw.Chain(ChainForward).Rules) != 0 {
			t.Errorf("FORWARD after DeleteRule = %v", fw.Chain(ChainForward).Rules)
		}
	})
}

// TestKernelCommentInjection sends hostile comments through the real
// iptables-restore: what the renderer accepts comes back unchanged and
// stays one rule; what it refuses never reaches the tool.
func TestKernelCommentInjection(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	accepted := []string{
		`"; -A INPUT -j DROP; #`,
		`a\"b`,
		`trailing backslash \`,
		`it's 'quoted'`,
		"COMMIT",
		`-j ACCEPT`,
		"",
		"ünïcødé ✓",
		`""`,
		"# not a comment line",
		"-j", "-m", "--goto", "-A",
		strings.Repeat("x", MaxCommentLen),
	}
	refused := []string{"a\n-A INPUT -j DROP", "a\rb", "tab\there", "nul\x00", strings.Repeat("y", MaxCommentLen+1), "\xff"}
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			ctx := t.Context()
			runner := &countingRunner{}
			c := newNSClient(t, hosts[hostOf(b)], Config{Family: IPv4, Backend: b, Runner: runner})
			var rules []Rule
			for _, s := range accepted {
				rules = append(rules, Rule{Matches: []Match{Comment(s)}, Target: Return})
			}
			s := &Sync{Tables: []TableSync{{Table: TableFilter, Chains: []Chain{{Name: "LBK-C", Rules: rules}}}}}
			if err := c.Apply(ctx, s); err != nil {
				t.Fatal(err)
			}
			td, err := c.Save(ctx, TableFilter)
			if err != nil {
				t.Fatal(err)
			}
			if got := td.Chain("LBK-C").Rules; !reflect.DeepEqual(got, rules) {
				t.Errorf("comments changed:\n%v\nwant\n%v", got, rules)
			}
			if n := len(td.Chain(ChainInput).Rules); n != 0 {
				t.Errorf("a comment injected %d rules into INPUT", n)
			}
			restores := runner.count(b.binary(IPv4, "-restore"))
			for _, bad := range refused {
				bs := &Sync{Tables: []TableSync{{Table: TableFilter, Chains: []Chain{{Name: "LBK-C",
					Rules: []Rule{{Matches: []Match{Comment(bad)}, Target: Return}}}}}}}
				err := c.Apply(ctx, bs)
				var ve *ValidationError
				if !errors.As(err, &ve) || ve.Field != "tables[0].chains[0].rules[0].matches[0].comment" {
					t.Errorf("comment %q: %v", bad, err)
				}
				// Sanitized, it goes through and reads back as sanitized.
				bs.Tables[0].Chains[0].Rules[0].Matches[0] = Comment(SanitizeComment(bad))
				if err := c.Apply(ctx, bs); err != nil {
					t.Errorf("sanitized %q: %v", bad, err)
				}
				td, _ := c.Save(ctx, TableFilter)
				if got := td.Chain("LBK-C").Rules; len(got) != 1 || got[0].Matches[0] != Comment(SanitizeComment(bad)) {
					t.Errorf("sanitized %q read back as %v", bad, got)
				}
			}
			if n := runner.count(b.binary(IPv4, "-restore")) - restores; n != len(refused) {
				t.Errorf("%d restores for %d sanitized syncs: refused comments reached the tool", n, len(refused))
			}
			// Names are printed verbatim by iptables-save, so they are
			// refused rather than escaped; none of these reaches the tool.
			restores = runner.count(b.binary(IPv4, "-restore"))
			one := func(r Rule) []Rule { return []Rule{r} }
			for _, bad := range []TableSync{
				{Table: TableFilter, Chains: []Chain{{Name: "LBK-X\n-A INPUT -j DROP"}}},
				{Table: TableFilter, Chains: []Chain{{Name: `LBK-"X`}}},
				{Table: TableFilter, Chains: []Chain{{Name: "LBK X"}}},
				{Table: TableFilter, Delete: []ChainName{"LBK-X\nCOMMIT"}},
				{Table: TableFilter, Chains: []Chain{{Name: "LBK-C", Rules: one(Rule{Target: Jump{Chain: "X\n-A INPUT"}})}}},
				{Table: TableFilter, Chains: []Chain{{Name: "LBK-C", Rules: one(Rule{In: Iface{Name: "eth0\n-A"}})}}},
				{Table: TableFilter, Chains: []Chain{{Name: "LBK-C", Rules: one(Rule{Matches: []Match{Recent{Mode: RecentSet, Name: "a b"}}})}}},
				{Table: TableFilter, Chains: []Chain{{Name: "LBK-C", Rules: one(Rule{Matches: []Match{RawMatch{Module: "limit", Spec: "--limit 1/s\n-A INPUT -j DROP"}}})}}},
			} {
				err := c.Apply(ctx, &Sync{Tables: []TableSync{bad}})
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("%+v: %v", bad, err)
				}
			}
			if n := runner.count(b.binary(IPv4, "-restore")) - restores; n != 0 {
				t.Errorf("%d refused syncs reached iptables-restore", n)
			}
		})
	}
}

// TestKernelOneRestorePerSync checks that a sync of several tables and
// hundreds of rules is one iptables-restore --noflush --wait.
func TestKernelOneRestorePerSync(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	runner := &countingRunner{}
	eachKernel(t, hosts, Config{Runner: runner}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		s := serviceSync(f, 30, 5)
		before := len(runner.calls)
		if err := c.Apply(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		calls := runner.calls[before:]
		want := Cmd{Name: b.binary(f, "-restore"), Args: []string{"--noflush", "--wait"}}
		if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
			t.Fatalf("a sync of %d rules ran %+v, want one %+v", s.NumRules(), calls, want)
		}
	})
}

// TestKernelBackendDetection checks the default backend is detected and
// the forced ones are used.
func TestKernelBackendDetection(t *testing.T) {
	hosts := kernelHosts(t, "auto")
	h := hosts["auto"]
	for _, f := range []Family{IPv4, IPv6} {
		var c *Client
		err := h.Do(func() error {
			var err error
			c, err = New(context.Background(), f)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := h.Run(t.Context(), f.command(), "--version")
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseVersion(string(out))
		if err != nil {
			t.Fatal(err)
		}
		if c.Version() != v || (c.Backend() != BackendLegacy && c.Backend() != BackendNFT) {
			t.Errorf("%s: client %v, %s --version %v", f, c.Version(), f.command(), v)
		}
		t.Logf("%s: default iptables is %v", f, c.Version())
	}
	if _, err := NewWithConfig(t.Context(), Config{Backend: "bpf"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown backend: %v", err)
	}
	_, err := NewWithConfig(t.Context(), Config{Runner: missingRunner{}})
	if !errors.Is(err, ErrBinaryNotFound) {
		t.Errorf("missing binary: %v", err)
	}
}

// missingRunner runs every command as a binary that does not exist.
type missingRunner struct{}

func (missingRunner) Run(ctx context.Context, c *Cmd) error {
	return ExecRunner{}.Run(ctx, &Cmd{Name: "lbkit-missing-" + c.Name, Args: c.Args, Stdin: c.Stdin, Stdout: c.Stdout, Stderr: c.Stderr})
}

// TestKernelRestoreBuffer applies a caller-rendered Buffer on the kernel,
// and checks the optional logger.
func TestKernelRestoreBuffer(t *testing.T) {
	hosts := kernelHosts(t, "legacy")
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newNSClient(t, hosts["legacy"], Config{Family: IPv4, Backend: BackendLegacy, Logger: logger})
	b := NewBuffer(IPv4)
	_ = b.StartTable(TableNAT)
	_ = b.DeclareChain("LBK-BUF")
	for i := 0; i < 3; i++ {
		if err := b.AppendRule("LBK-BUF", &Rule{Matches: []Match{Comment(fmt.Sprint("rule ", i))}, Target: Return}); err != nil {
			t.Fatal(err)
		}
	}
	_ = b.Commit()
	if err := c.Restore(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	td, err := c.Save(t.Context(), TableNAT)
	if err != nil || len(td.Chain("LBK-BUF").Rules) != 3 {
		t.Fatalf("%v %v", td, err)
	}
	// The caller's logger got a debug record of the restore.
	if !strings.Contains(logs.String(), "msg=iptables-restore binary=iptables-legacy-restore") {
		t.Errorf("no restore record in the log:\n%s", logs.String())
	}
}

// TestKernelPartialSyncLeavesChainsAlone shows on the kernel that a partial
// sync does not touch the chains it does not name: their rules keep their
// packet counters, while a rewritten chain starts from zero.
func TestKernelPartialSyncLeavesChainsAlone(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			ctx := t.Context()
			h := hosts[hostOf(b)]
			c := newNSClient(t, h, Config{Family: IPv4, Backend: b})
			count := &Rule{Dst: Addr{Prefix: pfx("127.0.0.1/32")}, Proto: ProtoMatch{Proto: ProtoUDP},
				Matches: []Match{Ports{Dst: Port(9)}}, Target: Return}
			full := &Sync{Tables: []TableSync{{Table: TableFilter, Chains: []Chain{
				{Name: "LBK-KEEP", Rules: []Rule{*count}},
				{Name: "LBK-REWRITE", Rules: []Rule{*count}},
			}}}}
			if err := c.Apply(ctx, full); err != nil {
				t.Fatal(err)
			}
			for _, to := range []ChainName{"LBK-KEEP", "LBK-REWRITE"} {
				if _, err := c.EnsureJump(ctx, TableFilter, ChainOutput, to, Append, ""); err != nil {
					t.Fatal(err)
				}
			}
			const packets = 5
			err := h.Do(func() error {
				// Unconnected, so the ICMP port unreachable answers do not
				// turn into write errors.
				conn, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				defer conn.Close()
				to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
				for i := 0; i < packets; i++ {
					if _, err := conn.WriteTo([]byte("x"), to); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			counters := func() map[ChainName]uint64 {
				out, err := h.Run(ctx, b.binary(IPv4, "-save"), "-c", "-t", "filter")
				if err != nil {
					t.Fatal(err)
				}
				d, err := ParseDump(IPv4, out)
				if err != nil {
					t.Fatal(err)
				}
				m := map[ChainName]uint64{}
				for _, ch := range d.Table(TableFilter).Chains {
					for _, ctr := range ch.RuleCounters {
						m[ch.Name] += ctr.Packets
					}
				}
				return m
			}
			if got := counters(); got["LBK-KEEP"] != packets || got["LBK-REWRITE"] != packets {
				t.Fatalf("counters before = %v", got)
			}
			partial := &Sync{Tables: []TableSync{{Table: TableFilter, Chains: full.Tables[0].Chains[1:]}}}
			if err := c.Apply(ctx, partial); err != nil {
				t.Fatal(err)
			}
			if got := counters(); got["LBK-KEEP"] != packets || got["LBK-REWRITE"] != 0 {
				t.Fatalf("counters after a partial sync of LBK-REWRITE = %v, want LBK-KEEP %d, LBK-REWRITE 0", got, packets)
			}
		})
	}
}

// TestKernelInsertHooks checks TableSync.Insert on both backends and
// families: the hooks land first in their built-in chains in the listed
// order, in the same restore that declares the chains they jump to, the
// built-in chains' other rules stay, and the Fake ends up identical.
func TestKernelInsertHooks(t *testing.T) {
	hosts := kernelHosts(t, "legacy", "nft")
	eachKernel(t, hosts, Config{}, func(t *testing.T, c *nsClient, b Backend, f Family) {
		ctx := t.Context()
		fake := NewFake(f)
		seedForeign(t, c)
		seedForeign(t, fake)
		hook := func(comment string, to ChainName) ChainRule {
			return ChainRule{Chain: ChainPrerouting, Rule: Rule{Matches: []Match{Comment(comment)}, Target: Jump{Chain: to}}}
		}
		s := &Sync{Tables: []TableSync{{
			Table:  TableNAT,
			Chains: []Chain{{Name: "LBK-SERVICES", Rules: []Rule{{Target: Return}}}, {Name: "LBK-OTHER"}},
			Insert: []ChainRule{hook("first", "LBK-SERVICES"), hook("second", "LBK-OTHER"),
				{Chain: ChainOutput, Rule: Rule{Matches: []Match{Comment("out")}, Target: Jump{Chain: "LBK-SERVICES"}}}},
		}}}
		for _, in := range []Interface{c, fake} {
			if err := in.Apply(ctx, s); err != nil {
				t.Fatalf("%s: %v", in.Backend(), err)
			}
		}
		got, want := saveNoComments(t, c, TableNAT), saveNoComments(t, fake, TableNAT)
		if got != want {
			t.Fatalf("kernel and Fake differ after the insert:\n--- kernel\n%s\n--- fake\n%s", got, want)
		}
		dump, err := c.Save(ctx, TableNAT)
		if err != nil {
			t.Fatal(err)
		}
		pre := dump.Chain(ChainPrerouting).Rules
		if len(pre) != 3 || pre[0].String() != `-m comment --comment first -j LBK-SERVICES` ||
			pre[1].String() != `-m comment --comment second -j LBK-OTHER` || pre[2].String() != `-j FOREIGN-PRE` {
			var lines []string
			for i := range pre {
				lines = append(lines, pre[i].String())
			}
			t.Fatalf("PREROUTING is %q; want the two hooks in order, then the foreign jump", lines)
		}
	})
}
