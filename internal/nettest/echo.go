package nettest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Reply is what an echo backend answers: its host name and the source
// address the connection or datagram had when it reached the backend (after
// any NAT on the way), which tells a test whether it was masqueraded.
type Reply struct {
	Backend string
	Source  netip.AddrPort
}

// ParseReply decodes a reply line "<backend> <source addr:port>".
func ParseReply(line string) (Reply, error) {
	name, src, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || name == "" {
		return Reply{}, fmt.Errorf("nettest: malformed echo reply %q", line)
	}
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return Reply{}, fmt.Errorf("nettest: malformed echo reply %q: %w", line, err)
	}
	return Reply{Backend: name, Source: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func formatReply(name string, from net.Addr) string {
	ap := addrPortOf(from)
	return name + " " + netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String() + "\n"
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// StartEcho starts a TCP and a UDP echo server on port, on every address of
// the host (IPv4 and IPv6). The TCP server writes one Reply line to each
// connection and closes it; the UDP server answers each datagram with one
// Reply line, sent from the address the datagram was sent to (a VIP on
// the loopback interface, say), as a client expects. Both stop at the lab's
// Close.
func (h *Host) StartEcho(port uint16) error {
	var ln net.Listener
	var pc4, pc6 net.PacketConn
	err := h.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port)); err != nil {
			return err
		}
		// One socket per family, so that each can report the destination
		// address of a datagram (IP_PKTINFO / IPV6_RECVPKTINFO).
		if pc4, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
			ln.Close()
			return err
		}
		if pc6, err = net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", port)); err != nil {
			ln.Close()
			pc4.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nettest: host %s: echo on %d: %w", h.name, port, err)
	}
	p4, p6 := ipv4.NewPacketConn(pc4), ipv6.NewPacketConn(pc6)
	if err := p4.SetControlMessage(ipv4.FlagDst, true); err != nil {
		ln.Close()
		pc4.Close()
		pc6.Close()
		return fmt.Errorf("nettest: host %s: echo: IP_PKTINFO: %w", h.name, err)
	}
	if err := p6.SetControlMessage(ipv6.FlagDst, true); err != nil {
		ln.Close()
		pc4.Close()
		pc6.Close()
		return fmt.Errorf("nettest: host %s: echo: IPV6_RECVPKTINFO: %w", h.name, err)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, formatReply(h.name, c.RemoteAddr()))
			c.Close()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			_, cm, from, err := p4.ReadFrom(buf)
			if err != nil {
				return
			}
			var reply *ipv4.ControlMessage
			if cm != nil {
				reply = &ipv4.ControlMessage{Src: cm.Dst}
			}
			_, _ = p4.WriteTo([]byte(formatReply(h.name, from)), reply, from)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			_, cm, from, err := p6.ReadFrom(buf)
			if err != nil {
				return
			}
			var reply *ipv6.ControlMessage
			if cm != nil {
				reply = &ipv6.ControlMessage{Src: cm.Dst}
			}
			_, _ = p6.WriteTo([]byte(formatReply(h.name, from)), reply, from)
		}
	}()
	h.lab.onClose(func() error {
		ln.Close()
		pc4.Close()
		pc6.Close()
		wg.Wait()
		return nil
	})
	return nil
}

// StartHTTP starts an HTTP server on port, on every address of the host,
// that answers every request with a Reply line as body and the host's name
// in the X-Backend header. It stops at the lab's Close.
func (h *Host) StartHTTP(port uint16) error {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
		return err
	})
	if err != nil {
		return fmt.Errorf("nettest: host %s: http on %d: %w", h.name, port, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ap, _ := netip.ParseAddrPort(r.RemoteAddr)
			w.Header().Set("X-Backend", h.name)
			_, _ = io.WriteString(w, h.name+" "+netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()+"\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	h.lab.onClose(func() error {
		srv.Close()
		<-done
		return nil
	})
	return nil
}

// Probe says how a client host reaches a service.
type Probe struct {
	// Network is "tcp" (the default) or "udp".
	Network string
	// To is the address to reach.
	To netip.AddrPort
	// From optionally binds the client socket to one of the host's
	// addresses, so that one host can act as several clients.
	From netip.Addr
	// N is the number of connections (or datagrams, each from a new
	// socket) that Count makes; 0 means 1.
	N int
	// Timeout bounds each attempt; 0 means 2 s for TCP and 1 s for UDP.
	Timeout time.Duration
}

func (p Probe) network() string {
	if p.Network == "" {
		return "tcp"
	}
	return p.Network
}

func (p Probe) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	if p.network() == "udp" {
		return time.Second
	}
	return 2 * time.Second
}

// Ask makes one connection (or sends one datagram) from the host as p
// describes and returns the echo backend's reply.
func (h *Host) Ask(ctx context.Context, p Probe) (Reply, error) {
	var r Reply
	err := h.Do(func() error {
		var err error
		r, err = ask(ctx, p)
		return err
	})
	return r, err
}

func ask(ctx context.Context, p Probe) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	d := net.Dialer{}
	if p.From.IsValid() {
		switch p.network() {
		case "udp":
			d.LocalAddr = &net.UDPAddr{IP: p.From.AsSlice()}
		default:
			d.LocalAddr = &net.TCPAddr{IP: p.From.AsSlice()}
		}
	}
	c, err := d.DialContext(ctx, p.network(), p.To.String())
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if p.network() == "udp" {
		if _, err := c.Write([]byte("?")); err != nil {
			return Reply{}, err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return Reply{}, err
		}
		return ParseReply(string(buf[:n]))
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	return ParseReply(line)
}

// Counts tallies the answers of Count.
type Counts struct {
	// Backends counts replies per backend name.
	Backends map[string]int
	// Sources counts, per backend, the source addresses it saw.
	Sources map[string]map[netip.Addr]int
	// Failures counts attempts that got no reply; Errors keeps the first
	// few of their errors.
	Failures int
	Errors   []error
}

// Total returns the number of replies.
func (c Counts) Total() int {
	n := 0
	for _, v := range c.Backends {
		n += v
	}
	return n
}

// Count makes p.N connections (or datagrams from new sockets) one after the
// other from the host and counts the replies per backend. It returns an
// error only when it could not run at all or ctx ended; failed attempts are
// counted in Counts.Failures.
func (h *Host) Count(ctx context.Context, p Probe) (Counts, error) {
	n := p.N
	if n <= 0 {
		n = 1
	}
	c := Counts{Backends: map[string]int{}, Sources: map[string]map[netip.Addr]int{}}
	err := h.Do(func() error {
		for range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := ask(ctx, p)
			if err != nil {
				c.Failures++
				if len(c.Errors) < 5 {
					c.Errors = append(c.Errors, err)
				}
				continue
			}
			c.Backends[r.Backend]++
			if c.Sources[r.Backend] == nil {
				c.Sources[r.Backend] = map[netip.Addr]int{}
			}
			c.Sources[r.Backend][r.Source.Addr()]++
		}
		return nil
	})
	return c, err
}

// DialContext dials from inside the host's namespace. It fits
// http.Transport.DialContext and similar hooks.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections start in the host's
// namespace. Keep-alives are off, so that every request is a new connection
// and therefore a new load-balancing decision.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: h.DialContext, DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
}
