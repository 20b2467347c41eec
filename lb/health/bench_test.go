package health

// BenchmarkTenThousandTargets checks 10k TCP targets every second against
// real listeners on loopback and compares, in the same run, this package's
// Checker with the naive design: a goroutine and a time.Ticker per target.
//
// The listeners run in a child process (this test binary, re-executed with
// benchServerEnv set), so that getrusage(RUSAGE_SELF) around the measured
// window counts the checker, not the servers; the child's CPU is read from
// /proc and reported separately. Note that on loopback the kernel handles
// the listener's side of the handshake (SYN, SYN-ACK, ACK) in softirq context
// on the sending CPU, which Linux accounts to the process that sent the
// packet: part of what a remote backend's kernel would do shows up in the
// checker's system time here, equally for both designs.
//
// Run with:
//
//	go test -run '^$' -bench TenThousand -benchtime 1x ./lb/health

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	benchTargets   = flag.Int("health.targets", 10000, "targets in BenchmarkTenThousandTargets")
	benchListeners = flag.Int("health.listeners", 16, "loopback listeners the targets are spread over")
	benchWindow    = flag.Duration("health.window", 10*time.Second, "measured window per implementation")
	benchWarmup    = flag.Duration("health.warmup", 3*time.Second, "time to reach steady state before measuring")
	benchOnly      = flag.String("health.only", "", "measure only the variant with this name (for profiling)")
)

const (
	benchServerEnv    = "LBKIT_HEALTH_BENCH_SERVER"
	benchListenersEnv = "LBKIT_HEALTH_BENCH_LISTENERS"
	benchInterval     = time.Second
	benchTimeout      = time.Second
)

// benchServer is the child process: n listeners on 127.0.0.1 that accept
// and close (mode "tcp") or serve "200 ok" over HTTP/1.1 with keep-alive
// (mode "http"), until stdin closes.
func benchServer() {
	mode := os.Getenv(benchServerEnv)
	n, err := strconv.Atoi(os.Getenv(benchListenersEnv))
	if err != nil || n < 1 || mode != "tcp" && mode != "http" {
		fmt.Fprintln(os.Stderr, "bad", benchServerEnv, "or", benchListenersEnv)
		os.Exit(2)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	var ports []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		if mode == "http" {
			go func() { _ = (&http.Server{Handler: ok, ErrorLog: log.New(io.Discard, "", 0)}).Serve(ln) }()
			continue
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					continue
				}
				c.Close()
			}
		}()
	}
	fmt.Println(strings.Join(ports, " "))
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startBenchServer starts the child and returns its listeners.
func startBenchServer(b *testing.B, mode string, n int) (addrs []netip.AddrPort, pid int) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), benchServerEnv+"="+mode, benchListenersEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal("bench server:", err)
	}
	for _, p := range strings.Fields(line) {
		port, _ := strconv.Atoi(p)
		addrs = append(addrs, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
	}
	return addrs, cmd.Process.Pid
}

// procCPU returns the user+system CPU time of process pid, from
// /proc/pid/stat (in clock ticks of 10 ms, USER_HZ on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is the resident set size now, from /proc/self/statm.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// benchProbe is the check both implementations run: the package's TCP
// probe, counted into a histogram of start times for the spread figure.
type benchProbe struct {
	window  atomic.Pointer[benchHist]
	checks  atomic.Int64
	failed  atomic.Int64
	errMu   sync.Mutex
	errs    map[string]int // failure reasons, with addresses cut off
	probers []prober
}

type benchHist struct {
	start   time.Time
	buckets []atomic.Int64 // checks started per 10 ms
}

// newBenchProbe builds n probers of check(i) for target i.
func newBenchProbe(n int, check func(i int) Check) *benchProbe {
	bp := &benchProbe{}
	sh := &shared{}
	for i := 0; i < n; i++ {
		bp.probers = append(bp.probers, check(i).newProber(sh))
	}
	return bp
}

func (bp *benchProbe) close() {
	for _, p := range bp.probers {
		p.close()
	}
}

func (bp *benchProbe) probe(ctx context.Context, i int) error {
	if h := bp.window.Load(); h != nil {
		if k := int(time.Since(h.start) / (10 * time.Millisecond)); k < len(h.buckets) {
			h.buckets[k].Add(1)
		}
	}
	bp.checks.Add(1)
	err := bp.probers[i].probe(ctx)
	if err != nil {
		bp.failed.Add(1)
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		bp.errMu.Lock()
		if bp.errs == nil {
			bp.errs = map[string]int{}
		}
		bp.errs[msg]++
		bp.errMu.Unlock()
	}
	return err
}

