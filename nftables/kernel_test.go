package nftables

import (
	"context"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
)

// kernelHost builds a lab with one host (plus the hosts named) and returns
// the first host: every kernel test programs nftables only inside it.
func kernelHost(t *testing.T, names ...string) (*nettest.Lab, *nettest.Host) {
	t.Helper()
	nettest.RequireKernel(t, "nft")
	hosts := []nettest.HostSpec{{Name: "lb", Forwarding: true}}
	for _, n := range names {
		hosts = append(hosts, nettest.HostSpec{Name: n})
	}
	lab := nettest.New(t, nettest.Topology{Hosts: hosts})
	return lab, lab.Host("lb")
}

func dialIn(t testing.TB, h *nettest.Host, tbl Table) *Engine {
	t.Helper()
	e, err := Dial(tbl, WithNetNS(h.NamespaceFd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// nftFile runs `nft <args> -f <script>` inside the host.
func nftFile(t testing.TB, h *nettest.Host, script string, args ...string) ([]byte, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.nft")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return h.Run(context.Background(), "nft", append(args, "-f", path)...)
}

func listTable(t testing.TB, h *nettest.Host, tbl Table) string {
	t.Helper()
	return h.MustRun(t, "nft", "list", "table", string(tbl.Family), tbl.Name)
}

var typeofLine = regexp.MustCompile(`(?m)^(\s*)(typeof .*|type .*)$`)

// normalizeTypeof replaces the key declaration of maps that use integers
// by the typed form, the one difference google/nftables v0.3.0 cannot
// avoid (it writes no typeof metadata, so nft prints such maps as
// "type 0 : ..."). Everything else must be identical.
func normalizeTypeof(listing string, rs *Ruleset) string {
	lines := strings.Split(listing, "\n")
	cur := ""
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 3 && (f[0] == "map" || f[0] == "set") && f[2] == "{" {
			cur = f[1]
			continue
		}
		s := rs.Set(cur)
		if s == nil || !s.usesTypeof() {
			continue
		}
		if m := typeofLine.FindStringSubmatch(l); m != nil {
			lines[i] = m[1] + "<integer map " + typesString(s.Key) + " : " + typesString(s.Data) + ">"
		}
	}
	return strings.Join(lines, "\n")
}

var (
	expiresRE = regexp.MustCompile(` expires [0-9dhms]+`)
	anonIntRE = regexp.MustCompile(`(numgen|jhash) .*v?map \{ .* \}`)
	anonKeyRE = regexp.MustCompile(`(\{ |, )([0-9]+) :`)
)

// normalizeListing removes what legitimately differs between two listings
// of the same ruleset: element expiry times (they run), and the keys of
// anonymous maps indexed by numgen or jhash, which nft prints byte-swapped
// when google/nftables created the map (v0.3.0 marks every anonymous set
// big-endian; the keys the kernel holds are right, the traffic tests prove
// it).
func normalizeListing(s string) string {
	s = expiresRE.ReplaceAllString(s, "")
	return anonIntRE.ReplaceAllStringFunc(s, func(m string) string {
		return anonKeyRE.ReplaceAllStringFunc(m, func(k string) string {
			sub := anonKeyRE.FindStringSubmatch(k)
			n, _ := strconv.ParseUint(sub[2], 10, 32)
			if n >= 1<<24 {
				n = uint64(bits.ReverseBytes32(uint32(n)))
			}
			return sub[1] + strconv.FormatUint(n, 10) + " :"
		})
	})
}

// TestKernelRenderedScriptsLoad checks every rendered script and golden
// file with `nft -c -f`: whole-table scripts in an empty namespace, delta
// scripts on top of the sample table applied through netlink.
func TestKernelRenderedScriptsLoad(t *testing.T) {
	_, h := kernelHost(t)
	rs := sampleRuleset()
	for name, script := range map[string]string{
		"declarative": Render(testTable, rs),
		"full":        Full(rs).Render(testTable),
		"create":      Create(rs).Render(testTable),
	} {
		if out, err := nftFile(t, h, script, "-c"); err != nil {
			t.Errorf("%s script does not load with nft -c: %v\n%s", name, err, out)
		}
	}
	files, err := filepath.Glob("testdata/*.nft")
	if err != nil || len(files) < 5 {
		t.Fatalf("golden scripts: %v %v", files, err)
	}
	deltas := map[string]bool{"sample-delta.nft": true, "drift-repair.nft": true}
	for _, f := range files {
		if !deltas[filepath.Base(f)] {
			b, _ := os.ReadFile(f)
			if out, err := nftFile(t, h, string(b), "-c"); err != nil {
				t.Errorf("%s does not load with nft -c: %v\n%s", f, err, out)
			}
		}
	}
	e := dialIn(t, h, testTable)
	if err := e.Apply(context.Background(), Full(rs)); err != nil {
		t.Fatal(err)
	}
	for f := range deltas {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := nftFile(t, h, string(b), "-c"); err != nil {
			t.Errorf("%s does not load with nft -c on the sample table: %v\n%s", f, err, out)
		}
	}
}

// TestKernelDifferential applies the sample ruleset twice: as the rendered
// script through `nft -f` in one namespace and through netlink in another,
// and requires nft to list both tables the same, and Read to return the
// canonical form of the ruleset from both.
func TestKernelDifferential(t *testing.T) {
	nettest.RequireKernel(t, "nft")
	lab := nettest.New(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "viatext"}, {Name: "vianetlink"}}})
	ha, hb := lab.Host("viatext"), lab.Host("vianetlink")
	rs := sampleRuleset()
	ctx := context.Background()

	if out, err := nftFile(t, ha, Render(testTable, rs)); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	eb := dialIn(t, hb, testTable)
	if err := eb.Apply(ctx, Full(rs)); err != nil {
		t.Fatal(err)
	}
	requireSameTable(t, testTable, rs, ha, hb)
}

