package nftables

import (
	"context"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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

func TestKernelRenderedScriptsLoad(t *testing.T) {
	_, h := kernelHost(t)
	rs := sampleRuleset()
	for name, script := range map[string]string{
		"declarative": Render(testTable, rs),
		"full":        Full(rs).Render(testTable),
	} {
		if out, err := nftFile(t, h, script, "-c"); err != nil {
			t.Errorf("%s script does not load with nft -c: %v\n%s", name, err, out)
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
	la, lb := listTable(t, ha, testTable), listTable(t, hb, testTable)
	if na, nb := normalizeListing(normalizeTypeof(la, rs)), normalizeListing(normalizeTypeof(lb, rs)); na != nb {
		t.Errorf("nft lists the two tables differently (- nft -f, + netlink):\n%s", lineDiff(na, nb))
	}

	want, err := Canonical(testTable, rs)
	if err != nil {
		t.Fatal(err)
	}
	ea := dialIn(t, ha, testTable)
	for name, e := range map[string]*Engine{"nft -f": ea, "netlink": eb} {
		got, err := e.Read(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if g, w := Render(testTable, got), Render(testTable, want); g != w {
			t.Errorf("Read after %s differs from Canonical (- read, + canonical):\n%s", name, lineDiff(g, w))
		}
	}
}
