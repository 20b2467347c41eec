package vmtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Options configure Run. The zero value runs every VM test of the module in
// the current directory with the defaults below.
type Options struct {
	// Dir is where the go command runs (inside the module); "." when empty.
	Dir string
	// Patterns select packages as `go test` does; "./..." when empty. Of
	// these, only packages with vmtest-tagged test files are built.
	Patterns []string
	// Flags go to every test binary. A zero Flags.Timeout becomes Timeout
	// minus a minute for the boot (at least half of Timeout).
	Flags TestFlags
	// Timeout bounds the boot, from qemu's start to its exit; 10 minutes
	// when zero. A guest still running then is killed.
	Timeout time.Duration
	// Accel is AccelAuto (the default), AccelKVM or AccelTCG.
	Accel string
	// MemoryMB (default 1024) and CPUs (default 2) size the guest.
	MemoryMB, CPUs int
	// Kernel selects and caches the kernel.
	Kernel KernelOptions
	// Env is the environment of the guest's test binaries; GuestEnv of
	// the host's environment when nil.
	Env []string
	// Stdout receives the guest console, Stderr the build output and
	// qemu's own messages; discarded when nil.
	Stdout, Stderr io.Writer
	// KeepWorkDir leaves the build directory (binaries, initramfs) behind
	// and logs where it is.
	KeepWorkDir bool
	// Logger receives progress; silent when nil.
	Logger *slog.Logger
}

// Result is the outcome of one VM run.
type Result struct {
	// Packages are the packages whose test binaries the guest was given.
	Packages []string
	Kernel   *Kernel
	// Accel is the accelerator the guest ran with; AccelNote says why
	// when AccelAuto chose TCG.
	Accel, AccelNote string
	// Console holds what the guest init reported.
	Console *Console
	// Problems lists what went wrong; empty means every binary passed.
	Problems []string
	// TimedOut is true when the guest was killed at Options.Timeout.
	TimedOut bool
	// Tail is the end of the console, for failure reports.
	Tail    []string
	Timings Timings
}

// Timings are the durations of a run's phases.
type Timings struct {
	// Build is compiling the init and the test binaries; Kernel is
	// resolving (and on a cache miss downloading and extracting) the
	// kernel; Initramfs is writing the archive.
	Build, Kernel, Initramfs time.Duration
	// KVMTrial is time lost on a KVM boot that hung before TCG took over.
	KVMTrial time.Duration
	// BootToInit is from qemu's start to the init's first report;
	// Modules is loading the modules; Tests is from the module report to
	// DONE; BootToResult is from qemu's start to DONE, and QEMU from
	// qemu's start to its exit.
	BootToInit, Modules, Tests, BootToResult, QEMU time.Duration
}

// Passed reports whether every test binary ran and exited 0.
func (r *Result) Passed() bool { return len(r.Problems) == 0 }

// ErrNoPackages is returned by Run when no package matching the patterns
// has vmtest-tagged test files.
var ErrNoPackages = errors.New("vmtest: no package with vmtest test files matches")

// kvmLiveness is how long a KVM guest may take to start its init before
// AccelAuto gives up on KVM. A working KVM boots in a second or two.
const kvmLiveness = 20 * time.Second