// requireSameTable checks that the table holds rs in both hosts: nft lists
// it the same (up to normalizeListing and normalizeTypeof), and the engine
// reads back Canonical(rs) from both.
func requireSameTable(t *testing.T, tbl Table, rs *Ruleset, ha, hb *nettest.Host) {
	t.Helper()
	la, lb := listTable(t, ha, tbl), listTable(t, hb, tbl)
	if na, nb := normalizeListing(normalizeTypeof(la, rs)), normalizeListing(normalizeTypeof(lb, rs)); na != nb {
		t.Errorf("nft lists the two tables differently (- %s, + %s):\n%s", ha.Name(), hb.Name(), lineDiff(na, nb))
	}
	want, err := Canonical(tbl, rs)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*nettest.Host{ha, hb} {
		got, err := dialIn(t, h, tbl).Read(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", h.Name(), err)
		}
		if g, w := Render(tbl, got), Render(tbl, want); g != w {
			t.Errorf("Read in %s differs from Canonical (- read, + canonical):\n%s", h.Name(), lineDiff(g, w))
		}
	}
}

// changedSample is sampleRuleset after a typical sync: a service gains an
// endpoint, another loses its chain and dispatch element, a base chain
// changes priority, a set changes definition, a comment changes.
func changedSample() *Ruleset {
	rs := sampleRuleset()
	eps := rs.Set("eps4")
	eps.Elements = append(eps.Elements, MapElem([]Value{Int(3)}, Addr(a("192.0.2.24")), Port(8080)))
	eps.Elements[0] = MapElem([]Value{Int(0)}, Addr(a("192.0.2.25")), Port(8080))
	svc := rs.Set("services4")
	svc.Elements = svc.Elements[:1] // svc-b and svc-aff go
	var chains []Chain
	for _, c := range rs.Chains {
		switch c.Name {
		case "svc-b", "svc-aff", "ep-a1", "ep-a2":
			continue
		case "svc-a":
			c.Rules = append([]Rule(nil), c.Rules...)
			c.Rules[1] = R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}}, DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: 4}, Map: "eps4"})
		case "output":
			b := *c.Base
			b.Priority = -90
			c.Base = &b
		case "nodeports":
			c.Rules = []Rule{{Stmts: c.Rules[0].Stmts, Comment: "nodeport 30080"}}
		}
		chains = append(chains, c)
	}
	rs.Chains = chains
	var sets []Set
	for _, s := range rs.Sets {
		switch s.Name {
		case "aff-a1":
			continue
		case "cidrs":
			s.Comment = "now with a comment"
		}
		sets = append(sets, s)
	}
	rs.Sets = sets
	return rs
}

// TestKernelDeltaDifferential applies a change as a delta: the rendered
// delta script through `nft -f` in one namespace, Sync through netlink in
// another, both on the same base. Both must list the
// same, and the delta must be what Diff says, not a rewrite.
func TestKernelDeltaDifferential(t *testing.T) {
	nettest.RequireKernel(t, "nft")
	lab := nettest.New(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "viatext"}, {Name: "vianetlink"}}})
	ha, hb := lab.Host("viatext"), lab.Host("vianetlink")
	ctx := context.Background()
	old, new := sampleRuleset(), changedSample()
	tx := Diff(old, new)
	golden(t, "sample-delta.nft", tx.Render(testTable))

	// The base is applied through netlink in both namespaces: nft 1.0.6
	// cannot add a rule using a map it read from the kernel with a typeof
	// declaration naming `th dport` ("conflicting protocols specified: tcp
	// vs. th"), and only maps created by nft carry that declaration.
	ea := dialIn(t, ha, testTable)
	if err := ea.Apply(ctx, Full(old)); err != nil {
		t.Fatal(err)
	}
	if out, err := nftFile(t, ha, tx.Render(testTable)); err != nil {
		t.Fatalf("delta does not load with nft -f: %v\n%s", err, out)
	}
	eb := dialIn(t, hb, testTable)
	if _, err := eb.Sync(ctx, old); err != nil {
		t.Fatal(err)
	}
	sent, err := eb.Sync(ctx, new)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Render(testTable) != tx.Render(testTable) {
		t.Errorf("Sync sent another delta than Diff:\n%s", lineDiff(sent.Render(testTable), tx.Render(testTable)))
	}
	requireSameTable(t, testTable, new, ha, hb)
	want, err := Canonical(testTable, new)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eb.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing left to do.
	if again := Diff(got, want); !again.Empty() {
		t.Errorf("Diff(Read, Canonical) after the delta is not empty:\n%s", again.Render(testTable))
	}
}

