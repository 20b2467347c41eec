package vmtest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The lines below are copied from the depmod output for Debian's
// linux-image-6.1.0-56-amd64 (trimmed to the modules the VM uses).
const debianDep = `kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
kernel/lib/libcrc32c.ko:
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko:
kernel/net/netfilter/nf_conntrack.ko: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs_rr.ko: kernel/net/netfilter/ipvs/ip_vs.ko kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/ipv4/tunnel4.ko:
kernel/net/ipv4/ip_tunnel.ko:
kernel/net/ipv4/ipip.ko: kernel/net/ipv4/tunnel4.ko kernel/net/ipv4/ip_tunnel.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
`

const debianSoftdep = `# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep cifs gcm
softdep libcrc32c pre: crc32c
`

const debianAlias = `# Aliases extracted from modules themselves.
alias crypto-crc32c-intel crc32c_intel
alias crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c-generic crc32c_generic
alias crc32c-generic crc32c_generic
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
`

func debianIndex(t testing.TB) *ModuleIndex {
	t.Helper()
	dir := t.TempDir()
	for name, text := range map[string]string{
		"modules.dep":     debianDep,
		"modules.softdep": debianSoftdep,
		"modules.alias":   debianAlias,
		"modules.builtin": "kernel/net/unix/unix.ko\nkernel/net/ipv6/ipv6.ko\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ix, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

// checkOrder fails unless every module of order comes after its modules.dep
// dependencies and its pre soft dependencies that are in order.
func checkOrder(t testing.TB, ix *ModuleIndex, order []Module) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range order {
		if _, dup := pos[m.Name]; dup {
			t.Fatalf("%s appears twice in %v", m.Name, names(order))
		}
		pos[m.Name] = i
	}
	for i, m := range order {
		for _, d := range ix.Modules[m.Name].Deps {
			if ix.Builtin[d] {
				continue
			}
			j, ok := pos[d]
			if !ok || j > i {
				t.Fatalf("%s (at %d) needs %s, which is at %d (present %v) in %v", m.Name, i, d, j, ok, names(order))
			}
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/arch/x86/crypto/crc32c-intel.ko":    "crc32c_intel",
		"kernel/net/ipv4/ipip.ko.xz":                "ipip",
		"/lib/modules/6.1/kernel/lib/libcrc32c.ko":  "libcrc32c",
		"kernel/net/netfilter/ipvs/ip_vs_mh.ko.zst": "ip_vs_mh",
		"crc32c-generic":                            "crc32c_generic",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoadOrderDebian(t *testing.T) {
	ix := debianIndex(t)
	order, err := ix.LoadOrder([]string{"ip_vs", "ip_vs_rr", "crc32c_generic", "ipip", "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"crc32c_generic", "libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack", "ip_vs",
		"ip_vs_rr", "ip_tunnel", "tunnel4", "ipip", "llc", "stp", "bridge",
	}
	if !slices.Equal(names(order), want) {
		t.Fatalf("order\n got %v\nwant %v", names(order), want)
	}
	checkOrder(t, ix, order)
	for _, m := range order {
		if !strings.HasPrefix(m.Path, "kernel/") || ModuleName(m.Path) != m.Name {
			t.Errorf("module %s has path %q", m.Name, m.Path)
		}
	}
}

func TestLoadOrderSoftdepAlias(t *testing.T) {
	ix := debianIndex(t)
	// Without crc32c_generic in the list the alias "crc32c" matches two
	// modules and the resolver must not guess.
	_, err := ix.LoadOrder([]string{"libcrc32c"})
	var me *ModuleError
	if !errors.As(err, &me) || !errors.Is(err, ErrAmbiguousSoftdep) || me.Module != "crc32c" {
		t.Fatalf("err = %v, want ambiguous softdep crc32c", err)
	}
	if !strings.Contains(err.Error(), "crc32c_intel") || !strings.Contains(err.Error(), "crc32c_generic") {
		t.Errorf("error %q does not name the candidates", err)
	}
	// Naming the generic one, even after libcrc32c, puts it first.
	order, err := ix.LoadOrder([]string{"libcrc32c", "crc32c_generic"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(order); !slices.Equal(got, []string{"crc32c_generic", "libcrc32c"}) {
		t.Fatalf("order %v", got)
	}
}

func TestParseSoftdepLikeKmod(t *testing.T) {
	got, err := ParseModulesSoftdep(strings.NewReader("softdep cifs gcm\nsoftdep a x pre: b c post: d pre: e\nsoftdep a post: f\noptions a x=1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sd := got["cifs"]; len(sd.Pre)+len(sd.Post) != 0 {
		t.Errorf("cifs: %+v, want names before pre:/post: ignored", sd)
	}
	if sd := got["a"]; !slices.Equal(sd.Pre, []string{"b", "c", "e"}) || !slices.Equal(sd.Post, []string{"d", "f"}) {
		t.Errorf("a: %+v", sd)
	}
}

func TestLoadOrderSoftdepSingleProviderAndPost(t *testing.T) {
	ix := &ModuleIndex{
		Modules: map[string]Module{
			"a": {Name: "a", Path: "a.ko"},
			"b": {Name: "b", Path: "b.ko"},
			"c": {Name: "c", Path: "c.ko"},
		},
		Softdeps: map[string]Softdep{"a": {Pre: []string{"alias-b", "nothing-provides-this"}, Post: []string{"c"}}},
		Aliases:  map[string][]string{"alias-b": {"b"}},
	}
	order, err := ix.LoadOrder([]string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(order); !slices.Equal(got, []string{"b", "a", "c"}) {
		t.Fatalf("order %v, want [b a c]", got)
	}
}

func TestLoadOrderErrors(t *testing.T) {
	ix := &ModuleIndex{
		Modules: map[string]Module{
			"a": {Name: "a", Path: "a.ko", Deps: []string{"b"}},
			"b": {Name: "b", Path: "b.ko", Deps: []string{"a"}},
			"c": {Name: "c", Path: "c.ko", Deps: []string{"gone"}},
			"d": {Name: "d", Path: "d.ko", Deps: []string{"builtin_one"}},
		},
		Builtin: map[string]bool{"builtin_one": true},
	}
	_, err := ix.LoadOrder([]string{"a"})
	if !errors.Is(err, ErrDependencyCycle) {
		t.Errorf("cycle: err = %v", err)
	}
	_, err = ix.LoadOrder([]string{"c"})
	var me *ModuleError
	if !errors.Is(err, ErrUnknownModule) || !errors.As(err, &me) || me.Module != "gone" || !slices.Equal(me.Chain, []string{"c"}) {
		t.Errorf("unknown: err = %v", err)
	}
	_, err = ix.LoadOrder([]string{"nosuch"})
	if !errors.Is(err, ErrUnknownModule) {
		t.Errorf("unknown wanted: err = %v", err)
	}
	order, err := ix.LoadOrder([]string{"d", "builtin_one"})
	if err != nil || !slices.Equal(names(order), []string{"d"}) {
		t.Errorf("builtin: order %v, err %v", names(order), err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		parse      func(string) error
		line       int
	}{
		{"dep without colon", "kernel/a.ko kernel/b.ko\n", parseDepString, 1},
		{"dep twice", "a.ko:\n\na.ko:\n", parseDepString, 3},
		{"dep two targets", "a.ko: b.ko: c.ko\n", parseDepString, 1},
		{"softdep no name", "# c\nsoftdep pre: a\n", parseSoftdepString, 2},
		{"alias short", "alias x\n", parseAliasString, 1},
		{"builtin two fields", "a.ko b.ko\n", parseBuiltinString, 1},
	} {
		err := tc.parse(tc.text)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != tc.line {
			t.Errorf("%s: err = %#v", tc.name, err)
		}
	}
}

func parseDepString(s string) error {
	_, err := ParseModulesDep(strings.NewReader(s))
	return err
}

func parseSoftdepString(s string) error {
	_, err := ParseModulesSoftdep(strings.NewReader(s))
	return err
}

func parseAliasString(s string) error {
	_, err := ParseModulesAlias(strings.NewReader(s))
	return err
}

func parseBuiltinString(s string) error {
	_, err := ParseModulesBuiltin(strings.NewReader(s))
	return err
}

func TestDefaultModulesHaveNoDuplicates(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range DefaultModules() {
		if seen[m] || ModuleName(m) != m {
			t.Errorf("module %q listed twice or not in kernel spelling", m)
		}
		seen[m] = true
	}
	for _, s := range IPVSSchedulers() {
		if !seen["ip_vs_"+s] {
			t.Errorf("scheduler %s has no module", s)
		}
	}
	// DefaultModules hands out a fresh slice every time.
	a := DefaultModules()
	a[0] = "changed"
	if DefaultModules()[0] == "changed" {
		t.Error("DefaultModules shares its slice")
	}
}

// formatDep writes mods back in modules.dep syntax.
func formatDep(mods map[string]Module) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(mods)) {
		m := mods[name]
		b.WriteString(m.Path + ":")
		for _, d := range m.Deps {
			b.WriteString(" " + d + ".ko")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// FuzzModulesDep parses arbitrary modules.dep text. What parses must format
// back to the same modules, and the load order of all of them must either
// be an error of the documented kinds or put every module after its
// dependencies.
func FuzzModulesDep(f *testing.F) {
	f.Add(debianDep)
	f.Add("a.ko: b.ko\nb.ko: a.ko\n")
	f.Add("a.ko: gone.ko\n")
	f.Add("\n# comment\nx-y.ko.xz:\n")
	f.Fuzz(func(t *testing.T, text string) {
		mods, err := ParseModulesDep(strings.NewReader(text))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		again, err := ParseModulesDep(strings.NewReader(formatDep(mods)))
		if err != nil {
			t.Fatalf("reparse of %q: %v", formatDep(mods), err)
		}
		if fmt.Sprint(again) != fmt.Sprint(mods) {
			t.Fatalf("round trip changed\n%v\n%v", mods, again)
		}
		ix := &ModuleIndex{Modules: mods}
		want := slices.Sorted(maps.Keys(mods))
		order, err := ix.LoadOrder(want)
		if err != nil {
			if !errors.Is(err, ErrDependencyCycle) && !errors.Is(err, ErrUnknownModule) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if len(order) != len(mods) {
			t.Fatalf("order has %d modules, index %d", len(order), len(mods))
		}
		checkOrder(t, ix, order)
	})
}

// FuzzModulesSoftdep parses arbitrary softdep and alias text and resolves a
// fixed set of modules with it: resolution may fail only with a
// *ModuleError and otherwise respects modules.dep order.
func FuzzModulesSoftdep(f *testing.F) {
	f.Add(debianSoftdep, debianAlias)
	f.Add("softdep a pre: b post: a\nsoftdep b pre: a\n", "alias x a\nalias x b\n")
	f.Add("softdep ip_vs pre: crc32c post: crc32c\n", "")
	base := debianIndex(f)
	f.Fuzz(func(t *testing.T, softdep, alias string) {
		sd, err := ParseModulesSoftdep(strings.NewReader(softdep))
		if err != nil {
			return
		}
		al, err := ParseModulesAlias(strings.NewReader(alias))
		if err != nil {
			return
		}
		ix := &ModuleIndex{Modules: base.Modules, Softdeps: sd, Aliases: al, Builtin: base.Builtin}
		order, err := ix.LoadOrder([]string{"ip_vs", "ipip", "bridge", "crc32c_generic"})
		if err != nil {
			var me *ModuleError
			if !errors.As(err, &me) {
				t.Fatalf("error %T: %v", err, err)
			}
			return
		}
		checkOrder(t, ix, order)
	})
}
