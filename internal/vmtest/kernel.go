package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultMetaPackage is the Debian package whose dependency names the
// current kernel image package.
const DefaultMetaPackage = "linux-image-amd64"

// cacheFormat changes when the cache layout does, so old entries are not
// misread.
const cacheFormat = "lbkit-vm-cache-1"

// KernelOptions says which kernel to fetch and where to keep it.
type KernelOptions struct {
	// CacheDir holds downloads and extracted kernels; DefaultCacheDir()
	// when empty.
	CacheDir string
	// MetaPackage is resolved to a versioned image package through
	// `apt-cache depends`; DefaultMetaPackage when empty.
	MetaPackage string
	// Package, when set, names the image package directly
	// ("linux-image-6.1.0-56-amd64") and MetaPackage is not consulted.
	Package string
	// Modules are the modules to take, dependencies added; DefaultModules()
	// when nil.
	Modules []string
	// Logger receives progress; silent when nil.
	Logger *slog.Logger
}

// Kernel is a kernel ready to boot: its image and the module files to load,
// all inside the cache.
type Kernel struct {
	// Package and Version name the Debian package it came from.
	Package, Version string
	// Release is the kernel release (`uname -r` in the guest).
	Release string
	// Vmlinuz is the path of the bootable image.
	Vmlinuz string
	// Modules are uncompressed module files in load order.
	Modules []KernelModule
}

// KernelModule is one module file of a Kernel.
type KernelModule struct {
	Name string
	// Path is the absolute path of the uncompressed .ko file.
	Path string
}

// DefaultCacheDir returns $LBKIT_VM_CACHE when set, else
// $XDG_CACHE_HOME/lbkit/vm, else ~/.cache/lbkit/vm.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("LBKIT_VM_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("vmtest: no cache directory (set LBKIT_VM_CACHE): %w", err)
	}
	return filepath.Join(base, "lbkit", "vm"), nil
}

// ParseAptDepends returns the versioned kernel image package among the
// dependencies that `apt-cache depends <meta>` printed: the first
// "Depends: linux-image-..." that is not meta itself.
func ParseAptDepends(out, meta string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "|") // an alternative
		dep, ok := strings.CutPrefix(line, "Depends:")
		if !ok {
			continue
		}
		dep = strings.Trim(strings.TrimSpace(dep), "<>")
		if strings.HasPrefix(dep, "linux-image-") && dep != meta && !strings.ContainsAny(dep, " \t") {
			return dep, nil
		}
	}
	return "", fmt.Errorf("vmtest: `apt-cache depends %s` names no linux-image-* package (is %s known to apt? run `apt-get update`)", meta, meta)
}

// ParseAptVersion returns the first "Version:" of `apt-cache show` output.
func ParseAptVersion(out string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version:"); ok {
			if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, " \t/") {
				return v, nil
			}
		}
	}
	return "", errors.New("vmtest: `apt-cache show` printed no Version")
}

// FetchKernel returns the kernel the options name, from the cache when it
// is there, else by downloading the Debian package with `apt-get download`,
// extracting it with dpkg-deb, indexing its modules with depmod and copying
// the image and the needed modules (decompressed) into the cache.
func FetchKernel(ctx context.Context, o KernelOptions) (*Kernel, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.CacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		o.CacheDir = d
	}
	if o.MetaPackage == "" {
		o.MetaPackage = DefaultMetaPackage
	}
	if o.Modules == nil {
		o.Modules = DefaultModules()
	}
	pkg, version, err := resolvePackage(ctx, o)
	if err != nil {
		return nil, err
	}
	log.Info("kernel package", "package", pkg, "version", version)

	verDir := filepath.Join(o.CacheDir, pkg+"_"+safeVersion(version))
	modDir := filepath.Join(verDir, "modules-"+moduleListKey(o.Modules))
	if k, err := readManifest(modDir); err == nil {
		log.Info("kernel from cache", "dir", modDir)
		return k, nil
	}
	deb, err := downloadDeb(ctx, log, o.CacheDir, pkg, version)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(verDir, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if err := extractKernel(ctx, log, deb, verDir, modDir, pkg, version, o.Modules); err != nil {
		return nil, err
	}
	return readManifest(modDir)
}

