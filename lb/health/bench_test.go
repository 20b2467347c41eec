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
// (mode "http"), and one listener whose accept queue is full, so that
// connects to it time out (an unresponsive backend), until stdin closes. It
// prints the n ports on one line and the unresponsive one on the next.
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
	full, closeFull, err := listenFull(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Keep the listener and its queued connections reachable: once garbage,
	// their finalizers would close them and connects would be refused.
	defer closeFull()
	fmt.Println(strings.Join(ports, " "))
	fmt.Println(full.Port())
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// benchEnv is what the child serves: the answering listeners and the
// unresponsive one, and which targets use the latter.
type benchEnv struct {
	addrs []netip.AddrPort
	full  netip.AddrPort
	every int // target i is unresponsive when every > 0 and i%every == 0
	pid   int
}

func (env benchEnv) unresponsive(i int) bool { return env.every > 0 && i%env.every == 0 }

// addr is target i's address.
func (env benchEnv) addr(i int) netip.AddrPort {
	if env.unresponsive(i) {
		return env.full
	}
	return env.addrs[i%len(env.addrs)]
}

// startBenchServer starts the child.
func startBenchServer(b *testing.B, mode string, n int) benchEnv {
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
	out := bufio.NewReader(stdout)
	lo := netip.MustParseAddr("127.0.0.1")
	port := func(s string) netip.AddrPort {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			b.Fatalf("bench server: port %q: %v", s, err)
		}
		return netip.AddrPortFrom(lo, uint16(p))
	}
	env := benchEnv{pid: cmd.Process.Pid}
	line, err := out.ReadString('\n')
	if err != nil {
		b.Fatal("bench server:", err)
	}
	for _, p := range strings.Fields(line) {
		env.addrs = append(env.addrs, port(p))
	}
	if line, err = out.ReadString('\n'); err != nil {
		b.Fatal("bench server:", err)
	}
	env.full = port(strings.TrimSpace(line))
	return env
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

// benchProbe is the check every implementation runs: target i's prober,
// counted into a histogram of start times for the spread figure, with its
// failures sorted into those of answering targets (which must not fail)
// and those of unresponsive ones (which must time out).
type benchProbe struct {
	window   atomic.Pointer[benchHist]
	checks   atomic.Int64
	failed   atomic.Int64 // answering targets
	timeouts atomic.Int64 // unresponsive targets
	errMu    sync.Mutex
	errs     map[string]int // failure reasons of answering targets, with addresses cut off
	env      benchEnv
	probers  []prober
}

type benchHist struct {
	start   time.Time
	buckets []atomic.Int64 // checks started per 10 ms
}

// newBenchProbe builds n probers of check(i) for target i.
func newBenchProbe(env benchEnv, n int, check func(i int) Check) *benchProbe {
	bp := &benchProbe{env: env}
	sh := &shared{}
	for i := 0; i < n; i++ {
		bp.probers = append(bp.probers, check(i).clone().newProber(sh))
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
	switch {
	case err == nil:
	case bp.env.unresponsive(i):
		bp.timeouts.Add(1)
	default:
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
// targets' statuses, target i's at index i, on started once its targets
// are registered.
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
	started <- func() []Status { // in target order
		out := make([]Status, n)
		for _, st := range c.Snapshot() {
			i, _ := strconv.Atoi(st.ID)
			out[i] = st
		}
		return out
	}
	_ = c.Run(ctx)
}}

// naiveImpl is the design this package avoids: a goroutine and a ticker
// per target. It is given the same fairness as the Checker: a random first
// delay within the interval so that it does not fire in lockstep, the same
// probe, and the same rise/fall state machine under one mutex. Its start
// delay is measured as the Checker's is: from when the check was due (the
// tick, or the end of the previous check if that ran past the tick) to
// when the goroutine starts it.
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
			var due time.Time // a timer's channel carries the time it was due
			select {
			case <-ctx.Done():
				phase.Stop()
				return
			case due = <-phase.C:
			}
			tick := time.NewTicker(benchInterval)
			defer tick.Stop()
			for {
				t0 := time.Now()
				delay := max(t0.Sub(due), 0)
				cctx, cancel := context.WithTimeout(ctx, benchTimeout)
				err := bp.probe(cctx, i)
				cancel()
				if ctx.Err() != nil {
					return
				}
				end := time.Now()
				mu.Lock()
				entries[i].record(err, end.Sub(t0), end)
				entries[i].st.LastStartDelay = delay
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case due = <-tick.C:
				}
				if due.Before(end) { // the tick came while the check ran
					due = end
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
	failed, timeouts      int64
	heapMB, stackMB, rss0 float64
	rssMB                 float64
	goroutines            int
	peak10ms              int64
	mean10ms              float64
	up                    int
	p50, p99              time.Duration // latency of the answering targets' last checks
	d50, d99              time.Duration // start delay of all targets' last checks
	u50                   time.Duration // latency of the unresponsive targets' last checks
	gcPerSec              float64
	allocPerCheck         float64 // bytes
}

// percentiles returns the 50th and 99th percentiles of d (sorted in place).
func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

func measure(b *testing.B, v variant, env benchEnv, n int) benchResult {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var r benchResult
	r.rss0 = float64(rssBytes()) / (1 << 20)
	check, cleanup := v.targets(env, n)
	bp := newBenchProbe(env, n, check)
	defer bp.close()
	if cleanup != nil {
		defer cleanup()
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan func() []Status, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.impl.run(ctx, bp, n, started)
	}()
	statuses := <-started
	time.Sleep(*benchWarmup)

	hist := &benchHist{start: time.Now(), buckets: make([]atomic.Int64, int(*benchWindow/(10*time.Millisecond)))}
	checks0, failed0, timeouts0 := bp.checks.Load(), bp.failed.Load(), bp.timeouts.Load()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, srv0, wall0 := selfCPU(), procCPU(env.pid), time.Now()
	bp.window.Store(hist)
	time.Sleep(*benchWindow)
	wall := time.Since(wall0)
	cpu, srv := selfCPU()-cpu0, procCPU(env.pid)-srv0
	bp.window.Store(nil)
	checks := bp.checks.Load() - checks0

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMB = float64(ms.HeapInuse) / (1 << 20)
	r.stackMB = float64(ms.StackInuse) / (1 << 20)
	r.rssMB = float64(rssBytes()) / (1 << 20)
	r.goroutines = runtime.NumGoroutine()
	r.gcPerSec = float64(ms.NumGC-ms0.NumGC) / wall.Seconds()
	r.allocPerCheck = float64(ms.TotalAlloc-ms0.TotalAlloc) / float64(checks)
	var lat, delay, ulat []time.Duration
	for i, st := range statuses() {
		delay = append(delay, st.LastStartDelay)
		if env.unresponsive(i) {
			ulat = append(ulat, st.LastLatency)
			continue
		}
		if st.State == StateUp {
			r.up++
		}
		lat = append(lat, st.LastLatency)
	}
	r.p50, r.p99 = percentiles(lat)
	r.d50, r.d99 = percentiles(delay)
	r.u50, _ = percentiles(ulat)
	r.failed, r.timeouts = bp.failed.Load()-failed0, bp.timeouts.Load()-timeouts0
	cancel()
	<-done

	r.cpu = cpu.Seconds() / wall.Seconds()
	r.serverCPU = srv.Seconds() / wall.Seconds()
	r.checksPerSec = float64(checks) / wall.Seconds()
	var sum int64
	for i := range hist.buckets {
		v := hist.buckets[i].Load()
		sum += v
		r.peak10ms = max(r.peak10ms, v)
	}
	r.mean10ms = float64(sum) / float64(len(hist.buckets))
	if len(bp.errs) > 0 {
		b.Logf("%s: failures of answering targets since start: %v", v.name, bp.errs)
	}
	b.Logf("%-9s cpu %.3f cores (server %.3f)  checks %.0f/s failed %d timed out %d  heap %.1f MB stack %.1f MB rss %.1f MB (before %.1f)  goroutines %d  checks per 10ms mean %.1f peak %d  up %d  latency p50 %v p99 %v  start delay p50 %v p99 %v  unresponsive latency p50 %v  GC %.1f/s  alloc %.0f B/check",
		v.name, r.cpu, r.serverCPU, r.checksPerSec, r.failed, r.timeouts, r.heapMB, r.stackMB, r.rssMB, r.rss0, r.goroutines, r.mean10ms, r.peak10ms, r.up, r.p50, r.p99, r.d50, r.d99, r.u50, r.gcPerSec, r.allocPerCheck)
	return r
}

// benchRuns rotates which variant of a comparison runs first, so that none
// always inherits another's heap.
var benchRuns atomic.Int64

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// compare measures the variants on the same server, in rotating order, and
// reports their figures and their ratios to the first. every > 0 makes
// every every-th target unresponsive.
func compare(b *testing.B, mode string, every int, vs ...variant) {
	n := *benchTargets
	env := startBenchServer(b, mode, *benchListeners)
	env.every = every
	unresponsive := 0
	for i := 0; i < n; i++ {
		if env.unresponsive(i) {
			unresponsive++
		}
	}
	if *benchOnly != "" {
		for _, v := range vs {
			if v.name == *benchOnly {
				for i := 0; i < b.N; i++ {
					measure(b, v, env, n)
				}
				b.ReportMetric(0, "ns/op")
				return
			}
		}
		b.Fatalf("no variant %q", *benchOnly)
	}
	rs := make([]benchResult, len(vs))
	for i := 0; i < b.N; i++ {
		first := int(benchRuns.Add(1)-1) % len(vs)
		for k := range vs {
			j := (first + k) % len(vs)
			rs[j] = measure(b, vs[j], env, n)
		}
	}
	// The time per iteration is the length of the measuring windows, set
	// by flags: it says nothing.
	b.ReportMetric(0, "ns/op")
	for j, v := range vs {
		r := rs[j]
		b.ReportMetric(r.cpu, v.name+"-cpu-cores")
		b.ReportMetric(r.serverCPU, v.name+"-server-cpu-cores")
		b.ReportMetric(r.heapMB, v.name+"-heap-MB")
		b.ReportMetric(r.stackMB, v.name+"-stack-MB")
		b.ReportMetric(r.rssMB, v.name+"-rss-MB")
		b.ReportMetric(float64(r.goroutines), v.name+"-goroutines")
		b.ReportMetric(r.checksPerSec, v.name+"-checks/s")
		b.ReportMetric(float64(r.peak10ms), v.name+"-peak-checks/10ms")
		b.ReportMetric(ms(r.p50), v.name+"-latency-p50-ms")
		b.ReportMetric(ms(r.p99), v.name+"-latency-p99-ms")
		b.ReportMetric(ms(r.d50), v.name+"-start-delay-p50-ms")
		b.ReportMetric(ms(r.d99), v.name+"-start-delay-p99-ms")
		if r.up != n-unresponsive || r.failed != 0 {
			b.Errorf("%s: %d of %d answering targets up, %d of their checks failed in the window", v.name, r.up, n-unresponsive, r.failed)
		}
		if unresponsive > 0 && (r.timeouts == 0 || r.u50 < benchTimeout*9/10) {
			b.Errorf("%s: the %d unresponsive targets failed %d checks in the window, in %v (p50), want timeouts of %v",
				v.name, unresponsive, r.timeouts, r.u50, benchTimeout)
		}
		if j > 0 {
			base := rs[0]
			b.ReportMetric(r.cpu/base.cpu, v.name+"/"+vs[0].name+"-cpu")
			b.ReportMetric((r.heapMB+r.stackMB)/(base.heapMB+base.stackMB), v.name+"/"+vs[0].name+"-heap+stack")
		}
	}
}

// variant is one side of a comparison: an implementation and the checks
// it runs. targets returns target i's check and a function that releases
// what the checks share (or nil).
type variant struct {
	name    string
	impl    implementation
	targets func(env benchEnv, n int) (check func(i int) Check, cleanup func())
}

func tcpTargets(env benchEnv, _ int) (func(int) Check, func()) {
	return func(i int) Check { return TCP{Addr: env.addr(i)} }, nil
}

// BenchmarkTenThousandTargets: 10k TCP targets checked every second, this
// package's Checker against a goroutine and a ticker per target; with all
// targets answering, and with every tenth target unresponsive (its connects
// time out after the 1 s Timeout, so that ~1000 checks hang at any time and
// the Checker's worker pool must grow to hold them).
func BenchmarkTenThousandTargets(b *testing.B) {
	for _, c := range []struct {
		name  string
		every int
	}{{"all-answer", 0}, {"10pct-unresponsive", 10}} {
		b.Run(c.name, func(b *testing.B) {
			compare(b, "tcp", c.every,
				variant{"lbkit", lbkitImpl, tcpTargets},
				variant{"naive", naiveImpl, tcpTargets})
		})
	}
}

// BenchmarkTenThousandHTTP: 10k HTTP targets checked every second by the
// Checker, three ways: the HTTP check with its default persistent
// connection per target (keepalive), the HTTP check with a connection per
// check (newconn, DisableKeepAlive), and the usual alternative, a Func that
// sends the same GET through one net/http Client and Transport shared by
// all targets (nethttp). Each target is its own host to the Transport, as
// 10k distinct backends would be, so it too keeps a connection per target.
func BenchmarkTenThousandHTTP(b *testing.B) {
	httpTargets := func(keepAlive bool) func(benchEnv, int) (func(int) Check, func()) {
		return func(env benchEnv, _ int) (func(int) Check, func()) {
			return func(i int) Check {
				return HTTP{Addr: env.addr(i), Path: "/healthz", DisableKeepAlive: !keepAlive}
			}, nil
		}
	}
	compare(b, "http", 0,
		variant{"keepalive", lbkitImpl, httpTargets(true)},
		variant{"newconn", lbkitImpl, httpTargets(false)},
		variant{"nethttp", lbkitImpl, netHTTPTargets})
}

// netHTTPTargets checks target i with GET http://t<i>.bench.invalid/healthz
// through one http.Client; the Transport dials target i's address for host
// t<i>, so that each target has its own connection pool. Redirects are not
// followed and the status is judged against the same default set, as the
// HTTP check does.
//
// The cleanup aborts the Transport's connections with a RST: closed
// normally, they would leave 10k TIME_WAIT sockets on loopback for a minute,
// which slows down the connects of whichever variant runs next.
func netHTTPTargets(env benchEnv, n int) (func(int) Check, func()) {
	var d net.Dialer
	var mu sync.Mutex
	var conns []*net.TCPConn
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(host, "t"), ".bench.invalid"))
			if err != nil || i < 0 || i >= n {
				return nil, fmt.Errorf("no target for %q", addr)
			}
			c, err := d.DialContext(ctx, "tcp", env.addr(i).String())
			if tc, ok := c.(*net.TCPConn); ok {
				mu.Lock()
				conns = append(conns, tc)
				mu.Unlock()
			}
			return c, err
		},
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return func(i int) Check {
			url := fmt.Sprintf("http://t%d.bench.invalid/healthz", i)
			return Func(func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return err
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
				resp.Body.Close()
				if err != nil {
					return err
				}
				if !defaultStatusSet.Contains(resp.StatusCode) {
					return &StatusError{Code: resp.StatusCode, Expect: defaultStatusSet}
				}
				return nil
			})
		}, func() {
			mu.Lock()
			for _, c := range conns {
				_ = c.SetLinger(0) // fails harmlessly on connections already closed
			}
			mu.Unlock()
			tr.CloseIdleConnections()
		}
}
