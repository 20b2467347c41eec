package vmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// GuestBinary is a compiled test binary bound for the guest.
type GuestBinary struct {
	Package Package
	// Binary is the path of the compiled test binary on the host.
	Binary string
}

// InitramfsSpec says what goes into the initramfs.
type InitramfsSpec struct {
	// Init is the host path of the static guest init (see BuildInit).
	Init    string
	Modules []KernelModule
	Tests   []GuestBinary
	// Args and Env are given to every test binary (TestFlags.Args,
	// GuestEnv).
	Args, Env []string
	// Nonce marks the init's reports.
	Nonce string
}

// WriteInitramfs writes the initramfs, an uncompressed newc cpio archive,
// to w and returns the GuestConfig stored in it. The archive holds /init,
// /dev/console, empty mount points, the modules under /lbkit/modules, the
// test binaries under /lbkit/bin and each package's testdata directory
// under /lbkit/src/<import path>, the binary's working directory.
func WriteInitramfs(w io.Writer, s InitramfsSpec) (GuestConfig, error) {
	cfg := GuestConfig{Nonce: s.Nonce, Env: s.Env}
	a := NewCPIOWriter(w)
	var first error // after a failure the writer repeats it; keep one
	add := func(err error) {
		if first == nil {
			first = err
		}
	}

	add(addHostFile(a, "init", s.Init, 0o755))
	add(a.AddDir("dev", 0o755))
	add(a.AddCharDevice("dev/console", 0o600, 5, 1))
	for _, d := range []string{"proc", "sys", "run", "tmp", "root", "var"} {
		add(a.AddDir(d, 0o755))
	}
	add(a.AddSymlink("var/run", "../run"))

	for _, m := range s.Modules {
		name := "lbkit/modules/" + filepath.Base(m.Path)
		add(addHostFile(a, name, m.Path, 0o644))
		cfg.Modules = append(cfg.Modules, GuestModule{Name: m.Name, Path: "/" + name})
	}
	for i, t := range s.Tests {
		bin := fmt.Sprintf("lbkit/bin/%02d-%s.test", i, path.Base(t.Package.ImportPath))
		add(addHostFile(a, bin, t.Binary, 0o755))
		dir := "lbkit/src/" + t.Package.ImportPath
		add(a.AddDir(dir, 0o755))
		add(addTree(a, dir+"/testdata", filepath.Join(t.Package.Dir, "testdata")))
		cfg.Tests = append(cfg.Tests, GuestTest{Package: t.Package.ImportPath, Binary: "/" + bin, Dir: "/" + dir, Args: s.Args})
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	add(err)
	add(a.AddBytes(GuestConfigPath[1:], 0o644, data))
	add(a.Close())
	if first != nil {
		return GuestConfig{}, first
	}
	return cfg, nil
}

func addHostFile(a *CPIOWriter, name, src string, perm fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	return a.AddFile(name, perm, st.Size(), f)
}

// addTree copies the directory src, if it exists, to name in the archive:
// directories, regular files and symbolic links.
func addTree(a *CPIOWriter, name, src string) error {
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("vmtest: initramfs: %w", err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		dst := path.Join(name, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("vmtest: initramfs: %w", err)
		}
		switch {
		case d.IsDir():
			return a.AddDir(dst, info.Mode().Perm())
		case d.Type().IsRegular():
			return addHostFile(a, dst, p, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("vmtest: initramfs: %w", err)
			}
			return a.AddSymlink(dst, target)
		}
		return nil // sockets, fifos and devices have no place in testdata
	})
}
