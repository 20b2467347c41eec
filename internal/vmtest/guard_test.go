package vmtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestProbesAgreeWithKernel checks the guards' probes against independent
// evidence: /proc/net/ip_vs exists exactly when IPVS is loaded, and
// /sys/class/net/tunl0 (the device ipip adds to every namespace) exactly
// when ipip is. On the host both features are missing; in the VM both are
// there. The probes must not load a module: the evidence is the same
// before and after them.
func TestProbesAgreeWithKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		for _, p := range []string{ipvsProblem(), ipipProblem()} {
			if !strings.Contains(p, "not root") {
				t.Errorf("as non-root the probe said %q", p)
			}
		}
		return
	}
	_, ipvsBefore := os.Stat("/proc/net/ip_vs")
	_, ipipBefore := os.Stat("/sys/class/net/tunl0")
	p := ipvsProblem()
	_, err := os.Stat("/proc/net/ip_vs")
	if (err == nil) != (ipvsBefore == nil) {
		t.Errorf("the IPVS probe loaded or unloaded ip_vs: before %v, after %v", ipvsBefore, err)
	}
	if (p == "") != (err == nil) {
		t.Errorf("IPVS probe says %q but /proc/net/ip_vs: %v", p, err)
	}
	if p != "" && !strings.Contains(p, "IPVS") {
		t.Errorf("IPVS problem %q does not name IPVS", p)
	}
	p = ipipProblem()
	_, err = os.Stat("/sys/class/net/tunl0")
	if (err == nil) != (ipipBefore == nil) {
		t.Errorf("the IPIP probe loaded or unloaded ipip: before %v, after %v", ipipBefore, err)
	}
	if (p == "") != (err == nil) {
		t.Errorf("IPIP probe says %q but /sys/class/net/tunl0: %v", p, err)
	}
	if p != "" && !strings.Contains(p, "ipip") {
		t.Errorf("IPIP problem %q does not name ipip", p)
	}
	t.Logf("IPVS: %q, IPIP: %q (empty means present)", ipvsProblem(), p)
}

// TestGuardsSkipOrFail runs the guards in a child test process, with and
// without LBKIT_REQUIRE_KERNEL=1, and checks the outcome against what the
// kernel has: pass when it has IPVS and IPIP; otherwise skip with the
// reason, or fail in strict mode.
func TestGuardsSkipOrFail(t *testing.T) {
	if os.Getenv("LBKIT_VMTEST_GUARD_CHILD") == "1" {
		RequireIPVS(t)
		RequireIPIP(t)
		return
	}
	have := ipvsProblem() == "" && ipipProblem() == ""
	for _, strict := range []string{"0", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGuardsSkipOrFail$", "-test.v")
		cmd.Env = append(os.Environ(), "LBKIT_VMTEST_GUARD_CHILD=1", "LBKIT_REQUIRE_KERNEL="+strict)
		out, err := cmd.CombinedOutput()
		text := string(out)
		switch {
		case have:
			if err != nil || !strings.Contains(text, "--- PASS: TestGuardsSkipOrFail") {
				t.Errorf("strict=%s, kernel has both: want PASS, got %v\n%s", strict, err, text)
			}
		case strict == "1":
			if err == nil || !strings.Contains(text, "--- FAIL: TestGuardsSkipOrFail") || !strings.Contains(text, "forbids skipping") {
				t.Errorf("strict, kernel lacks a feature: want FAIL, got %v\n%s", err, text)
			}
		default:
			if err != nil || !strings.Contains(text, "--- SKIP: TestGuardsSkipOrFail") || !strings.Contains(text, "make vmtest") {
				t.Errorf("kernel lacks a feature: want SKIP with the reason, got %v\n%s", err, text)
			}
		}
	}
}

func TestInVM(t *testing.T) {
	t.Setenv(InVMEnv, "1")
	if !InVM() {
		t.Error("LBKIT_IN_VM=1 not seen")
	}
	t.Setenv(InVMEnv, "")
	if InVM() {
		t.Error("empty LBKIT_IN_VM seen as in VM")
	}
}