// Run builds the VM tests, boots them all in one guest and returns what
// they did. An error means the run itself could not happen (a build
// failed, no kernel, no qemu); failing tests, a crashed or hung guest are
// reported in Result.Problems.
func Run(ctx context.Context, o Options) (*Result, error) {
	o, err := withDefaults(o)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	res := &Result{}

	pkgs, err := DiscoverPackages(ctx, o.Dir, o.Patterns)
	if err != nil {
		return nil, err
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("%w %v", ErrNoPackages, o.Patterns)
	}
	for _, p := range pkgs {
		res.Packages = append(res.Packages, p.ImportPath)
	}

	work, err := os.MkdirTemp("", "lbkit-vmtest-")
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if o.KeepWorkDir {
		log.Warn("keeping work directory", "dir", work)
	} else {
		defer os.RemoveAll(work)
	}

	t := time.Now()
	initBin := filepath.Join(work, "init")
	if err := BuildInit(ctx, o.Dir, initBin, o.Stderr); err != nil {
		return nil, err
	}
	var bins []GuestBinary
	for i, p := range pkgs {
		out := filepath.Join(work, fmt.Sprintf("%02d.test", i))
		log.Info("building test binary", "package", p.ImportPath)
		if err := BuildTestBinary(ctx, o.Dir, p, out, o.Stderr); err != nil {
			return nil, err
		}
		bins = append(bins, GuestBinary{Package: p, Binary: out})
	}
	res.Timings.Build = time.Since(t)

	t = time.Now()
	if res.Kernel, err = FetchKernel(ctx, o.Kernel); err != nil {
		return nil, err
	}
	res.Timings.Kernel = time.Since(t)

	t = time.Now()
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	if err := writeInitramfsFile(initrd, InitramfsSpec{
		Init: initBin, Modules: res.Kernel.Modules, Tests: bins,
		Args: o.Flags.Args(), Env: o.Env, Nonce: hex.EncodeToString(nonce),
	}); err != nil {
		return nil, err
	}
	res.Timings.Initramfs = time.Since(t)

	m := Machine{Kernel: res.Kernel.Vmlinuz, Initrd: initrd, MemoryMB: o.MemoryMB, CPUs: o.CPUs, Accel: o.Accel}
	var b *boot
	if o.Accel == AccelAuto {
		m.Accel = AccelTCG
		switch kvmErr := KVMUsable(); {
		case kvmErr != nil:
			res.AccelNote = "KVM unusable: " + kvmErr.Error()
		case kvmKnownBad(o.Kernel.CacheDir):
			res.AccelNote = "KVM failed to boot a guest earlier since this host booted (" + kvmVerdictFile(o.Kernel.CacheDir) + ")"
		default:
			m.Accel = AccelKVM
			log.Info("trying KVM", "liveness", kvmLiveness)
			b, err = runQEMU(ctx, m, hex.EncodeToString(nonce), o.Timeout, kvmLiveness, o.Stdout, o.Stderr)
			if errors.Is(err, errNoLife) {
				res.Timings.KVMTrial = time.Since(b.Start)
				res.AccelNote = fmt.Sprintf("KVM unusable, the guest did not start its init within %v: %v", kvmLiveness, err)
				if err := rememberKVMBad(o.Kernel.CacheDir); err != nil {
					log.Warn("cannot remember the KVM verdict", "err", err)
				}
				b, m.Accel = nil, AccelTCG
			} else if err != nil {
				return nil, err
			}
		}
		if m.Accel == AccelTCG {
			log.Info("using TCG", "reason", res.AccelNote)
		}
	}
	if b == nil {
		b, err = runQEMU(ctx, m, hex.EncodeToString(nonce), o.Timeout, 0, o.Stdout, o.Stderr)
		if err != nil {
			return nil, err
		}
	}
	res.Accel = m.Accel
	res.Console, res.TimedOut, res.Tail = b.Console, b.TimedOut, b.Tail
	res.Timings.QEMU = b.Exit.Sub(b.Start)
	if !b.Init.IsZero() {
		res.Timings.BootToInit = b.Init.Sub(b.Start)
		if !b.Modules.IsZero() {
			res.Timings.Modules = b.Modules.Sub(b.Init)
		}
	}
	if !b.Done.IsZero() {
		res.Timings.BootToResult = b.Done.Sub(b.Start)
		if !b.Modules.IsZero() {
			res.Timings.Tests = b.Done.Sub(b.Modules)
		}
	}
	if b.TimedOut {
		res.Problems = append(res.Problems, fmt.Sprintf("guest killed after the %v timeout", o.Timeout))
	}
	res.Problems = append(res.Problems, b.Console.Problems(res.Packages)...)
	if b.QEMUErr != nil && !b.TimedOut {
		res.Problems = append(res.Problems, fmt.Sprintf("%s failed: %v", QEMUBinary, b.QEMUErr))
	}
	return res, nil
}

func withDefaults(o Options) (Options, error) {
	if o.Dir == "" {
		o.Dir = "."
	}
	if len(o.Patterns) == 0 {
		o.Patterns = []string{"./..."}
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Flags.Timeout == 0 {
		o.Flags.Timeout = max(o.Timeout-time.Minute, o.Timeout/2)
	}
	switch o.Accel {
	case "":
		o.Accel = AccelAuto
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return o, fmt.Errorf("vmtest: accelerator %q: want %s, %s or %s", o.Accel, AccelAuto, AccelKVM, AccelTCG)
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = 1024
	}
	if o.CPUs <= 0 {
		o.CPUs = 2
	}
	if o.Env == nil {
		o.Env = GuestEnv(os.Environ())
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Kernel.Logger == nil {
		o.Kernel.Logger = o.Logger
	}
	if o.Kernel.CacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return o, err
		}
		o.Kernel.CacheDir = d
	}
	return o, nil
}

func writeInitramfsFile(path string, s InitramfsSpec) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := WriteInitramfs(w, s); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("vmtest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}
