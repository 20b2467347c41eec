package nettest

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

func rootSnapshot(t *testing.T) map[string]string {
	t.Helper()
	snap, err := RootState()
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestRootNamespaceUnchanged builds a lab with two segments and a router,
// sends traffic, writes iptables (legacy and nft) and nftables rules, routes,
// addresses and sysctls inside its hosts, tears it down, and checks that the
// root namespace's links, addresses, routes, rules, neighbours, iptables and
// nftables rulesets and forwarding sysctls are what they were before.
func TestRootNamespaceUnchanged(t *testing.T) {
	tools := []string{"ip", "iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save", "nft", "sysctl", "iptables-legacy", "iptables-nft"}
	RequireKernel(t, tools...)
	before := rootSnapshot(t)

	t.Run("lab", func(t *testing.T) {
		lab := New(t, Topology{
			Segments: []Segment{{Name: "lan"}, {Name: "wan"}},
			Hosts: []HostSpec{
				{Name: "be1", Segments: []string{"lan"}},
				{Name: "lb", Segments: []string{"lan", "wan"}, Forwarding: true},
				{Name: "client", Segments: []string{"wan"}},
			},
		})
		be1, lbh, client := lab.Host("be1"), lab.Host("lb"), lab.Host("client")
		must(t, client.AddRoute(lab.Segment("lan").Prefix4, lbh.Iface("wan").Addr4))
		must(t, be1.AddRoute(lab.Segment("wan").Prefix4, lbh.Iface("lan").Addr4))
		must(t, lbh.AddAddrLo(netip.MustParsePrefix("203.0.113.10/32")))
		must(t, be1.StartEcho(80))
		vip := "198.51.100.2"
		lbh.MustRun(t, "iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-d", vip, "-p", "tcp", "--dport", "8080",
			"-j", "DNAT", "--to-destination", be1.IP4().String()+":80")
		lbh.MustRun(t, "iptables-nft", "-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "lbkit root-ns test", "-j", "ACCEPT")
		lbh.MustRun(t, "nft", "add table inet lbkit_rootns_test")
		c, err := client.Count(context.Background(), Probe{To: netip.MustParseAddrPort(vip + ":8080"), N: 20})
		if err != nil || c.Backends["be1"] != 20 {
			t.Fatalf("traffic through the lab: %+v, %v", c, err)
		}
		// The rules really are in the lab (so the check below is not vacuous).
		if out := lbh.MustRun(t, "iptables-legacy-save", "-t", "nat"); !strings.Contains(out, "--to-destination "+be1.IP4().String()) {
			t.Fatalf("the DNAT rule is not in the lb namespace:\n%s", out)
		}
	})

	after := rootSnapshot(t)
	if d := RootDiff(before, after); d != "" {
		t.Errorf("the root namespace changed:\n%s", d)
	}
	t.Logf("compared %d views of the root namespace", len(before))
}

type fakeM func() int

func (f fakeM) Run() int { return f() }

// TestGuardRootCatchesChanges runs GuardRoot inside a lab host, which it
// then takes for the root namespace: a "test binary" that adds a rule there
// must fail, one that changes nothing must keep its own exit code.
func TestGuardRootCatchesChanges(t *testing.T) {
	RequireKernel(t, "ip", "iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save", "nft", "sysctl", "iptables-nft")
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "h"}}})
	var changed, unchanged, failing int
	err := lab.Host("h").Do(func() error {
		changed = GuardRoot(fakeM(func() int {
			if out, err := exec.Command("iptables-nft", "-t", "nat", "-A", "PREROUTING", "-j", "RETURN").CombinedOutput(); err != nil {
				t.Errorf("%v: %s", err, out)
			}
			return 0
		})).Run()
		unchanged = GuardRoot(fakeM(func() int { return 0 })).Run()
		failing = GuardRoot(fakeM(func() int { return 7 })).Run()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if changed != 1 || unchanged != 0 || failing != 7 {
		t.Errorf("exit codes: changed %d (want 1), unchanged %d (want 0), failing %d (want 7)", changed, unchanged, failing)
	}
}
