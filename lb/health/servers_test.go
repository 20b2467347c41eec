package health

// Real servers on loopback for the tests: each listens on 127.0.0.1 or ::1
// with a kernel-chosen port, and can be switched up, down, slow or wrong
// while a Checker probes it.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// loopbacks are the addresses the tests listen on.
var loopbacks = []struct {
	name string
	addr netip.Addr
}{
	{"ipv4", netip.MustParseAddr("127.0.0.1")},
	{"ipv6", netip.MustParseAddr("::1")},
}

func listenTCP(t testing.TB, addr netip.AddrPort) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatalf("listen %v: %v", addr, err)
	}
	return ln
}

func addrOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	panic("unexpected address type")
}

// tcpServer accepts connections, reads each until it ends, and reports how
// it ended (nil for a FIN, the error for a RST). With http set it answers
// every request on a connection with 200. It can go down (its listener
// closes, so connects are refused) and come back on the same port.
type tcpServer struct {
	t        testing.TB
	http     bool
	tls      *tls.Config // with http: serve HTTPS
	addr     netip.AddrPort
	mu       sync.Mutex
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	remotes  chan netip.AddrPort
	ends     chan error
}

func startTCPServer(t testing.TB, host netip.Addr) *tcpServer {
	t.Helper()
	s := &tcpServer{t: t, addr: netip.AddrPortFrom(host, 0), remotes: make(chan netip.AddrPort, 1024), ends: make(chan error, 1024)}
	s.up()
	t.Cleanup(s.down)
	return s
}

func (s *tcpServer) up() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return
	}
	s.ln = listenTCP(s.t, s.addr)
	s.addr = addrOf(s.ln.Addr())
	ln := s.ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			select {
			case s.remotes <- addrOf(conn.RemoteAddr()):
			default:
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				if s.tls != nil {
					conn = tls.Server(conn, s.tls)
				}
				br := bufio.NewReader(conn)
				var b [64]byte
				for {
					_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					var err error
					if s.http {
						var req *http.Request
						if req, err = http.ReadRequest(br); err == nil {
							_, _ = io.Copy(io.Discard, req.Body)
							_, err = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						}
					} else {
						_, err = br.Read(b[:])
					}
					if err != nil {
						if errors.Is(err, net.ErrClosed) {
							return
						}
						select {
						case s.ends <- endOf(err):
						default:
						}
						return
					}
				}
			}()
		}
	}()
}

func endOf(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *tcpServer) down() {
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	s.wg.Wait()
}

// fullBacklog returns the address of a TCP listener whose accept queue is
// full and never drained: the kernel drops further SYNs, so a connect to it
// neither succeeds nor is refused, it times out. This is how an overloaded
// or wedged backend looks to a TCP check.
func fullBacklog(t testing.TB, host netip.Addr) netip.AddrPort {
	t.Helper()
	addr, closeAll, err := listenFull(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeAll)
	return addr
}

// listenFull opens the listener fullBacklog describes (also used by the
// benchmarks' server process); closeAll closes it and its queued
// connections.
func listenFull(host netip.Addr) (addr netip.AddrPort, closeAll func(), err error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
	if err != nil {
		return addr, nil, err
	}
	closers := []io.Closer{ln}
	closeAll = func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}
	// Shrink the backlog to one connection.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		closeAll()
		return addr, nil, err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		closeAll()
		return addr, nil, errors.Join(err, lerr)
	}
	addr = addrOf(ln.Addr())
	// Fill the queue; once a connect is not answered the queue is full.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			return addr, closeAll, nil
		}
		closers = append(closers, c)
	}
	closeAll()
	return addr, nil, errors.New("could not fill the accept queue")
}

