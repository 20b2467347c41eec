package arp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// helperEnv, when set to "<interface>;<vip>,<vip>...", makes the test binary
// run announcerHelper instead of the tests: the failover test starts it
// inside a host namespace as the announcer whose process gets killed.
const helperEnv = "LBKIT_ARP_HELPER"

// announcerHelper dials the interface, acquires the VIPs, prints "ready" and
// serves until it is killed or its standard input closes.
func announcerHelper() int {
	name, list, _ := strings.Cut(os.Getenv(helperEnv), ";")
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "announcer helper:", err)
		return 1
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fail(err)
	}
	var vips []netip.Addr
	for _, s := range strings.Split(list, ",") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fail(err)
		}
		vips = append(vips, ip)
	}
	a, err := Dial(context.Background(), ifi, Config{})
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	if err := a.Acquire(context.Background(), vips...); err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}