// implementation runs all targets until ctx is done, then returns after
// every goroutine it started has ended. It sends a function returning the
// targets' statuses on started once its targets are registered.
type implementation struct {
	name string
	run  func(ctx context.Context, bp *benchProbe, n int, started chan<- func() []Status)
}

var lbkitImpl = implementation{"lbkit", func(ctx context.Context, bp *benchProbe, n int, started chan<- func() []Status) {
	c := New(Options{})
	for i := 0; i < n; i++ {
		if err := c.Add(Target{ID: strconv.Itoa(i), Interval: benchInterval, Timeout: benchTimeout,
			Check: Func(func(ctx context.Context) error { return bp.probe(ctx, i) })}); err != nil {
			panic(err)
		}
	}
	started <- c.Snapshot
	_ = c.Run(ctx)
}}

// naiveImpl is the design this package avoids: a goroutine and a ticker
// per target. It is given the same fairness as the Checker: a random first
// delay within the interval so that it does not fire in lockstep, the same
// probe, and the same rise/fall state machine under one mutex.
var naiveImpl = implementation{"naive", func(ctx context.Context, bp *benchProbe, n int, started chan<- func() []Status) {
	var mu sync.Mutex
	entries := make([]*entry, n)
	for i := range entries {
		entries[i] = &entry{t: Target{ID: strconv.Itoa(i), Rise: DefaultRise, Fall: DefaultFall}}
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			phase := time.NewTimer(rand.N(benchInterval))
			select {
			case <-ctx.Done():
				phase.Stop()
				return
			case <-phase.C:
			}
			tick := time.NewTicker(benchInterval)
			defer tick.Stop()
			for {
				cctx, cancel := context.WithTimeout(ctx, benchTimeout)
				t0 := time.Now()
				err := bp.probe(cctx, i)
				cancel()
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				entries[i].record(err, time.Since(t0), time.Now())
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	started <- func() []Status {
		mu.Lock()
		defer mu.Unlock()
		out := make([]Status, len(entries))
		for i, e := range entries {
			out[i] = e.st
		}
		return out
	}
	wg.Wait()
}}

type benchResult struct {
	cpu, serverCPU        float64 // cores: CPU seconds per wall second
	checksPerSec          float64
	failed                int64
	heapMB, stackMB, rss0 float64
	rssMB                 float64
	goroutines            int
	peak10ms              int64
	mean10ms              float64
	up                    int
	p50, p99              time.Duration // latency of the targets' last checks
	gcPerSec              float64
	allocPerCheck         float64 // bytes
}

func measure(b *testing.B, name string, impl implementation, check func(i int) Check, serverPid, n int) benchResult {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var r benchResult
	r.rss0 = float64(rssBytes()) / (1 << 20)
	bp := newBenchProbe(n, check)
	defer bp.close()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan func() []Status, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		impl.run(ctx, bp, n, started)
	}()
	statuses := <-started
	time.Sleep(*benchWarmup)

	hist := &benchHist{start: time.Now(), buckets: make([]atomic.Int64, int(*benchWindow/(10*time.Millisecond)))}
	checks0, failed0 := bp.checks.Load(), bp.failed.Load()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, srv0, wall0 := selfCPU(), procCPU(serverPid), time.Now()
	bp.window.Store(hist)
	time.Sleep(*benchWindow)
	wall := time.Since(wall0)
	cpu, srv := selfCPU()-cpu0, procCPU(serverPid)-srv0
	bp.window.Store(nil)
	checks, failed := bp.checks.Load()-checks0, bp.failed.Load()-failed0

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMB = float64(ms.HeapInuse) / (1 << 20)
	r.stackMB = float64(ms.StackInuse) / (1 << 20)
	r.rssMB = float64(rssBytes()) / (1 << 20)
	r.goroutines = runtime.NumGoroutine()
	r.gcPerSec = float64(ms.NumGC-ms0.NumGC) / wall.Seconds()
	r.allocPerCheck = float64(ms.TotalAlloc-ms0.TotalAlloc) / float64(checks)
	var lat []time.Duration
	for _, st := range statuses() {
		if st.State == StateUp {
			r.up++
		}
		lat = append(lat, st.LastLatency)
	}
	slices.Sort(lat)
	r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	cancel()
	<-done

	r.cpu = cpu.Seconds() / wall.Seconds()
	r.serverCPU = srv.Seconds() / wall.Seconds()
	r.checksPerSec = float64(checks) / wall.Seconds()
	r.failed = failed
	var sum int64
	for i := range hist.buckets {
		v := hist.buckets[i].Load()
		sum += v
		r.peak10ms = max(r.peak10ms, v)
	}
	r.mean10ms = float64(sum) / float64(len(hist.buckets))
	if len(bp.errs) > 0 {
		b.Logf("%s: failures since start: %v", name, bp.errs)
	}
	b.Logf("%-9s cpu %.3f cores (server %.3f)  checks %.0f/s failed %d  heap %.1f MB stack %.1f MB rss %.1f MB (before %.1f)  goroutines %d  checks per 10ms mean %.1f peak %d  up %d/%d  latency p50 %v p99 %v  GC %.1f/s  alloc %.0f B/check",
		name, r.cpu, r.serverCPU, r.checksPerSec, r.failed, r.heapMB, r.stackMB, r.rssMB, r.rss0, r.goroutines, r.mean10ms, r.peak10ms, r.up, n, r.p50, r.p99, r.gcPerSec, r.allocPerCheck)
	return r
}

// benchRuns alternates which side of a comparison runs first, so that
// neither always inherits the other's heap.
var benchRuns atomic.Int64

// compare measures two variants on the same server, in alternating order,
// and reports their figures and ratios.
func compare(b *testing.B, mode string, a, z variant) {
	n := *benchTargets
	addrs, pid := startBenchServer(b, mode, *benchListeners)
	var ra, rz benchResult
	if *benchOnly != "" {
		for _, v := range []variant{a, z} {
			if v.name == *benchOnly {
				for i := 0; i < b.N; i++ {
					measure(b, v.name, v.impl, v.check(addrs), pid, n)
				}
				return
			}
		}
		b.Fatalf("no variant %q", *benchOnly)
	}
	for i := 0; i < b.N; i++ {
		if benchRuns.Add(1)%2 == 1 {
			ra = measure(b, a.name, a.impl, a.check(addrs), pid, n)
			rz = measure(b, z.name, z.impl, z.check(addrs), pid, n)
		} else {
			rz = measure(b, z.name, z.impl, z.check(addrs), pid, n)
			ra = measure(b, a.name, a.impl, a.check(addrs), pid, n)
		}
	}
	for _, m := range []struct {
		name string
		r    benchResult
	}{{a.name, ra}, {z.name, rz}} {
		b.ReportMetric(m.r.cpu, m.name+"-cpu-cores")
		b.ReportMetric(m.r.serverCPU, m.name+"-server-cpu-cores")
		b.ReportMetric(m.r.heapMB, m.name+"-heap-MB")
		b.ReportMetric(m.r.stackMB, m.name+"-stack-MB")
		b.ReportMetric(m.r.rssMB, m.name+"-rss-MB")
		b.ReportMetric(float64(m.r.goroutines), m.name+"-goroutines")
		b.ReportMetric(m.r.checksPerSec, m.name+"-checks/s")
		b.ReportMetric(float64(m.r.peak10ms), m.name+"-peak-checks/10ms")
		if m.r.up != n || m.r.failed != 0 {
			b.Errorf("%s: %d of %d targets up, %d failed checks in the window", m.name, m.r.up, n, m.r.failed)
		}
	}
	b.ReportMetric(rz.cpu/ra.cpu, z.name+"/"+a.name+"-cpu")
	b.ReportMetric((rz.heapMB+rz.stackMB)/(ra.heapMB+ra.stackMB), z.name+"/"+a.name+"-heap+stack")
}

// variant is one side of a comparison.
type variant struct {
	name  string
	impl  implementation
	check func(addrs []netip.AddrPort) func(i int) Check
}

func tcpTargets(addrs []netip.AddrPort) func(int) Check {
	return func(i int) Check { return TCP{Addr: addrs[i%len(addrs)]} }
}

// BenchmarkTenThousandTargets: 10k TCP targets checked every second, this
// package's Checker against a goroutine and a ticker per target.
func BenchmarkTenThousandTargets(b *testing.B) {
	compare(b, "tcp",
		variant{"lbkit", lbkitImpl, tcpTargets},
		variant{"naive", naiveImpl, tcpTargets})
}

// BenchmarkTenThousandHTTP: 10k HTTP targets checked every second by the
// Checker, with the default persistent connection per target against a
// new connection per check (DisableKeepAlive). It measures the reason for
// the default.
func BenchmarkTenThousandHTTP(b *testing.B) {
	httpTargets := func(keepAlive bool) func([]netip.AddrPort) func(int) Check {
		return func(addrs []netip.AddrPort) func(int) Check {
			return func(i int) Check {
				return HTTP{Addr: addrs[i%len(addrs)], Path: "/healthz", DisableKeepAlive: !keepAlive}
			}
		}
	}
	compare(b, "http",
		variant{"keepalive", lbkitImpl, httpTargets(true)},
		variant{"newconn", lbkitImpl, httpTargets(false)})
}
