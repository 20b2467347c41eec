package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// maxBody is how much of a response body an HTTP check reads. A longer
// body does not fail the check; the connection is closed instead of being
// drained.
const maxBody = 64 << 10

// userAgent is sent unless HTTP.Header sets User-Agent.
const userAgent = "lbkit-health/1"

// HTTP passes when an HTTP/1.1 request (RFC 9112) to Addr gets a response
// whose status is in Expect. With TLS set the request goes over TLS
// (HTTPS), verified against TLSConfig's roots (the system roots by default)
// unless InsecureSkipVerify is set.
//
// Connections: each HTTP target keeps at most one connection open between
// checks and sends the next check on it (HTTP/1.1 persistent connection),
// because opening a connection per check at 10k targets a second costs 10k
// handshakes a second (for HTTPS, 10k TLS handshakes, which dominate the
// CPU) and leaves a TIME_WAIT socket per check. The idle connection is held
// by the target alone, without a goroutine (unlike net/http's Transport,
// which runs two per connection). A connection is kept only after a
// passing check, so a failing target is always re-checked on a fresh
// connection and a recovery is always proven by a new handshake; it is also
// dropped when the server asks to close, when the body is larger than 64
// KiB, and when the target is removed or updated; the checker closes it with
// a RST, so that it keeps no TIME_WAIT socket. If the server closed the kept
// connection while it was idle, the check is retried once on a new one.
// Set DisableKeepAlive to send "Connection: close" and open a connection per
// check, as HAProxy does, which also proves the listener still accepts.
//
// A kept connection is an open socket, so a checker with 10k HTTP targets
// holds 10k file descriptors between checks: the process's RLIMIT_NOFILE
// must allow that (Go raises the soft limit to the hard limit at start-up;
// systemd's default hard limit is 524288, a shell's may be 4096). With
// DisableKeepAlive only the checks running at once hold one.
type HTTP struct {
	// Addr is the address and port to connect to.
	Addr netip.AddrPort
	// Source, when set, is the local address to connect from.
	Source netip.Addr
	// TLS makes this an HTTPS check.
	TLS bool
	// Method is the request method (default GET).
	Method string
	// Path is the request target in origin form, with an optional query
	// (default "/").
	Path string
	// Host is sent as the Host header and, with TLS, as the server name
	// for SNI and certificate verification (default Addr). It may carry a
	// port.
	Host string
	// Header holds extra request headers. User-Agent defaults to
	// "lbkit-health/1". It may not hold Host (set the Host field), nor
	// Content-Length or Transfer-Encoding (the request has no body).
	Header http.Header
	// Expect is the set of accepted status codes (default 200-399).
	Expect StatusSet
	// InsecureSkipVerify accepts any server certificate (TLS only).
	InsecureSkipVerify bool
	// TLSConfig, when set, is cloned and used for the handshake (TLS only):
	// root CAs, client certificates, versions. ServerName defaults to Host.
	// It is cloned when the target is added or its check changes, and
	// Update compares it by pointer: an Update with the same *tls.Config
	// keeps the connection, so pass a new one to change TLS settings (a
	// config edited in place is not noticed).
	TLSConfig *tls.Config
	// DisableKeepAlive opens a new connection for every check.
	DisableKeepAlive bool
}