// resolvePackage returns the image package and its candidate version. apt
// answers from its package lists; as long as those are unchanged (no
// `apt-get update` since), the last answer is reused from the cache, which
// saves two apt-cache runs of a second or more each on a loaded machine.
func resolvePackage(ctx context.Context, o KernelOptions) (pkg, version string, err error) {
	stamp := aptListsStamp()
	memo := filepath.Join(o.CacheDir, "resolved.json")
	type resolved struct{ Stamp, Meta, Fixed, Package, Version string }
	var r resolved
	if data, err := os.ReadFile(memo); err == nil && json.Unmarshal(data, &r) == nil &&
		stamp != "" && r.Stamp == stamp && r.Meta == o.MetaPackage && r.Fixed == o.Package {
		return r.Package, r.Version, nil
	}
	pkg = o.Package
	if pkg == "" {
		out, err := run(ctx, "", "apt-cache", "depends", o.MetaPackage)
		if err != nil {
			return "", "", err
		}
		if pkg, err = ParseAptDepends(string(out), o.MetaPackage); err != nil {
			return "", "", err
		}
	}
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", err
	}
	if version, err = ParseAptVersion(string(out)); err != nil {
		return "", "", fmt.Errorf("%w for %s", err, pkg)
	}
	if stamp != "" {
		data, _ := json.Marshal(resolved{Stamp: stamp, Meta: o.MetaPackage, Fixed: o.Package, Package: pkg, Version: version})
		if os.MkdirAll(o.CacheDir, 0o755) == nil {
			_ = os.WriteFile(memo, data, 0o644) // only a shortcut: losing it costs time, not correctness
		}
	}
	return pkg, version, nil
}

// aptListsStamp fingerprints apt's package lists (names, sizes, mtimes);
// empty when they cannot be read.
func aptListsStamp() string {
	entries, err := os.ReadDir("/var/lib/apt/lists")
	if err != nil {
		return ""
	}
	h := sha256.New()
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// safeVersion makes a Debian version usable in a file name the way apt
// names .deb files (the epoch colon becomes %3a).
func safeVersion(v string) string { return strings.ReplaceAll(v, ":", "%3a") }

// moduleListKey names a module list in the cache, so that changing the list
// makes a new entry instead of reusing a stale one.
func moduleListKey(mods []string) string {
	h := sha256.Sum256([]byte(cacheFormat + "\n" + strings.Join(mods, "\n")))
	return hex.EncodeToString(h[:6])
}

func downloadDeb(ctx context.Context, log *slog.Logger, cache, pkg, version string) (string, error) {
	debs := filepath.Join(cache, "debs")
	deb := filepath.Join(debs, pkg+"_"+safeVersion(version)+"_amd64.deb")
	if _, err := os.Stat(deb); err == nil {
		return deb, nil
	}
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	tmp, err := os.MkdirTemp(debs, "download-")
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	log.Info("downloading kernel package", "package", pkg+"="+version)
	if _, err := run(ctx, tmp, "apt-get", "download", pkg+"="+version); err != nil {
		return "", fmt.Errorf("%w (a stale apt index? run `apt-get update`)", err)
	}
	got, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(got) != 1 {
		return "", fmt.Errorf("vmtest: apt-get download %s left %d .deb files", pkg, len(got))
	}
	if err := os.Rename(got[0], deb); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	return deb, nil
}

// extractKernel unpacks deb, runs depmod on it and writes vmlinuz into
// verDir and the load-ordered modules with a manifest into modDir.
func extractKernel(ctx context.Context, log *slog.Logger, deb, verDir, modDir, pkg, version string, want []string) error {
	tmp, err := os.MkdirTemp(verDir, "extract-")
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	log.Info("extracting kernel package", "deb", deb)
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
		return err
	}
	release, modRoot, err := findRelease(root)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(modRoot, "modules.dep")); err != nil {
		// Debian ships no modules.dep; its postinst runs depmod.
		if _, err := run(ctx, "", depmodPath(), "-b", root, release); err != nil {
			return err
		}
	}
	ix, err := LoadModuleIndex(modRoot)
	if err != nil {
		return err
	}
	order, err := ix.LoadOrder(want)
	if err != nil {
		return err
	}

	vmlinuz := filepath.Join(verDir, "vmlinuz")
	if _, err := os.Stat(vmlinuz); err != nil {
		if err := copyFile(filepath.Join(root, "boot", "vmlinuz-"+release), vmlinuz+".tmp"); err != nil {
			return err
		}
		if err := os.Rename(vmlinuz+".tmp", vmlinuz); err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
	}

	out := filepath.Join(tmp, "modules")
	if err := os.Mkdir(out, 0o755); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	m := manifest{Package: pkg, Version: version, Release: release, Requested: want}
	for i, mod := range order {
		file := fmt.Sprintf("%02d-%s.ko", i, mod.Name)
		if err := decompressModule(ctx, filepath.Join(modRoot, mod.Path), filepath.Join(out, file)); err != nil {
			return err
		}
		m.Modules = append(m.Modules, manifestModule{Name: mod.Name, File: file, From: mod.Path})
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "manifest.json"), data, 0o644); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	if err := os.Rename(out, modDir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(filepath.Join(modDir, "manifest.json")); statErr != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
		// Another run finished the same entry first; use theirs.
	}
	log.Info("kernel cached", "release", release, "modules", len(order), "dir", modDir)
	return nil
}

