//go:build linux

package arp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// What a running Announcer costs the data traffic of its interface: small
// UDP datagrams between two hosts through the announcer host's interface,
// with nothing listening on that interface, with the Announcer (Dial), and
// with the tap the Announcer used to open (one ETH_P_ALL socket with the
// same filter), side by side in one run.
//
// Two figures per datagram, both taken at the sender: wall time, which
// includes the receiving path (on veth the bridge and the receiving host's
// stack run in the sender's softirq) but also whatever the machine's other
// jobs cost the sender; and the sending thread's CPU time, which is immune
// to that but leaves out softirq time (the kernel accounts it apart), so it
// sees the cost of a tap on the sending host's output but not on its
// input. A tap that accepts every frame shows what a costly tap looks like.

const (
	sinkPort        = 9000
	datagramsPerRun = 10000
	datagramLen     = 64
	// packetIgnoreOutgoing is PACKET_IGNORE_OUTGOING of linux/if_packet.h
	// (Linux 4.20), which golang.org/x/sys/unix does not name.
	packetIgnoreOutgoing = 23
)

// tap is one way of listening on the announcer host's interface.
type tap struct {
	name string
	// open starts listening on ifi and returns what stops it.
	open func(tb testing.TB, h *nettest.Host, ifi *net.Interface) func()
}

var taps = []tap{
	{"none", func(testing.TB, *nettest.Host, *net.Interface) func() { return func() {} }},
	// Nothing either: how far apart two measurements of the same thing
	// come out.
	{"none_again", func(testing.TB, *nettest.Host, *net.Interface) func() { return func() {} }},
	// What Dial opens: one socket for ARP, one for IPv6.
	{"announcer", func(tb testing.TB, h *nettest.Host, _ *net.Interface) func() {
		a := dialOn(tb, h, Config{})
		acquireOn(tb, a, kvip4, kvip6)
		return func() {
			if err := a.Close(); err != nil {
				tb.Error(err)
			}
		}
	}},
	// The socket Dial used to open: every frame in and out of the
	// interface goes through its filter, and every frame out is cloned
	// first.
	{"eth_p_all", func(tb testing.TB, h *nettest.Host, ifi *net.Interface) func() {
		return drain(tb, h, ifi, unix.ETH_P_ALL, false, false)
	}},
	// The same without the host's output.
	{"eth_p_all_ignore_outgoing", func(tb testing.TB, h *nettest.Host, ifi *net.Interface) func() {
		return drain(tb, h, ifi, unix.ETH_P_ALL, true, false)
	}},
	// A tap without filter: every frame is copied to the socket and read.
	{"eth_p_all_accept_all", func(tb testing.TB, h *nettest.Host, ifi *net.Interface) func() {
		return drain(tb, h, ifi, unix.ETH_P_ALL, false, true)
	}},
}

// drain opens a packet socket on ifi bound to proto, with the package's
// filter unless acceptAll, reads it until stop is called, and returns stop.
func drain(tb testing.TB, h *nettest.Host, ifi *net.Interface, proto int, ignoreOutgoing, acceptAll bool) func() {
	tb.Helper()
	filter, err := Filter(ifi.Index)
	if err != nil {
		tb.Fatal(err)
	}
	var c *packet.Conn
	err = h.Do(func() error {
		cfg := &packet.Config{Filter: filter}
		if acceptAll {
			cfg = nil
		}
		var err error
		if c, err = packet.Listen(ifi, packet.Raw, proto, cfg); err != nil {
			return err
		}
		if ignoreOutgoing {
			return setsockoptInt(c, unix.SOL_PACKET, packetIgnoreOutgoing, 1)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	var closed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, readBufferLen)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil && closed.Load() {
				return
			}
		}
	}()
	return func() {
		closed.Store(true)
		c.Close()
		<-done
	}
}

func setsockoptInt(c *packet.Conn, level, opt, v int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return err
	}
	return serr
}

// udpSink reads and discards datagrams on h's port sinkPort until the test
// ends.
func udpSink(tb testing.TB, h *nettest.Host) {
	tb.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: sinkPort})
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
}