// TestKernelFailedBatchChangesNothing sends a batch whose last operation
// fails (deleting an element that does not exist) after operations that
// would change chains, rules, sets and elements: the kernel must refuse
// all of it, and traffic-relevant state must be byte-for-byte the same.
func TestKernelFailedBatchChangesNothing(t *testing.T) {
	_, h := kernelHost(t)
	ctx := context.Background()
	e := dialIn(t, h, testTable)
	if err := e.Apply(ctx, Full(sampleRuleset())); err != nil {
		t.Fatal(err)
	}
	before := listTable(t, h, testTable)
	tx := &Transaction{}
	tx.AddChain(Chain{Name: "new-chain", Rules: []Rule{R(Counter{})}})
	tx.FlushChain("svc-a")
	tx.DeleteElements("services4", VMapElem(Goto("svc-b"), Addr(a("192.0.2.11")), Proto(udp), Port(53)))
	tx.AddElements("eps4", MapElem([]Value{Int(9)}, Addr(a("192.0.2.29")), Port(80)))
	tx.DeleteSet("marks")
	tx.DeleteElements("eps4", MapElem([]Value{Int(77)}, Addr(a("192.0.2.77")), Port(80))) // does not exist
	err := e.Apply(ctx, tx)
	var ke *KernelError
	if !errors.As(err, &ke) || !errors.Is(err, syscall.ENOENT) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("got %v, want a KernelError wrapping ENOENT", err)
	}
	if after := listTable(t, h, testTable); normalizeListing(after) != normalizeListing(before) {
		t.Errorf("a refused batch changed the table:\n%s", lineDiff(normalizeListing(before), normalizeListing(after)))
	}
	// The engine still works afterwards (it reconnected).
	ok := &Transaction{}
	ok.AddElements("eps4", MapElem([]Value{Int(9)}, Addr(a("192.0.2.29")), Port(80)))
	if err := e.Apply(ctx, ok); err != nil {
		t.Fatalf("apply after a refused batch: %v", err)
	}
}