func (c HTTP) validate() error {
	if err := validateAddr("Addr", c.Addr, c.Source); err != nil {
		return err
	}
	bad := func(field, reason string) error { return &ValidationError{Field: field, Reason: reason} }
	if c.Method != "" && !isToken(c.Method) {
		return bad("Method", fmt.Sprintf("%q is not an HTTP token", c.Method))
	}
	if c.Path != "" {
		if !strings.HasPrefix(c.Path, "/") || strings.ContainsFunc(c.Path, isCTLOrSpaceOrHash) {
			return bad("Path", fmt.Sprintf("%q is not an origin-form request target", c.Path))
		}
		if _, err := url.ParseRequestURI(c.Path); err != nil {
			return bad("Path", fmt.Sprintf("%q: %v", c.Path, err))
		}
	}
	if c.Host != "" && !validHost(c.Host) {
		return bad("Host", fmt.Sprintf("%q is not a valid host[:port]", c.Host))
	}
	for k, vs := range c.Header {
		if !isToken(k) {
			return bad("Header", fmt.Sprintf("%q is not a valid field name", k))
		}
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Host":
			return bad("Header", "must not hold Host: set the Host field")
		case "Content-Length", "Transfer-Encoding":
			return bad("Header", fmt.Sprintf("must not hold %s: the check sends no body", k))
		}
		for _, v := range vs {
			if strings.ContainsFunc(v, isCTLNotTab) {
				return bad("Header", fmt.Sprintf("value of %s contains a control character", k))
			}
		}
	}
	if err := c.Expect.validate(); err != nil {
		return err
	}
	if !c.TLS && c.InsecureSkipVerify {
		return bad("InsecureSkipVerify", "is set but TLS is not")
	}
	if !c.TLS && c.TLSConfig != nil {
		return bad("TLSConfig", "is set but TLS is not")
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token (method, field name).
func isToken(s string) bool { return s != "" && alnumOr(s, "!#$%&'*+-.^_`|~") }

// alnumOr reports whether every byte of s is an ASCII letter or digit or
// one of extra.
func alnumOr(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || strings.IndexByte(extra, b) >= 0 {
			continue
		}
		return false
	}
	return true
}

// isCTLNotTab matches what RFC 9110 field values may not contain.
func isCTLNotTab(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }

func isCTLOrSpaceOrHash(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }

// validHost accepts a reg-name, IPv4 or bracketed IPv6 host with an
// optional port: the characters RFC 3986 allows there, nothing that could
// end the header line.
func validHost(h string) bool { return alnumOr(h, "-._~:[]%!$&'()*+,;=") }

// serverName returns the host part of a Host header value.
func serverName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.Trim(host, "[]")
}

func (c HTTP) clone() Check {
	c.Header = c.Header.Clone()
	c.Expect = c.Expect.normalize()
	return c
}

func (c HTTP) same(o Check) bool {
	oc, ok := o.(HTTP)
	if !ok || !maps.EqualFunc(c.Header, oc.Header, slices.Equal) || !slices.Equal(c.expect(), oc.expect()) {
		return false
	}
	// Every other field; TestHTTPSameComparesEveryField keeps this list
	// complete.
	return c.Addr == oc.Addr && c.Source == oc.Source && c.TLS == oc.TLS &&
		c.Method == oc.Method && c.Path == oc.Path && c.Host == oc.Host &&
		c.InsecureSkipVerify == oc.InsecureSkipVerify && c.TLSConfig == oc.TLSConfig &&
		c.DisableKeepAlive == oc.DisableKeepAlive
}

// expect is the effective status set.
func (c HTTP) expect() StatusSet {
	if c.Expect == nil {
		return defaultStatusSet
	}
	return c.Expect
}

func (c HTTP) newProber(sh *shared) prober {
	host := c.Host
	if host == "" {
		host = c.Addr.String()
	}
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	path := c.Path
	if path == "" {
		path = "/"
	}
	p := &httpProber{
		sh:        sh,
		addr:      c.Addr.String(),
		d:         newDialer(c.Source, "tcp"),
		req:       &http.Request{Method: method},
		expect:    c.expect(), // a clone, never modified
		keepAlive: !c.DisableKeepAlive,
	}
	p.raw = appendRequest(nil, method, path, host, c.Header, c.DisableKeepAlive)
	if c.TLS {
		conf := &tls.Config{}
		if c.TLSConfig != nil {
			conf = c.TLSConfig.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = serverName(host)
		}
		conf.InsecureSkipVerify = conf.InsecureSkipVerify || c.InsecureSkipVerify
		if conf.NextProtos == nil {
			conf.NextProtos = []string{"http/1.1"}
		}
		if conf.ClientSessionCache == nil {
			// Resumption makes the handshake after a dropped connection
			// cheap.
			conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		p.tls = conf
	}
	return p
}

// appendRequest serializes the request once; every check sends the same
// bytes.
func appendRequest(b []byte, method, path, host string, h http.Header, closeConn bool) []byte {
	b = fmt.Appendf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, host)
	if h.Get("User-Agent") == "" {
		b = fmt.Appendf(b, "User-Agent: %s\r\n", userAgent)
	}
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if closeConn && strings.EqualFold(k, "Connection") {
			continue
		}
		for _, v := range h[k] {
			b = fmt.Appendf(b, "%s: %s\r\n", k, v)
		}
	}
	return append(b, "\r\n"...)
}