// udpSender is a connected UDP socket made in a host's namespace.
func udpSender(tb testing.TB, h *nettest.Host, to netip.Addr) *net.UDPConn {
	tb.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, sinkPort)))
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// sendTimed sends n datagrams in batches of 64 (sendmmsg) and returns the
// CPU time its thread spent per datagram: the send calls and whatever
// softirq work ran inline with them, but not the time the thread waited
// for a CPU the other jobs on the machine held. Batches refused for lack of
// buffer space are retried.
func sendTimed(tb testing.TB, c *net.UDPConn, n int) (wall, cpu time.Duration) {
	tb.Helper()
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, datagramLen)}
	}
	pc := ipv4.NewPacketConn(c) // sendmmsg; the family of c does not matter
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, t0 := threadCPU(tb), time.Now()
	for sent := 0; sent < n; {
		k, err := pc.WriteBatch(msgs[:min(batch, n-sent)], 0)
		if err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.ECONNREFUSED) {
			tb.Fatal(err)
		}
		sent += k
	}
	return time.Since(t0) / time.Duration(n), (threadCPU(tb) - start) / time.Duration(n)
}

// threadCPU returns the user and system time of the calling thread.
func threadCPU(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDataPathCost reports, for each tap and direction (rx4/rx6: from
// the client to the announcer host over IPv4/IPv6; tx4: from the announcer
// host to the client), the median over b.N rounds of the wall and CPU time
// per datagram, and the median over the rounds of each tap's ratio to no
// tap in the same round. Every tap takes its turn in every round, in a
// rotating order. Run it pinned to one CPU, so that the softirq work of the
// receiving path, the sockets' readers and the sender share it and the wall
// time is the whole path's CPU time (on a machine shared with other jobs it
// also holds their share of that CPU; the none_again tap shows how much
// that moves the ratios):
//
//	go test -c -o arp.test ./arp && cd arp && taskset -c 1 ../arp.test \
//	    -test.run '^$' -test.bench BenchmarkDataPathCost -test.benchtime=60x
func BenchmarkDataPathCost(b *testing.B) {
	client, ann := clientAndAnnouncer(b)
	udpSink(b, client)
	udpSink(b, ann)
	var ifi *net.Interface
	if err := ann.Do(func() error {
		var err error
		ifi, err = net.InterfaceByName("lan")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	dirs := []struct {
		name string
		conn *net.UDPConn
	}{
		{"rx4", udpSender(b, client, ann.IP4())},
		{"rx6", udpSender(b, client, ann.IP6())},
		{"tx4", udpSender(b, ann, client.IP4())},
	}
	// Warm the neighbour caches and the sinks.
	for _, d := range dirs {
		_, _ = sendTimed(b, d.conn, 1000)
	}
	type sample struct{ wall, cpu time.Duration }
	rounds := make([]map[string]sample, b.N) // by "<dir> <tap>"
	b.ResetTimer()
	for i := range b.N {
		rounds[i] = map[string]sample{}
		for k := range taps {
			tp := taps[(i+k)%len(taps)]
			stop := tp.open(b, ann, ifi)
			// Collect the garbage of the setup now, not in the middle of
			// a measurement.
			runtime.GC()
			for _, d := range dirs {
				wall, cpu := sendTimed(b, d.conn, datagramsPerRun)
				rounds[i][d.name+" "+tp.name] = sample{wall, cpu}
			}
			stop()
		}
	}
	b.StopTimer()
	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		if n := len(xs); n%2 == 0 {
			return (xs[n/2-1] + xs[n/2]) / 2
		}
		return xs[len(xs)/2]
	}
	for _, d := range dirs {
		for _, tp := range taps {
			var wall, cpu, wallRatio, cpuRatio []float64
			for _, r := range rounds {
				s, base := r[d.name+" "+tp.name], r[d.name+" none"]
				wall = append(wall, float64(s.wall.Nanoseconds()))
				cpu = append(cpu, float64(s.cpu.Nanoseconds()))
				wallRatio = append(wallRatio, float64(s.wall)/float64(base.wall))
				cpuRatio = append(cpuRatio, float64(s.cpu)/float64(base.cpu))
			}
			b.ReportMetric(median(wall), fmt.Sprintf("wall-ns/pkt-%s-%s", d.name, tp.name))
			b.ReportMetric(median(cpu), fmt.Sprintf("cpu-ns/pkt-%s-%s", d.name, tp.name))
			if tp.name != "none" {
				b.ReportMetric(median(wallRatio), fmt.Sprintf("wall-x-%s-%s", d.name, tp.name))
				b.ReportMetric(median(cpuRatio), fmt.Sprintf("cpu-x-%s-%s", d.name, tp.name))
			}
		}
	}
}
