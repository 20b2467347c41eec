package vmtest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// GuestConfigPath is where the initramfs holds the GuestConfig, as JSON.
const GuestConfigPath = "/lbkit/config.json"

// InVMEnv is set to "1" in the environment of every test binary the guest
// init runs.
const InVMEnv = "LBKIT_IN_VM"

// GuestConfig is what the host tells the guest init.
type GuestConfig struct {
	// Nonce marks the init's report lines (see FormatMarker).
	Nonce string
	// Modules are loaded in this order.
	Modules []GuestModule
	// Tests are run in this order, each to its end.
	Tests []GuestTest
	// Env is the environment of every test binary ("KEY=value").
	Env []string
}

// GuestModule is one kernel module file in the initramfs.
type GuestModule struct {
	Name string
	Path string
}

// GuestTest is one test binary in the initramfs.
type GuestTest struct {
	// Package is the import path the binary tests.
	Package string
	// Binary is the path of the test binary, Dir its working directory
	// (holding the package's testdata, as `go test` would).
	Binary, Dir string
	Args        []string
}

// TestFlags are the `go test` flags the host passes to every test binary.
type TestFlags struct {
	Run, Skip string
	// Count is -test.count; 0 leaves it out.
	Count           int
	Short, Failfast bool
	// Timeout is -test.timeout; 0 leaves it out.
	Timeout time.Duration
	// Extra are appended verbatim (for example "-test.benchtime=1x").
	Extra []string
}

// Args returns the command line of a test binary: always -test.v and
// -test.paniconexit0 (as `go test` passes them), then the set flags.
func (f TestFlags) Args() []string {
	args := []string{"-test.v=true", "-test.paniconexit0"}
	if f.Run != "" {
		args = append(args, "-test.run="+f.Run)
	}
	if f.Skip != "" {
		args = append(args, "-test.skip="+f.Skip)
	}
	if f.Count > 0 {
		args = append(args, "-test.count="+strconv.Itoa(f.Count))
	}
	if f.Short {
		args = append(args, "-test.short=true")
	}
	if f.Failfast {
		args = append(args, "-test.failfast=true")
	}
	if f.Timeout > 0 {
		args = append(args, "-test.timeout="+f.Timeout.String())
	}
	return append(args, f.Extra...)
}

// GuestEnv returns the environment of the guest's test binaries, given the
// host's environment (os.Environ()): LBKIT_IN_VM=1, a minimal PATH, HOME and
// TMPDIR, and from the host every LBKIT_* variable (LBKIT_REQUIRE_KERNEL
// above all), GOTRACEBACK and GODEBUG.
func GuestEnv(host []string) []string {
	env := []string{
		InVMEnv + "=1",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"TMPDIR=/tmp",
	}
	for _, kv := range host {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == InVMEnv {
			continue
		}
		if strings.HasPrefix(k, "LBKIT_") || k == "GOTRACEBACK" || k == "GODEBUG" {
			env = append(env, kv)
		}
	}
	return env
}

// ExitStatus returns the exit status of a finished process: its exit code,
// or 128+n when signal n killed it (as a shell reports it), or -1 when st
// is nil (the process never ran).
func ExitStatus(st *os.ProcessState) int {
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}
