package vmtest

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// InVM reports whether this process is a test binary run by the guest init
// of the VM tier (LBKIT_IN_VM=1). Guards do not trust it: they check the
// kernel itself.
func InVM() bool { return os.Getenv(InVMEnv) == "1" }

// RequireIPVS makes sure the running kernel has IPVS and that this process
// may configure it: root, ip_vs loaded (or built in), and the "IPVS"
// generic netlink family resolves. Otherwise the test is skipped with the
// reason, or fails under LBKIT_REQUIRE_KERNEL=1. It never loads a module:
// the VM's init loads them, and on a host that is the operator's call.
func RequireIPVS(t testing.TB) {
	t.Helper()
	if p := ipvsProblem(); p != "" {
		nettest.SkipOrFail(t, "vmtest: %s; IPVS tests run in the VM tier (`make vmtest`)", p)
	}
}

// RequireIPIP makes sure the running kernel can create IPIP tunnels: as
// root, with ipip loaded (or built in), it creates one in a throwaway
// network namespace. Otherwise the test is skipped with the reason, or
// fails under LBKIT_REQUIRE_KERNEL=1. It never loads ipip, which would add
// a tunl0 device to every namespace, the root one included.
func RequireIPIP(t testing.TB) {
	t.Helper()
	if p := ipipProblem(); p != "" {
		nettest.SkipOrFail(t, "vmtest: %s; IPIP tests run in the VM tier (`make vmtest`)", p)
	}
}

func rootProblem() string {
	if os.Geteuid() != 0 {
		return "not root (configuring the kernel needs CAP_NET_ADMIN)"
	}
	return ""
}

// moduleProblem says why module is neither loaded nor built in. Both show
// as /sys/module/<name> for ip_vs and ipip, which have parameters.
// Checking first keeps the probes below from making the kernel load the
// module on demand.
func moduleProblem(module, feature string) string {
	if _, err := os.Stat("/sys/module/" + module); err != nil {
		return fmt.Sprintf("kernel has no %s (module %s not loaded: %v)", feature, module, err)
	}
	return ""
}

func ipvsProblem() string {
	if p := rootProblem(); p != "" {
		return p
	}
	if p := moduleProblem("ip_vs", "IPVS"); p != "" {
		return p
	}
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		return fmt.Sprintf("kernel has no IPVS (generic netlink family IPVS: %v)", err)
	}
	return ""
}

func ipipProblem() string {
	if p := rootProblem(); p != "" {
		return p
	}
	if p := moduleProblem("ipip", "ipip"); p != "" {
		return p
	}
	res := make(chan string, 1)
	go func() {
		// This thread moves to a new network namespace and is never
		// unlocked: the runtime ends it with the goroutine, and the
		// namespace goes with it. Nothing outside it changes.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- fmt.Sprintf("cannot create a network namespace to probe IPIP: %v", err)
			return
		}
		link := &netlink.Iptun{
			LinkAttrs: netlink.LinkAttrs{Name: "lbkprobe0"},
			Local:     net.ParseIP("192.0.2.1"),
			Remote:    net.ParseIP("192.0.2.2"),
		}
		if err := netlink.LinkAdd(link); err != nil {
			res <- fmt.Sprintf("kernel cannot create an ipip link (%v)", err)
			return
		}
		got, err := netlink.LinkByName("lbkprobe0")
		if err != nil || got.Type() != "ipip" {
			res <- fmt.Sprintf("kernel created no ipip link (%v, %v)", got, err)
			return
		}
		res <- ""
	}()
	return <-res
}
