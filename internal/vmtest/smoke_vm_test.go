//go:build vmtest

package vmtest

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newLab builds a one-host nettest lab; the smoke tests program the host's
// namespace, never the guest's root namespace.
func newLab(t *testing.T) *nettest.Host {
	t.Helper()
	lab := nettest.New(t, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "lb"}}})
	return lab.Host("lb")
}

func ipvsHandle(t *testing.T, h *nettest.Host) *ipvs.Handle {
	t.Helper()
	handle, err := ipvs.New(h.NamespacePath())
	if err != nil {
		t.Fatalf("ipvs.New(%s): %v", h.NamespacePath(), err)
	}
	t.Cleanup(handle.Close)
	return handle
}

// TestSmokeIPVSService creates a virtual service with three real servers,
// one per forwarding method, and reads all of it back from the kernel.
func TestSmokeIPVSService(t *testing.T) {
	RequireIPVS(t)
	handle := ipvsHandle(t, newLab(t))

	svc := &ipvs.Service{
		AddressFamily: unix.AF_INET,
		Protocol:      unix.IPPROTO_TCP,
		Address:       net.ParseIP("203.0.113.10"),
		Port:          80,
		SchedName:     ipvs.WeightedRoundRobin,
		Netmask:       0xffffffff,
	}
	if err := handle.NewService(svc); err != nil {
		t.Fatalf("NewService: %v", err)
	}
	type real struct {
		addr   string
		weight int
		fwd    uint32
	}
	want := []real{
		{"192.0.2.11", 1, ipvs.ConnectionFlagMasq},
		{"192.0.2.12", 2, ipvs.ConnectionFlagTunnel},
		{"192.0.2.13", 3, ipvs.ConnectionFlagDirectRoute},
	}
	for _, r := range want {
		d := &ipvs.Destination{
			AddressFamily:   unix.AF_INET,
			Address:         net.ParseIP(r.addr),
			Port:            8080,
			Weight:          r.weight,
			ConnectionFlags: r.fwd,
		}
		if err := handle.NewDestination(svc, d); err != nil {
			t.Fatalf("NewDestination %s: %v", r.addr, err)
		}
	}

	svcs, err := handle.GetServices()
	if err != nil {
		t.Fatalf("GetServices: %v", err)
	}
	if len(svcs) != 1 {
		t.Fatalf("kernel holds %d services, want 1: %+v", len(svcs), svcs)
	}
	got := svcs[0]
	if !got.Address.Equal(svc.Address) || got.Port != 80 || got.Protocol != unix.IPPROTO_TCP ||
		got.AddressFamily != unix.AF_INET || got.SchedName != "wrr" {
		t.Errorf("service read back as %+v", got)
	}

	dests, err := handle.GetDestinations(got)
	if err != nil {
		t.Fatalf("GetDestinations: %v", err)
	}
	var gotReals []real
	for _, d := range dests {
		if d.Port != 8080 {
			t.Errorf("destination %s has port %d, want 8080", d.Address, d.Port)
		}
		gotReals = append(gotReals, real{d.Address.String(), d.Weight, d.ConnectionFlags & ipvs.ConnectionFlagFwdMask})
	}
	slices.SortFunc(gotReals, func(a, b real) int { return strings.Compare(a.addr, b.addr) })
	if !slices.Equal(gotReals, want) {
		t.Errorf("real servers read back\n got %+v\nwant %+v", gotReals, want)
	}
}

// TestSmokeIPVSSchedulers creates one service per scheduler the VM loads
// and checks that the kernel accepted and reports each one; a scheduler
// whose module is missing makes NewService fail (the guest has no modprobe
// to load it on demand).
func TestSmokeIPVSSchedulers(t *testing.T) {
	RequireIPVS(t)
	handle := ipvsHandle(t, newLab(t))
	for i, sched := range IPVSSchedulers() {
		svc := &ipvs.Service{
			AddressFamily: unix.AF_INET,
			Protocol:      unix.IPPROTO_UDP,
			Address:       net.ParseIP("203.0.113.20"),
			Port:          uint16(1000 + i),
			SchedName:     sched,
			Netmask:       0xffffffff,
		}
		if err := handle.NewService(svc); err != nil {
			t.Errorf("scheduler %s: NewService: %v", sched, err)
			continue
		}
		got, err := handle.GetService(svc)
		if err != nil || got.SchedName != sched {
			t.Errorf("scheduler %s: read back %+v, %v", sched, got, err)
		}
	}
}

// TestSmokeIPIP creates an IPIP tunnel and reads its endpoints back.
func TestSmokeIPIP(t *testing.T) {
	RequireIPIP(t)
	h := newLab(t)
	nl := h.Netlink()
	tun := &netlink.Iptun{
		LinkAttrs: netlink.LinkAttrs{Name: "lbk-ipip0"},
		Local:     net.ParseIP("192.0.2.1"),
		Remote:    net.ParseIP("198.51.100.1"),
		Ttl:       64,
	}
	if err := nl.LinkAdd(tun); err != nil {
		t.Fatalf("LinkAdd ipip: %v", err)
	}
	link, err := nl.LinkByName("lbk-ipip0")
	if err != nil {
		t.Fatalf("LinkByName: %v", err)
	}
	got, ok := link.(*netlink.Iptun)
	if !ok {
		t.Fatalf("link is a %T (%s), want *netlink.Iptun", link, link.Type())
	}
	if got.Type() != "ipip" || !got.Local.Equal(tun.Local) || !got.Remote.Equal(tun.Remote) || got.Ttl != 64 {
		t.Errorf("ipip link read back as type %s local %s remote %s ttl %d", got.Type(), got.Local, got.Remote, got.Ttl)
	}
}
