// Command vmtest runs lbkit's VM test tier: it compiles the test binaries of
// every package with `//go:build vmtest` test files, boots them all in one
// qemu guest running Debian's kernel with the IPVS, IPIP and other modules
// loaded, streams the guest console (the `go test -v` output) to standard
// output, and exits 0 only when every binary passed.
//
// Usage:
//
//	go run ./internal/vmtest/cmd/vmtest [flags] [packages] [-- test-binary-flags]
//
// Packages default to ./...; only those with vmtest test files are built.
// Exit status: 0 all passed, 1 a test failed or the guest crashed or hung,
// 2 the run could not start (build error, no kernel, no qemu, bad flags).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lbkit/lbkit/internal/vmtest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(argv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	o.Stdout, o.Stderr = stdout, stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := vmtest.Run(ctx, o)
	if err != nil {
		// The package's errors carry the "vmtest: " prefix already.
		msg := err.Error()
		if !strings.HasPrefix(msg, "vmtest: ") {
			msg = "vmtest: " + msg
		}
		fmt.Fprintln(stderr, msg)
		if errors.Is(err, vmtest.ErrNoPackages) {
			fmt.Fprintln(stderr, "vmtest: a VM test is a _test.go file starting with //go:build vmtest")
		}
		return 2
	}
	report(stdout, stderr, res, time.Since(start))
	if !res.Passed() {
		return 1
	}
	return 0
}

// parseArgs turns the command line into Options. Everything after "--"
// goes verbatim to the test binaries.
func parseArgs(argv []string, stderr io.Writer) (vmtest.Options, error) {
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       vmtest.Options
		modules string
		quiet   bool
	)
	fs.StringVar(&o.Flags.Run, "run", "", "run only tests matching `regexp` (go test -run)")
	fs.StringVar(&o.Flags.Skip, "skip", "", "skip tests matching `regexp` (go test -skip)")
	fs.IntVar(&o.Flags.Count, "count", 0, "run each test `n` times (go test -count)")
	fs.BoolVar(&o.Flags.Short, "short", false, "go test -short")
	fs.BoolVar(&o.Flags.Failfast, "failfast", false, "go test -failfast, per test binary")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "kill the guest after `duration` and fail")
	fs.StringVar(&o.Accel, "accel", vmtest.AccelAuto, "qemu accelerator: auto (KVM when it works, else TCG), kvm or tcg")
	fs.IntVar(&o.MemoryMB, "memory", 1024, "guest memory in `MiB`")
	fs.IntVar(&o.CPUs, "cpus", 2, "guest CPUs")
	fs.StringVar(&o.Kernel.CacheDir, "cache", "", "kernel cache `dir` (default $LBKIT_VM_CACHE, else $XDG_CACHE_HOME/lbkit/vm or ~/.cache/lbkit/vm)")
	fs.StringVar(&o.Kernel.Package, "kernel-package", "", "Debian kernel image `package` (default: what linux-image-amd64 depends on)")
	fs.StringVar(&modules, "modules", "", "extra kernel `modules` to load, comma-separated, on top of vmtest.DefaultModules")
	fs.BoolVar(&o.KeepWorkDir, "keep", false, "keep the work directory (binaries, initramfs)")
	fs.BoolVar(&quiet, "q", false, "do not log progress")
	for i, a := range argv {
		if a == "--" {
			argv, o.Flags.Extra = argv[:i], argv[i+1:]
			break
		}
	}
	if err := fs.Parse(argv); err != nil {
		return o, err
	}
	o.Patterns = fs.Args()
	if modules != "" {
		o.Kernel.Modules = append(vmtest.DefaultModules(), strings.Split(modules, ",")...)
	}
	level := slog.LevelInfo
	if quiet {
		level = slog.LevelWarn
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			if len(groups) == 0 && a.Key == slog.MessageKey {
				a.Value = slog.StringValue("vmtest: " + a.Value.String())
			}
			return a
		},
	}))
	return o, nil
}

// report prints a `go test`-like line per package, the timings, and on
// failure the problems and the end of the console.
func report(stdout, stderr io.Writer, res *vmtest.Result, total time.Duration) {
	fmt.Fprintln(stdout)
	for _, pkg := range res.Packages {
		r, ok := res.Console.Result(pkg)
		switch {
		case ok && r.Status == 0:
			fmt.Fprintf(stdout, "ok  \t%s\t%.3fs\t(in VM)\n", pkg, r.Elapsed.Seconds())
		case ok:
			fmt.Fprintf(stdout, "FAIL\t%s\t%.3fs\t(in VM, exit status %d)\n", pkg, r.Elapsed.Seconds(), r.Status)
		default:
			fmt.Fprintf(stdout, "FAIL\t%s\t(in VM, never finished)\n", pkg)
		}
	}
	k := res.Kernel
	accel := res.Accel
	if res.AccelNote != "" {
		accel += " (" + res.AccelNote + ")"
	}
	fmt.Fprintf(stderr, "vmtest: kernel %s %s (%s), %d modules, accel %s\n", k.Package, k.Version, k.Release, len(k.Modules), accel)
	t := res.Timings
	fmt.Fprintf(stderr, "vmtest: times: build %s, kernel %s, initramfs %s", sec(t.Build), sec(t.Kernel), sec(t.Initramfs))
	if t.KVMTrial > 0 {
		fmt.Fprintf(stderr, ", failed KVM trial %s", sec(t.KVMTrial))
	}
	fmt.Fprintf(stderr, "; boot to init %s, modules %s, tests %s, boot to result %s, qemu %s; total %s\n",
		sec(t.BootToInit), sec(t.Modules), sec(t.Tests), sec(t.BootToResult), sec(t.QEMU), sec(total))
	if res.Passed() {
		return
	}
	fmt.Fprintln(stderr, "vmtest: FAIL:")
	for _, p := range res.Problems {
		fmt.Fprintf(stderr, "vmtest:   %s\n", p)
	}
	fmt.Fprintf(stderr, "vmtest: last %d console lines:\n", len(res.Tail))
	for _, l := range res.Tail {
		fmt.Fprintf(stderr, "  | %s\n", l)
	}
	fmt.Fprintln(stdout, "FAIL")
}

func sec(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
