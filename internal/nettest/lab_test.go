package nettest

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func netnsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestEchoAcrossSegmentBothFamilies(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "client"}, {Name: "server"}}})
	client, server := lab.Host("client"), lab.Host("server")
	if got := server.IP4().String(); got != "192.0.2.2" {
		t.Fatalf("server IPv4 = %s, want 192.0.2.2 (host number 2)", got)
	}
	if got := server.IP6().String(); got != "2001:db8::2" {
		t.Fatalf("server IPv6 = %s, want 2001:db8::2", got)
	}
	if err := server.StartEcho(7000); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, network := range []string{"tcp", "udp"} {
		for _, dst := range []netip.Addr{server.IP4(), server.IP6()} {
			r, err := client.Ask(ctx, Probe{Network: network, To: netip.AddrPortFrom(dst, 7000)})
			if err != nil {
				t.Fatalf("%s to %s: %v", network, dst, err)
			}
			want := client.IP4()
			if dst.Is6() {
				want = client.IP6()
			}
			if r.Backend != "server" || r.Source.Addr() != want {
				t.Errorf("%s to %s: reply %+v, want backend server from %s", network, dst, r, want)
			}
		}
	}
	// The server's port is not open in the client's namespace.
	if _, err := client.Ask(ctx, Probe{To: netip.MustParseAddrPort("127.0.0.1:7000"), Timeout: time.Second}); err == nil {
		t.Error("the client reached the server's port on its own loopback: namespaces are not separate")
	}
	c, err := client.Count(ctx, Probe{To: netip.AddrPortFrom(server.IP4(), 7000), N: 50})
	if err != nil || c.Backends["server"] != 50 || c.Failures != 0 {
		t.Fatalf("Count = %+v, %v", c, err)
	}
}

func TestHTTPBackend(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "client"}, {Name: "web"}}})
	web := lab.Host("web")
	if err := web.StartHTTP(8080); err != nil {
		t.Fatal(err)
	}
	resp, err := lab.Host("client").HTTPClient().Get(fmt.Sprintf("http://%s/", netip.AddrPortFrom(web.IP6(), 8080)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw)
	if resp.Header.Get("X-Backend") != "web" {
		t.Errorf("X-Backend = %q", resp.Header.Get("X-Backend"))
	}
	r, err := ParseReply(body)
	if err != nil || r.Backend != "web" || r.Source.Addr() != lab.Host("client").IP6() {
		t.Fatalf("reply %q: %+v, %v", body, r, err)
	}
}

func TestRouterBetweenSegments(t *testing.T) {
	lab := New(t, Topology{
		Segments: []Segment{{Name: "lan"}, {Name: "wan"}},
		Hosts: []HostSpec{
			{Name: "server", Segments: []string{"lan"}},
			{Name: "router", Segments: []string{"lan", "wan"}, Forwarding: true},
			{Name: "client", Segments: []string{"wan"}},
		},
	})
	server, router, client := lab.Host("server"), lab.Host("router"), lab.Host("client")
	if got := client.IP4().String(); got != "198.51.100.3" {
		t.Fatalf("client address %s, want 198.51.100.3 (host 3 on the second segment)", got)
	}
	lan, wan := lab.Segment("lan"), lab.Segment("wan")
	must(t, client.AddRoute(lan.Prefix4, router.Iface("wan").Addr4))
	must(t, client.AddRoute(lan.Prefix6, router.Iface("wan").Addr6))
	must(t, server.AddRoute(wan.Prefix4, router.Iface("lan").Addr4))
	must(t, server.AddRoute(wan.Prefix6, router.Iface("lan").Addr6))
	must(t, server.StartEcho(9000))
	for _, dst := range []netip.Addr{server.IP4(), server.IP6()} {
		r, err := client.Ask(context.Background(), Probe{To: netip.AddrPortFrom(dst, 9000)})
		if err != nil {
			t.Fatalf("routed echo to %s: %v", dst, err)
		}
		if !wan.Prefix4.Contains(r.Source.Addr()) && !wan.Prefix6.Contains(r.Source.Addr()) {
			t.Errorf("server saw %s, want the client's wan address", r.Source)
		}
	}
}

func TestDoSwitchesAndRestoresThreads(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "a"}, {Name: "b"}}})
	rootIno := netnsInode(t, "/proc/self/ns/net")
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 200 {
		h := lab.Hosts()[i%2]
		want := netnsInode(t, h.NamespacePath())
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := h.Do(func() error {
				var st unix.Stat_t
				if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
					return err
				}
				if st.Ino != want {
					return fmt.Errorf("inside Do the thread is in netns %d, want %d", st.Ino, want)
				}
				return nil
			})
			if err != nil {
				errs <- err
			}
			// Afterwards, whatever thread this goroutine lands on must be
			// back in the test's own namespace.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				errs <- err
			} else if st.Ino != rootIno {
				errs <- fmt.Errorf("after Do a thread is left in netns %d", st.Ino)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every thread of the process is in the original namespace.
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns/net"), &st) == nil && st.Ino != rootIno {
			t.Errorf("thread %s is in netns %d after the test", task.Name(), st.Ino)
		}
	}
}

