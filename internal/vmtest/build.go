package vmtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// BuildTag is the build tag of VM test files: a file starting with
// `//go:build vmtest` is compiled only into the VM's test binaries.
const BuildTag = "vmtest"

// InitPackage is the import path of the guest init program.
const InitPackage = "github.com/lbkit/lbkit/internal/vmtest/cmd/vminit"

// guestBuildEnv is the environment of every build for the guest: static,
// pure Go, linux/amd64 (the guest qemu-system-x86_64 boots).
func guestBuildEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
}

// Package is a Go package with VM tests.
type Package struct {
	ImportPath string
	// Dir is the package's source directory.
	Dir string
}

// listFormat prints one package per line: import path, directory, then the
// test files; tabs separate the fields.
const listFormat = `{{.ImportPath}}	{{.Dir}}	{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}`

// DiscoverPackages lists the packages matching patterns (run in dir) that
// have test files built only with the vmtest tag: `go list` runs once with
// and once without the tag and a package qualifies when the tag adds test
// files. Packages added later are found without any registration.
func DiscoverPackages(ctx context.Context, dir string, patterns []string) ([]Package, error) {
	list := func(tags ...string) (string, error) {
		// -e: a broken package elsewhere in the tree must not stop the
		// VM tier; if it has VM tests, its build reports the error.
		args := append([]string{"list", "-e"}, tags...)
		args = append(args, "-f", listFormat, "--")
		args = append(args, patterns...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = guestBuildEnv()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("vmtest: go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), nil
	}
	with, err := list("-tags", BuildTag)
	if err != nil {
		return nil, err
	}
	without, err := list()
	if err != nil {
		return nil, err
	}
	return VMPackages(with, without)
}

// VMPackages compares two `go list -f listFormat` outputs, with and
// without the vmtest tag, and returns the packages whose test files the tag
// adds to, sorted by import path.
func VMPackages(withTag, withoutTag string) ([]Package, error) {
	parse := func(out string) (map[string]Package, map[string][]string, error) {
		pkgs := map[string]Package{}
		files := map[string][]string{}
		// Lines are not trimmed: an empty file list leaves a tab at the end.
		for _, line := range strings.Split(out, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) != 3 || f[0] == "" {
				return nil, nil, fmt.Errorf("vmtest: unexpected go list line %q", line)
			}
			pkgs[f[0]] = Package{ImportPath: f[0], Dir: f[1]}
			files[f[0]] = strings.Fields(f[2])
		}
		return pkgs, files, nil
	}
	pkgs, with, err := parse(withTag)
	if err != nil {
		return nil, err
	}
	_, without, err := parse(withoutTag)
	if err != nil {
		return nil, err
	}
	var out []Package
	for path, files := range with {
		for _, f := range files {
			if !slices.Contains(without[path], f) {
				out = append(out, pkgs[path])
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Package) int { return strings.Compare(a.ImportPath, b.ImportPath) })
	return out, nil
}

// BuildTestBinary compiles the tests of pkg, with the vmtest tag, into a
// static linux/amd64 binary at out. The go command's output goes to log.
func BuildTestBinary(ctx context.Context, dir string, pkg Package, out string, log io.Writer) error {
	return goBuild(ctx, dir, log, "test", "-c", "-tags", BuildTag, "-ldflags=-s -w", "-o", out, pkg.ImportPath)
}

// BuildInit compiles the guest init (InitPackage) into a static binary.
func BuildInit(ctx context.Context, dir, out string, log io.Writer) error {
	return goBuild(ctx, dir, log, "build", "-ldflags=-s -w", "-o", out, InitPackage)
}

func goBuild(ctx context.Context, dir string, log io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = guestBuildEnv()
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vmtest: go %s: %w", strings.Join(args, " "), err)
	}
	if _, err := os.Stat(args[len(args)-2]); err != nil {
		return fmt.Errorf("vmtest: go %s wrote no binary: %w", strings.Join(args, " "), err)
	}
	return nil
}
