package vmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// IPVSSchedulers returns the IPVS schedulers whose modules the VM loads
// (ip_vs_<name>). Debian's 6.1 kernel has no ip_vs_twos, so it is not
// listed: DefaultModules must only name modules the kernel has.
func IPVSSchedulers() []string {
	return []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
}

// DefaultModules returns, in a fresh slice, the kernel modules the VM loads
// before it runs the tests: the one place to extend when a VM test needs
// more of the kernel. Dependencies found in modules.dep and soft
// dependencies found in modules.softdep are added by ModuleIndex.LoadOrder,
// so only what a test uses directly needs to be named here.
func DefaultModules() []string {
	mods := []string{
		// IPVS core; it pulls nf_conntrack, nf_defrag_ipv4/6 and libcrc32c.
		"ip_vs",
	}
	for _, s := range IPVSSchedulers() {
		mods = append(mods, "ip_vs_"+s)
	}
	mods = append(mods,
		// Connection tracking and what it needs, named explicitly so that a
		// change of modules.dep cannot silently drop them.
		"nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6",
		// libcrc32c declares "softdep pre: crc32c", an alias that several
		// modules provide; naming crc32c_generic here picks the one that
		// works on every CPU qemu emulates (crc32c_intel needs SSE4.2).
		"libcrc32c", "crc32c_generic",
		// IP-in-IP tunnels (IPVS tunnel forwarding, DSR), IPv4 and IPv6.
		"ipip", "tunnel4", "ip_tunnel", "ip6_tunnel", "tunnel6",
		// Links the tier-2 harness (internal/nettest) builds labs from.
		"veth", "bridge", "stp", "llc", "dummy",
		// netlink.NewHandleAt opens NETLINK_ROUTE, NETLINK_XFRM and
		// NETLINK_NETFILTER sockets unless told otherwise; the last two
		// need these modules (on a host they are usually loaded already).
		"xfrm_user", "nfnetlink",
	)
	return mods
}

// Module is one kernel module of a ModuleIndex.
type Module struct {
	// Name is the module name as the kernel knows it: the file name
	// without ".ko" or a compression suffix, with "-" turned into "_".
	Name string
	// Path is the module file relative to /lib/modules/<release>, as
	// modules.dep spells it ("kernel/net/ipv4/ipip.ko").
	Path string
	// Deps are the names of the modules it needs, in modules.dep order.
	Deps []string
}

// Softdep holds the soft dependencies of one module: modules to load before
// (Pre) and after (Post) it. Entries may be module names or aliases.
type Softdep struct {
	Pre, Post []string
}

// ModuleIndex is what depmod wrote about one kernel's modules.
type ModuleIndex struct {
	// Modules maps a module name to its entry in modules.dep.
	Modules map[string]Module
	// Softdeps maps a module name to its modules.softdep entry.
	Softdeps map[string]Softdep
	// Aliases maps an alias (an exact name; wildcard patterns are kept
	// verbatim and never matched) to the modules that provide it.
	Aliases map[string][]string
	// Builtin holds the names of modules built into the kernel image.
	Builtin map[string]bool
}

// Sentinel errors of module resolution, wrapped in a *ModuleError.
var (
	// ErrUnknownModule: the name is neither in modules.dep nor built in.
	ErrUnknownModule = errors.New("module not found in modules.dep or modules.builtin")
	// ErrDependencyCycle: modules.dep says a module needs itself.
	ErrDependencyCycle = errors.New("dependency cycle")
	// ErrAmbiguousSoftdep: a soft dependency names an alias that several
	// modules provide and none of them was asked for.
	ErrAmbiguousSoftdep = errors.New("soft dependency matches several modules")
)

// ModuleError says which module could not be resolved and through which
// chain of dependencies it was reached.
type ModuleError struct {
	Module string
	// Chain lists the modules that led to Module, outermost first.
	Chain []string
	Err   error
}

func (e *ModuleError) Error() string {
	via := ""
	if len(e.Chain) > 0 {
		via = " (needed by " + strings.Join(e.Chain, " <- ") + ")"
	}
	return fmt.Sprintf("vmtest: module %s%s: %v", e.Module, via, e.Err)
}

func (e *ModuleError) Unwrap() error { return e.Err }