// findRelease returns the single kernel release under root's module tree.
func findRelease(root string) (release, modRoot string, err error) {
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		entries, err := os.ReadDir(filepath.Join(root, base))
		if err != nil {
			continue
		}
		var rels []string
		for _, e := range entries {
			if e.IsDir() {
				rels = append(rels, e.Name())
			}
		}
		if len(rels) == 1 {
			return rels[0], filepath.Join(root, base, rels[0]), nil
		}
		return "", "", fmt.Errorf("vmtest: package holds %d kernel releases (%v), want one", len(rels), rels)
	}
	return "", "", errors.New("vmtest: package holds no lib/modules/<release> directory")
}

func depmodPath() string {
	if p, err := exec.LookPath("depmod"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "depmod"
}

// decompressModule writes the uncompressed module src to dst.
func decompressModule(ctx context.Context, src, dst string) error {
	var data []byte
	var err error
	switch filepath.Ext(src) {
	case ".ko":
		return copyFile(src, dst)
	case ".xz":
		data, err = run(ctx, "", "xz", "-dc", src)
	case ".zst":
		data, err = run(ctx, "", "zstd", "-dcq", src)
	case ".gz":
		data, err = gunzip(src)
	default:
		return fmt.Errorf("vmtest: module %s: unknown compression", src)
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}

func gunzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", path, err)
	}
	return data, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("vmtest: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}

type manifest struct {
	Package, Version, Release string
	Requested                 []string
	Modules                   []manifestModule
}

type manifestModule struct {
	Name, File string
	// From is the module's path in the package, for the curious.
	From string
}

func readManifest(modDir string) (*Kernel, error) {
	data, err := os.ReadFile(filepath.Join(modDir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", modDir, err)
	}
	k := &Kernel{Package: m.Package, Version: m.Version, Release: m.Release, Vmlinuz: filepath.Join(filepath.Dir(modDir), "vmlinuz")}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("vmtest: cached kernel incomplete: %w", err)
	}
	for _, mm := range m.Modules {
		p := filepath.Join(modDir, mm.File)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("vmtest: cached kernel incomplete: %w", err)
		}
		k.Modules = append(k.Modules, KernelModule{Name: mm.Name, Path: p})
	}
	return k, nil
}

// run runs a command and returns its standard output; a failure carries the
// command line and its standard error.
func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("vmtest: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