// TestKernelForeignTablesSurvive: tables the engine does not own, including
// one with the same name in another family, survive Apply, Sync, Reconcile
// and Cleanup byte for byte.
func TestKernelForeignTablesSurvive(t *testing.T) {
	_, h := kernelHost(t)
	ctx := context.Background()
	foreign := `table ip foreign {
	set blocked { type ipv4_addr; elements = { 198.51.100.7 } }
	chain input { type filter hook input priority 0; policy accept; ip saddr @blocked counter drop; }
}
table ip lbkit-test {
	chain c { counter; }
}
table inet lbkit-test-2 {
	chain c { counter; }
}
`
	if out, err := nftFile(t, h, foreign); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	listForeign := func() string {
		var b strings.Builder
		for _, tb := range []string{"ip foreign", "ip lbkit-test", "inet lbkit-test-2"} {
			b.WriteString(h.MustRun(t, "nft", append([]string{"list", "table"}, strings.Fields(tb)...)...))
		}
		return b.String()
	}
	before := listForeign()
	e := dialIn(t, h, testTable)
	steps := []struct {
		name string
		run  func() error
	}{
		{"apply", func() error { return e.Apply(ctx, Full(sampleRuleset())) }},
		{"sync", func() error { _, err := e.Sync(ctx, changedSample()); return err }},
		{"reconcile", func() error { _, err := e.Reconcile(ctx, sampleRuleset()); return err }},
		{"cleanup", func() error { return e.Cleanup(ctx) }},
		{"cleanup again", func() error { return e.Cleanup(ctx) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if after := listForeign(); after != before {
			t.Fatalf("%s changed foreign tables:\n%s", s.name, lineDiff(before, after))
		}
	}
	if _, err := e.Read(ctx); !errors.Is(err, ErrNotFound) {
		t.Errorf("after Cleanup Read = %v, want ErrNotFound", err)
	}
	out := h.MustRun(t, "nft", "list", "tables")
	if strings.Contains(out, "inet lbkit-test\n") {
		t.Errorf("cleanup left the owned table:\n%s", out)
	}
}

// TestKernelReconcileHealsDrift: someone flushes a service chain and
// deletes an endpoint with nft. Sync, which trusts what it applied, sends
// nothing; Reconcile reads the kernel and repairs exactly that.
func TestKernelReconcileHealsDrift(t *testing.T) {
	_, h := kernelHost(t)
	ctx := context.Background()
	e := dialIn(t, h, testTable)
	rs := sampleRuleset()
	if _, err := e.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	want := listTable(t, h, testTable)
	h.MustRun(t, "nft", "flush", "chain", "inet", testTable.Name, "svc-a")
	h.MustRun(t, "nft", "delete", "element", "inet", testTable.Name, "eps4", "{ 1 }")
	h.MustRun(t, "nft", "add", "rule", "inet", testTable.Name, "nodeports", "counter")
	tx, err := e.Sync(ctx, rs)
	if err != nil || !tx.Empty() {
		t.Fatalf("Sync after drift: %v, sent %q", err, tx.Render(testTable))
	}
	tx, err = e.Reconcile(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "drift-repair.nft", tx.Render(testTable))
	if got := listTable(t, h, testTable); normalizeListing(got) != normalizeListing(want) {
		t.Errorf("Reconcile did not restore the table:\n%s", lineDiff(normalizeListing(want), normalizeListing(got)))
	}
}

// familyRuleset is a small ruleset for an ip or ip6 table: no nfproto
// guards there, and the family's own reject.
func familyRuleset(fam Family) *Ruleset {
	addr, src, other := a("192.0.2.10"), FieldIPSaddr, p("10.0.0.0/8")
	dst := FieldIPDaddr
	key := TypeIPv4Addr
	if fam == FamilyIPv6 {
		addr, src, other, dst, key = a("2001:db8::10"), FieldIP6Saddr, p("2001:db8:1::/48"), FieldIP6Daddr, TypeIPv6Addr
	}
	return &Ruleset{
		Sets: []Set{
			{Name: "svc", Key: []Type{key, TypeInetProto, TypeInetService}, Data: []Type{TypeVerdict},
				Elements: []Element{VMapElem(Goto("web"), Addr(addr), Proto(tcp), Port(80))}},
			{Name: "eps", Key: []Type{TypeInteger}, Data: []Type{key, TypeInetService},
				Elements: []Element{MapElem([]Value{Int(0)}, Addr(addr.Next()), Port(8080))}},
			{Name: "nets", Key: []Type{key}, Interval: true, Elements: []Element{E(Prefix(other))}},
		},
		Chains: []Chain{
			{Name: "pre", Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityDstNAT}, Rules: []Rule{
				R(VMap{Key: Concat{dst, FieldL4Proto, FieldTHDport}, Map: "svc"}),
			}},
			{Name: "web", Rules: []Rule{
				R(Lookup{Fields: []Field{src}, Set: "nets"}, SetMark{Op: MarkOr, Value: 1}),
				R(Match{Field: FieldTCPDport, Values: []Value{Port(80)}}, DNATMap{Family: fam, Key: JHash{Fields: []Field{src, FieldTHSport}, Mod: 1, Seed: 7}, Map: "eps"}),
			}},
			{Name: "in", Base: &BaseChain{Type: ChainTypeFilter, Hook: HookInput}, Rules: []Rule{
				R(Match{Field: src, Values: []Value{Prefix(other)}}, Reject{}),
				R(Match{Field: FieldTCPDport, Values: []Value{Port(22)}}, Reject{Type: RejectTCPReset}),
			}},
		},
	}
}

// TestKernelDifferentialFamilies runs the text-versus-netlink comparison
// for ip and ip6 tables, where nft adds no nfproto guards.
func TestKernelDifferentialFamilies(t *testing.T) {
	nettest.RequireKernel(t, "nft")
	for _, fam := range []Family{FamilyIPv4, FamilyIPv6} {
		t.Run(string(fam), func(t *testing.T) {
			tbl := Table{Family: fam, Name: "lbkit-fam"}
			rs := familyRuleset(fam)
			if err := Validate(tbl, rs); err != nil {
				t.Fatal(err)
			}
			lab := nettest.New(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "viatext"}, {Name: "vianetlink"}}})
			ha, hb := lab.Host("viatext"), lab.Host("vianetlink")
			if out, err := nftFile(t, ha, Render(tbl, rs)); err != nil {
				t.Fatalf("nft -f: %v\n%s", err, out)
			}
			eb := dialIn(t, hb, tbl)
			if err := eb.Apply(context.Background(), Full(rs)); err != nil {
				t.Fatal(err)
			}
			requireSameTable(t, tbl, rs, ha, hb)
		})
	}
}