func TestDoReraisesPanicOnCaller(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "a"}}})
	defer func() {
		if v := recover(); v != "boom" {
			t.Fatalf("recovered %v, want the panic from inside Do", v)
		}
	}()
	_ = lab.Host("a").Do(func() error { panic("boom") })
	t.Fatal("Do returned after a panic")
}

func TestSysctlStaysInNamespace(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "r", Forwarding: true}, {Name: "h"}}})
	read := func(h *Host) string {
		var v []byte
		must(t, h.Do(func() error {
			var err error
			v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return err
		}))
		return strings.TrimSpace(string(v))
	}
	if read(lab.Host("r")) != "1" || read(lab.Host("h")) != "0" {
		t.Fatalf("ip_forward: router %s, host %s; want 1 and 0", read(lab.Host("r")), read(lab.Host("h")))
	}
}

// TestHelperProcess is run as a child by the cleanup tests below; it builds
// a lab and then ends the way LBKIT_NETTEST_CHILD says.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("LBKIT_NETTEST_CHILD")
	if mode == "" {
		t.Skip("only runs as the child of a cleanup test")
	}
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "x"}, {Name: "y"}}})
	fmt.Printf("NAMESPACES %s\n", strings.Join(lab.Namespaces(), " "))
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	case "exit":
		os.Exit(3) // no cleanup runs: the namespaces leak
	}
}

func runChild(t *testing.T, mode string) (namespaces []string, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "LBKIT_NETTEST_CHILD="+mode)
	out, _ := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "NAMESPACES "); ok {
			namespaces = strings.Fields(rest)
		}
	}
	if len(namespaces) != 3 {
		t.Fatalf("child (%s) did not report its namespaces:\n%s", mode, out)
	}
	return namespaces, cmd.ProcessState.Pid()
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func TestCleanupAfterFailureAndPanic(t *testing.T) {
	RequireKernel(t)
	for _, mode := range []string{"fail", "panic"} {
		names, _ := runChild(t, mode)
		for _, n := range names {
			if exists(filepath.Join(netnsDir, n)) {
				t.Errorf("after a %s the namespace %s is still there", mode, n)
			}
		}
	}
}

func TestStaleNamespacesRemovedByNextRun(t *testing.T) {
	RequireKernel(t)
	names, pid := runChild(t, "exit")
	for _, n := range names {
		if !exists(filepath.Join(netnsDir, n)) {
			t.Fatalf("the child exited without cleanup, yet %s is gone: the test proves nothing", n)
		}
		if p, ok := ownerPID(n); !ok || p != pid {
			t.Fatalf("namespace %s does not carry the child's pid %d", n, pid)
		}
	}
	// A lab of this (live) process survives the sweep.
	mine := New(t, Topology{Hosts: []HostSpec{{Name: "mine"}}})
	removed, err := RemoveStale()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if exists(filepath.Join(netnsDir, n)) {
			t.Errorf("stale namespace %s was not removed (removed: %v)", n, removed)
		}
	}
	for _, n := range mine.Namespaces() {
		if !exists(filepath.Join(netnsDir, n)) {
			t.Errorf("RemoveStale removed %s of a live process", n)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUDPEchoRepliesFromTheAddressAsked: a client's connected UDP socket
// accepts only replies from the address it sent to, so the echo server must
// answer from the VIP a datagram was sent to, not from its main address.
func TestUDPEchoRepliesFromTheAddressAsked(t *testing.T) {
	lab := New(t, Topology{Hosts: []HostSpec{{Name: "client"}, {Name: "server"}}})
	client, server := lab.Host("client"), lab.Host("server")
	vip4, vip6 := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:99::10")
	must(t, server.AddAddrLo(netip.PrefixFrom(vip4, 32)))
	must(t, server.AddAddrLo(netip.PrefixFrom(vip6, 128)))
	must(t, client.AddRoute(netip.PrefixFrom(vip4, 32), server.IP4()))
	must(t, client.AddRoute(netip.PrefixFrom(vip6, 128), server.IP6()))
	must(t, server.StartEcho(7000))
	for _, vip := range []netip.Addr{vip4, vip6} {
		r, err := client.Ask(context.Background(), Probe{Network: "udp", To: netip.AddrPortFrom(vip, 7000)})
		if err != nil || r.Backend != "server" {
			t.Errorf("UDP to the VIP %s on the server's loopback: %+v, %v", vip, r, err)
		}
	}
}