// httpServer serves HTTP or HTTPS on loopback. Its status, slowness and
// liveness can be changed while it runs, and it counts the connections it
// has accepted and that are open.
type httpServer struct {
	t      testing.TB
	addr   netip.AddrPort
	tls    *tls.Config
	status atomic.Int64
	slow   atomic.Bool
	hints  atomic.Bool   // send 103 Early Hints before the final response
	idle   time.Duration // the server's keep-alive timeout; 0 for none
	// last request seen
	mu       sync.Mutex
	host     string
	method   string
	uri      string
	ua       string
	probe    string // the X-Probe header
	sni      string
	srv      *http.Server
	ln       net.Listener
	served   chan struct{}
	conns    atomic.Int64 // accepted so far
	open     atomic.Int64 // open now
	requests atomic.Int64
}

func startHTTPServer(t testing.TB, host netip.Addr, useTLS bool) *httpServer {
	t.Helper()
	s := &httpServer{t: t, addr: netip.AddrPortFrom(host, 0)}
	s.status.Store(http.StatusOK)
	if useTLS {
		s.tls = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	}
	s.up()
	t.Cleanup(s.down)
	return s
}

func (s *httpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	s.host, s.method, s.uri, s.ua = r.Host, r.Method, r.RequestURI, r.UserAgent()
	s.probe = r.Header.Get("X-Probe")
	if r.TLS != nil {
		s.sni = r.TLS.ServerName
	}
	s.mu.Unlock()
	if s.slow.Load() {
		<-r.Context().Done() // until the client gives up
		return
	}
	if s.hints.Load() {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
	}
	w.WriteHeader(int(s.status.Load()))
	_, _ = w.Write([]byte("hello\n"))
}

func (s *httpServer) lastProbe() (uri, probe string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uri, s.probe
}

func (s *httpServer) last() (host, method, uri, ua, sni string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.host, s.method, s.uri, s.ua, s.sni
}

func (s *httpServer) up() {
	s.t.Helper()
	if s.srv != nil {
		return
	}
	ln := listenTCP(s.t, s.addr)
	s.addr = addrOf(ln.Addr())
	srv := &http.Server{
		Handler:     s,
		IdleTimeout: s.idle,
		ErrorLog:    log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
				s.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.open.Add(-1)
			}
		},
	}
	if s.tls != nil {
		srv.TLSConfig = s.tls
		ln = tls.NewListener(ln, s.tls)
	}
	s.srv, s.ln, s.served = srv, ln, make(chan struct{})
	go func() {
		defer close(s.served)
		_ = srv.Serve(ln)
	}()
}

func (s *httpServer) down() {
	if s.srv == nil {
		return
	}
	_ = s.srv.Close()
	_ = s.ln.Close() // in case Serve has not started yet
	<-s.served
	s.srv = nil
}

// testCert returns a self-signed certificate for 127.0.0.1, ::1 and
// backend.example.
func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lbkit health test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"backend.example"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (s *httpServer) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.tls.Certificates[0].Leaf)
	return pool
}

// udpServer answers datagrams on loopback: it echoes them, answers
// something else, or stays silent.
type udpServer struct {
	addr netip.AddrPort
	mode atomic.Int32
	got  atomic.Int64
}

const (
	udpEcho int32 = iota
	udpWrong
	udpSilent
)

func startUDPServer(t testing.TB, host netip.Addr) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		t.Fatal(err)
	}
	s := &udpServer{addr: addrOf(conn.LocalAddr())}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.got.Add(1)
			switch s.mode.Load() {
			case udpEcho:
				_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
			case udpWrong:
				_, _ = conn.WriteToUDPAddrPort([]byte("nope"), from)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

// closedUDPPort returns an address where nothing listens for UDP, so the
// kernel answers with an ICMP port unreachable.
func closedUDPPort(t testing.TB, host netip.Addr) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		t.Fatal(err)
	}
	addr := addrOf(conn.LocalAddr())
	conn.Close()
	return addr
}

// closedTCPPort returns an address where nothing listens for TCP.
func closedTCPPort(t testing.TB, host netip.Addr) netip.AddrPort {
	t.Helper()
	ln := listenTCP(t, netip.AddrPortFrom(host, 0))
	addr := addrOf(ln.Addr())
	ln.Close()
	return addr
}

func netipAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func netipA(s string) netip.Addr      { return netip.MustParseAddr(s) }
