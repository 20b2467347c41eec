package nettest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// StrictEnv is the environment variable that turns every kernel-test skip
// into a failure when it is set to "1".
const StrictEnv = "LBKIT_REQUIRE_KERNEL"

// Strict reports whether LBKIT_REQUIRE_KERNEL=1 is set, in which case tests
// that cannot reach the kernel must fail instead of skipping.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// SkipOrFail skips the test with the formatted reason, or fails it when
// Strict is true. Other tiers (the VM harness, for one) use it for their own
// guards so that every tier treats LBKIT_REQUIRE_KERNEL the same way.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (and %s=1 forbids skipping)", msg, StrictEnv)
	}
	t.Skip(msg)
}

// RequireKernel makes sure the test can build network namespaces on the
// running kernel: it needs root, a writable /run and, when given, the named
// tools on PATH (for example "iptables-restore", "nft", "arping"). When one
// is missing it skips with the reason, or fails under LBKIT_REQUIRE_KERNEL=1.
//
// Under `go test -short` it always skips: -short asks for tier 1 only.
func RequireKernel(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("nettest: kernel test skipped under -short (tier 1 only)")
	}
	if problem := kernelProblem(tools); problem != "" {
		SkipOrFail(t, "nettest: kernel test cannot run: %s", problem)
	}
}

func kernelProblem(tools []string) string {
	if os.Geteuid() != 0 {
		return "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "kernel without network namespaces: " + err.Error()
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return "missing tools on PATH: " + strings.Join(missing, ", ") + " (run `make deps`)"
	}
	return ""
}