type httpProber struct {
	sh        *shared
	addr      string
	d         net.Dialer
	tls       *tls.Config // nil for plain HTTP
	raw       []byte      // the serialized request
	req       *http.Request
	expect    StatusSet
	keepAlive bool
	conn      net.Conn // idle persistent connection, or nil
}

func (p *httpProber) probe(ctx context.Context) error {
	reused := p.conn != nil
	err := p.attempt(ctx)
	if err != nil && reused && ctx.Err() == nil && staleConn(err) {
		// The server closed the idle connection (its keep-alive timeout is
		// shorter than our interval, or it restarted). That says nothing
		// about its health: ask again on a new connection.
		err = p.attempt(ctx)
	}
	return err
}

// staleConn reports whether err is what reusing a connection the peer has
// closed looks like.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

var aLongTimeAgo = time.Unix(1, 0)

func (p *httpProber) attempt(ctx context.Context) error {
	conn := p.conn
	p.conn = nil
	if conn == nil {
		var err error
		if conn, err = p.dial(ctx); err != nil {
			return err
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Cancellation (target removed, checker stopping) unblocks the I/O at
	// once; the deadline alone would only end it at the timeout.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	reusable, err := p.roundTrip(conn)
	if stop() && reusable && err == nil {
		p.conn = conn
		return nil
	}
	abort(conn)
	return err
}

// abort closes conn with a RST (SO_LINGER 0) rather than a FIN, so that the
// checker keeps no TIME_WAIT socket for it: a connection is only closed here
// between responses or after a failure, when nothing in flight matters.
// Without this, stopping a checker with 10k HTTP targets would leave 10k
// TIME_WAIT sockets, and every failed check one more. For TLS no
// close_notify is sent; HTTP/1.1 framing does not rely on it.
func abort(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func (p *httpProber) dial(ctx context.Context) (net.Conn, error) {
	raw, err := p.d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if p.tls == nil {
		return raw, nil
	}
	tc := tls.Client(raw, p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		abort(raw)
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// roundTrip sends the request on conn and judges the response. reusable
// says whether conn is left at a clean message boundary.
func (p *httpProber) roundTrip(conn net.Conn) (reusable bool, err error) {
	if _, err := conn.Write(p.raw); err != nil {
		return false, err
	}
	br := p.sh.reader(conn)
	defer p.sh.putReader(br)
	return readResponse(br, p.req, p.expect, p.keepAlive)
}

// interim reports whether code is that of an interim response, which a
// final one follows.
func interim(code int) bool {
	return code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols
}

// maxInterim bounds the interim (1xx) responses a check reads before the
// final one.
const maxInterim = 8

// readResponse reads the response to one request from br and checks its
// status against expect: interim 1xx responses (RFC 9110, section 15.2,
// such as 100 Continue and 103 Early Hints) are skipped, except 101
// Switching Protocols, which is final and leaves the connection unusable
// for HTTP. reusable reports whether the whole response was consumed and
// the server allows another request on the connection.
func readResponse(br *bufio.Reader, req *http.Request, expect StatusSet, keepAlive bool) (reusable bool, err error) {
	var resp *http.Response
	for n := 0; ; n++ {
		if resp, err = http.ReadResponse(br, req); err != nil {
			return false, err
		}
		if !interim(resp.StatusCode) {
			break
		}
		if n == maxInterim {
			return false, fmt.Errorf("more than %d interim (1xx) responses", maxInterim)
		}
	}
	n, err := io.CopyN(io.Discard, resp.Body, maxBody+1)
	_ = resp.Body.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading body: %w", err)
	}
	if !expect.Contains(resp.StatusCode) {
		return false, &StatusError{Code: resp.StatusCode, Expect: expect}
	}
	return keepAlive && n <= maxBody && !resp.Close && br.Buffered() == 0 &&
		resp.StatusCode != http.StatusSwitchingProtocols, nil
}

func (p *httpProber) close() {
	if p.conn != nil {
		abort(p.conn)
		p.conn = nil
	}
}

func (sh *shared) reader(r io.Reader) *bufio.Reader {
	if br, ok := sh.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReader(r)
}

func (sh *shared) putReader(br *bufio.Reader) {
	br.Reset(nil)
	sh.readers.Put(br)
}