// ParseError reports a malformed line of a depmod output file.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("vmtest: %s:%d: %s", e.File, e.Line, e.Msg)
}

// ModuleName turns a module file path or a name into the name the kernel
// uses: "kernel/crypto/crc32c-intel.ko.xz" becomes "crc32c_intel".
func ModuleName(p string) string {
	base := path.Base(p)
	for _, ext := range []string{".xz", ".gz", ".zst"} {
		base = strings.TrimSuffix(base, ext)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// lines calls fn for every line of r that is neither blank nor a comment,
// with its 1-based number and its whitespace-separated fields.
func lines(r io.Reader, fn func(n int, fields []string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if err := fn(n, fields); err != nil {
			return err
		}
	}
	return sc.Err()
}

// ParseModulesDep parses modules.dep: one line per module,
// "path: dep-path dep-path ...".
func ParseModulesDep(r io.Reader) (map[string]Module, error) {
	mods := map[string]Module{}
	err := lines(r, func(n int, fields []string) error {
		if !strings.HasSuffix(fields[0], ":") || len(fields[0]) == 1 {
			return &ParseError{File: "modules.dep", Line: n, Msg: fmt.Sprintf("want \"path: deps...\", got %q", strings.Join(fields, " "))}
		}
		p := strings.TrimSuffix(fields[0], ":")
		m := Module{Name: ModuleName(p), Path: p}
		for _, d := range fields[1:] {
			if strings.HasSuffix(d, ":") {
				return &ParseError{File: "modules.dep", Line: n, Msg: fmt.Sprintf("two module paths on one line (%q)", d)}
			}
			m.Deps = append(m.Deps, ModuleName(d))
		}
		if _, dup := mods[m.Name]; dup {
			return &ParseError{File: "modules.dep", Line: n, Msg: "module " + m.Name + " listed twice"}
		}
		mods[m.Name] = m
		return nil
	})
	return mods, err
}

// ParseModulesSoftdep parses modules.softdep (and the softdep lines of a
// modprobe.d file): "softdep module pre: a b post: c". Like kmod, it ignores
// names that come before any "pre:" or "post:".
func ParseModulesSoftdep(r io.Reader) (map[string]Softdep, error) {
	deps := map[string]Softdep{}
	err := lines(r, func(n int, fields []string) error {
		if fields[0] != "softdep" {
			return nil // modprobe.d syntax allows other commands
		}
		if len(fields) < 2 || strings.HasSuffix(fields[1], ":") {
			return &ParseError{File: "modules.softdep", Line: n, Msg: "softdep without a module name"}
		}
		name := ModuleName(fields[1])
		sd := deps[name]
		var list *[]string
		for _, f := range fields[2:] {
			switch f {
			case "pre:":
				list = &sd.Pre
			case "post:":
				list = &sd.Post
			default:
				// kmod ignores names before "pre:" or "post:", and
				// Debian's kernel has such lines ("softdep cifs gcm").
				if list != nil {
					*list = append(*list, f)
				}
			}
		}
		deps[name] = sd
		return nil
	})
	return deps, err
}

// ParseModulesAlias parses modules.alias: "alias name module".
func ParseModulesAlias(r io.Reader) (map[string][]string, error) {
	aliases := map[string][]string{}
	err := lines(r, func(n int, fields []string) error {
		if fields[0] != "alias" || len(fields) != 3 {
			return &ParseError{File: "modules.alias", Line: n, Msg: "want \"alias name module\""}
		}
		mod := ModuleName(fields[2])
		if !slices.Contains(aliases[fields[1]], mod) {
			aliases[fields[1]] = append(aliases[fields[1]], mod)
		}
		return nil
	})
	return aliases, err
}

// ParseModulesBuiltin parses modules.builtin: one module path per line.
func ParseModulesBuiltin(r io.Reader) (map[string]bool, error) {
	builtin := map[string]bool{}
	err := lines(r, func(n int, fields []string) error {
		if len(fields) != 1 {
			return &ParseError{File: "modules.builtin", Line: n, Msg: "want one path per line"}
		}
		builtin[ModuleName(fields[0])] = true
		return nil
	})
	return builtin, err
}

// LoadModuleIndex reads modules.dep, modules.softdep, modules.alias and
// modules.builtin from dir, a /lib/modules/<release> directory on which
// depmod has run. Only modules.dep is required.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{}
	read := func(name string, required bool, parse func(io.Reader) error) error {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && !required {
			return nil
		}
		if err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
		defer f.Close()
		return parse(f)
	}
	err := errors.Join(
		read("modules.dep", true, func(r io.Reader) (err error) { ix.Modules, err = ParseModulesDep(r); return }),
		read("modules.softdep", false, func(r io.Reader) (err error) { ix.Softdeps, err = ParseModulesSoftdep(r); return }),
		read("modules.alias", false, func(r io.Reader) (err error) { ix.Aliases, err = ParseModulesAlias(r); return }),
		read("modules.builtin", false, func(r io.Reader) (err error) { ix.Builtin, err = ParseModulesBuiltin(r); return }),
	)
	if err != nil {
		return nil, err
	}
	return ix, nil
}

// LoadOrder returns the modules to load, in an order in which each one
// comes after everything it depends on: the wanted modules, their
// modules.dep dependencies and their soft dependencies ("pre:" before,
// "post:" after). Built-in modules are left out. A soft dependency naming an
// alias resolves to the providers among want when there are any, else to
// the only provider; a soft dependency that matches nothing is ignored, as
// modprobe ignores it.
func (ix *ModuleIndex) LoadOrder(want []string) ([]Module, error) {
	r := resolver{ix: ix, want: map[string]bool{}, state: map[string]int{}}
	for _, w := range want {
		r.want[ModuleName(w)] = true
	}
	for _, w := range want {
		if err := r.visit(ModuleName(w), nil, false); err != nil {
			return nil, err
		}
	}
	return r.order, nil
}

type resolver struct {
	ix    *ModuleIndex
	want  map[string]bool
	state map[string]int // 1 visiting, 2 done
	order []Module
}

const (
	visiting = 1
	done     = 2
)

func (r *resolver) visit(name string, chain []string, soft bool) error {
	switch r.state[name] {
	case done:
		return nil
	case visiting:
		if soft {
			return nil // soft dependencies may loop; modprobe ignores that too
		}
		return &ModuleError{Module: name, Chain: chain, Err: ErrDependencyCycle}
	}
	m, ok := r.ix.Modules[name]
	if !ok {
		if r.ix.Builtin[name] {
			r.state[name] = done
			return nil
		}
		return &ModuleError{Module: name, Chain: chain, Err: ErrUnknownModule}
	}
	r.state[name] = visiting
	inner := append(slices.Clip(chain), name)
	sd := r.ix.Softdeps[name]
	for _, s := range sd.Pre {
		if err := r.visitSoft(s, inner); err != nil {
			return err
		}
	}
	// depmod lists a module's dependencies so that modprobe loads them
	// from the last to the first; walk them in that order too.
	for i := len(m.Deps) - 1; i >= 0; i-- {
		if err := r.visit(m.Deps[i], inner, false); err != nil {
			return err
		}
	}
	r.state[name] = done
	r.order = append(r.order, m)
	for _, s := range sd.Post {
		if err := r.visitSoft(s, inner); err != nil {
			return err
		}
	}
	return nil
}

// visitSoft resolves one soft dependency, a module name or an alias.
func (r *resolver) visitSoft(target string, chain []string) error {
	name := ModuleName(target)
	if _, ok := r.ix.Modules[name]; ok || r.ix.Builtin[name] {
		return r.visit(name, chain, true)
	}
	providers := r.ix.Aliases[target]
	if len(providers) == 0 {
		return nil
	}
	var chosen []string
	for _, p := range providers {
		if r.want[p] || r.ix.Builtin[p] {
			chosen = append(chosen, p)
		}
	}
	if len(chosen) == 0 {
		if len(providers) > 1 {
			return &ModuleError{Module: target, Chain: chain, Err: fmt.Errorf("%w: %s; name one of them in the module list", ErrAmbiguousSoftdep, strings.Join(providers, ", "))}
		}
		chosen = providers
	}
	for _, p := range chosen {
		if err := r.visit(p, chain, true); err != nil {
			return err
		}
	}
	return nil
}
