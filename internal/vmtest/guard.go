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
// may configure it: root, and the "IPVS" generic netlink family resolves
// (asking for it lets the kernel load ip_vs where it can). Otherwise the
// test is skipped with the reason, or fails under LBKIT_REQUIRE_KERNEL=1.
func RequireIPVS(t testing.TB) {
	t.Helper()
	if p := ipvsProblem(); p != "" {
		nettest.SkipOrFail(t, "vmtest: %s; IPVS tests run in the VM tier (`make vmtest`)", p)
	}
}

// RequireIPIP makes sure the running kernel can create IPIP tunnels: as
// root it creates one in a throwaway network namespace (which also lets the
// kernel load ipip where it can). Otherwise the test is skipped with the
// reason, or fails under LBKIT_REQUIRE_KERNEL=1.
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

func ipvsProblem() string {
	if p := rootProblem(); p != "" {
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
