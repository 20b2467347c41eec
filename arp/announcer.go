package arp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
)

// GratuitousForm selects how an Announcer announces an IPv4 VIP.
type GratuitousForm uint8

// Gratuitous ARP forms.
const (
	// GratuitousRequest sends the RFC 5227 ARP Announcement: a broadcast
	// request whose sender and target IP are the VIP. The default.
	GratuitousRequest GratuitousForm = iota
	// GratuitousReply sends a broadcast reply whose sender and target IP
	// are the VIP and whose sender and target MAC are the interface's (the
	// form `arping -U -P` and some older stacks use).
	GratuitousReply
	// GratuitousBoth sends the request and then the reply, for LANs with
	// devices that heed only one of them.
	GratuitousBoth
)

// String returns "request", "reply" or "both".
func (g GratuitousForm) String() string {
	switch g {
	case GratuitousRequest:
		return "request"
	case GratuitousReply:
		return "reply"
	case GratuitousBoth:
		return "both"
	}
	return fmt.Sprintf("GratuitousForm(%d)", uint8(g))
}

// Defaults of Config.
const (
	DefaultAnnounceCount    = 3
	DefaultAnnounceInterval = 250 * time.Millisecond
	// MinReannounceInterval is the shortest accepted ReannounceInterval.
	MinReannounceInterval = 100 * time.Millisecond
	// MaxAnnounceCount is the largest accepted AnnounceCount.
	MaxAnnounceCount = 100
)

// Config tunes an Announcer. The zero Config is valid: a burst of 3
// announcements 250 ms apart on acquire, no periodic re-announcement, the
// request form of gratuitous ARP, and no logging.
type Config struct {
	// AnnounceCount is how many announcements (gratuitous ARP for IPv4,
	// unsolicited neighbour advertisements for IPv6) are sent per VIP on
	// acquire, the first at once. 0 means DefaultAnnounceCount.
	AnnounceCount int
	// AnnounceInterval is the spacing of the burst. 0 means
	// DefaultAnnounceInterval.
	AnnounceInterval time.Duration
	// ReannounceInterval, when not 0, makes the Announcer announce every
	// VIP it owns again at this interval after the burst, which repairs
	// neighbour caches and switch tables that forgot or were overwritten.
	ReannounceInterval time.Duration
	// GratuitousARP selects the form of gratuitous ARP.
	GratuitousARP GratuitousForm
	// Logger receives debug records for every answer and warnings for
	// conflicts and write failures. nil discards them.
	Logger *slog.Logger
}

// Validate reports a Config the Announcer cannot use.
func (c *Config) Validate() error {
	switch {
	case c.AnnounceCount < 0 || c.AnnounceCount > MaxAnnounceCount:
		return invalid("Config.AnnounceCount", fmt.Sprintf("%d is not 0-%d", c.AnnounceCount, MaxAnnounceCount))
	case c.AnnounceInterval < 0:
		return invalid("Config.AnnounceInterval", fmt.Sprintf("%v is negative", c.AnnounceInterval))
	case c.ReannounceInterval < 0 || (c.ReannounceInterval > 0 && c.ReannounceInterval < MinReannounceInterval):
		return invalid("Config.ReannounceInterval", fmt.Sprintf("%v is neither 0 nor at least %v", c.ReannounceInterval, MinReannounceInterval))
	case c.GratuitousARP > GratuitousBoth:
		return invalid("Config.GratuitousARP", c.GratuitousARP.String()+" is not a form")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.AnnounceCount == 0 {
		c.AnnounceCount = DefaultAnnounceCount
	}
	if c.AnnounceInterval == 0 {
		c.AnnounceInterval = DefaultAnnounceInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrNotOwned is returned by Announce for a VIP the Announcer does not own.
var ErrNotOwned = errors.New("arp: VIP not owned")

// Stats counts what an Announcer saw and did since it was created.
type Stats struct {
	// Received counts frames read from the connection (with Dial, only
	// those the socket filter let through).
	Received uint64
	// Malformed counts frames that failed to decode, or neighbour
	// solicitations that failed the RFC 4861 receive checks.
	Malformed uint64
	// Ignored counts well-formed frames that needed no answer: not a
	// question, not for an owned VIP, or for another VLAN.
	Ignored uint64
	// ARPReplies and NeighborAdvertisements count answers sent.
	ARPReplies             uint64
	NeighborAdvertisements uint64
	// Announcements counts gratuitous ARP and unsolicited neighbour
	// advertisement frames sent.
	Announcements uint64
	// Conflicts counts ARP packets from another MAC address whose sender
	// IP is a VIP this Announcer owns: another node claims it.
	Conflicts uint64
	// WriteErrors counts frames the connection failed to send.
	WriteErrors uint64
}

type counters struct {
	received, malformed, ignored, arpReplies, advertisements, announcements, conflicts, writeErrors atomic.Uint64
}

// vipState is the announcement schedule of one owned VIP.
type vipState struct {
	left int       // burst announcements still to send after the first
	next time.Time // when the scheduler sends the next one; zero for never
}

// Announcer owns a set of VIPs on one Ethernet interface: it announces each
// on acquire, optionally again at intervals, and answers ARP requests and
// neighbour solicitations for exactly the VIPs it owns, on exactly its
// interface. It runs two goroutines (a reader and a scheduler) from New until
// Close. Its methods are safe for concurrent use.
type Announcer struct {
	ifi  net.Interface
	mac  net.HardwareAddr
	conn Conn
	mc   MulticastConn // nil when conn cannot join groups
	cfg  Config
	log  *slog.Logger

	// mu guards owned and closed. Every frame about a VIP is sent while
	// holding mu for reading and after checking that the VIP is owned, so
	// that once Release (which takes mu for writing) returns, nothing more
	// is sent for the released VIPs.
	mu     sync.RWMutex
	owned  map[netip.Addr]*vipState
	closed bool

	wake     chan struct{} // nudges the scheduler after Acquire
	stop     chan struct{} // closed by Close or a fatal read error
	stopOnce sync.Once
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error // why the announcer stopped

	stats counters
}

// New returns an Announcer for ifi that reads and writes frames on conn,
// which it owns from now on (Close closes it). ifi supplies the MAC address
// the Announcer answers with and, for Dial, the interface index. Use New with
// a FakeConn to test without root, or with a packet socket you opened
// yourself.
func New(ifi *net.Interface, conn Conn, cfg Config) (*Announcer, error) {
	if err := validateIface(ifi); err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, invalid("conn", "nil Conn")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Announcer{
		ifi:   *ifi,
		mac:   slices.Clone(ifi.HardwareAddr),
		conn:  conn,
		cfg:   cfg,
		log:   cfg.Logger.With("interface", ifi.Name),
		owned: map[netip.Addr]*vipState{},
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	a.ifi.HardwareAddr = a.mac
	a.mc, _ = conn.(MulticastConn)
	a.wg.Add(2)
	go a.readLoop()
	go a.scheduleLoop()
	return a, nil
}

func validateIface(ifi *net.Interface) error {
	if ifi == nil {
		return invalid("ifi", "nil interface")
	}
	if len(ifi.HardwareAddr) != 6 {
		return invalid("ifi.HardwareAddr", fmt.Sprintf("interface %q has hardware address %q, not a 6-byte Ethernet MAC", ifi.Name, ifi.HardwareAddr))
	}
	return nil
}

// Interface returns the interface the Announcer serves.
func (a *Announcer) Interface() net.Interface {
	ifi := a.ifi
	ifi.HardwareAddr = slices.Clone(a.mac)
	return ifi
}

// Acquire makes the Announcer own vips: it joins the solicited-node
// multicast group of each IPv6 VIP, starts answering for them, sends the
// first announcement of each at once and schedules the rest of the burst.
// VIPs it already owns are left as they are (use Announce to announce them
// again). Acquire is all or nothing: when a VIP is invalid, ctx ends, or a
// group join or the first announcement fails, it returns the error and owns
// none of the VIPs this call added (announcements already sent cannot be
// taken back).
func (a *Announcer) Acquire(ctx context.Context, vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	a.mu.Lock()
	if err := a.usable(); err != nil {
		a.mu.Unlock()
		return err
	}
	var added []netip.Addr
	for _, ip := range vips {
		if _, ok := a.owned[ip]; ok {
			continue
		}
		if err := a.join(ip); err != nil {
			a.dropLocked(added)
			a.mu.Unlock()
			return err
		}
		st := &vipState{left: a.cfg.AnnounceCount - 1}
		st.next = a.nextAfter(st, now)
		a.owned[ip] = st
		added = append(added, ip)
	}
	a.mu.Unlock()
	a.nudge()
	for _, ip := range added {
		err := ctx.Err()
		if err == nil {
			_, err = a.announceOne(ip)
		}
		if err != nil {
			a.mu.Lock()
			a.dropLocked(added)
			a.mu.Unlock()
			return fmt.Errorf("arp: acquire %s on %s: %w", ip, a.ifi.Name, err)
		}
	}
	if len(added) > 0 {
		a.log.Debug("acquired", "vips", added)
	}
	return nil
}

// Release stops the Announcer owning vips: when it returns, no answer and no
// announcement for them is sent any more, and their solicited-node groups
// are left. VIPs it does not own are ignored. It fails only for invalid
// input, in which case nothing is released.
func (a *Announcer) Release(vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.dropLocked(vips)
	a.mu.Unlock()
	a.log.Debug("released", "vips", vips)
	return nil
}

// Announce sends one announcement for each of vips now, outside the burst
// and re-announcement schedule. Every VIP must be owned (ErrNotOwned
// otherwise, and nothing is sent).
func (a *Announcer) Announce(ctx context.Context, vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	a.mu.RLock()
	err = a.usable()
	for _, ip := range vips {
		if _, ok := a.owned[ip]; !ok && err == nil {
			err = fmt.Errorf("%w: %s on %s", ErrNotOwned, ip, a.ifi.Name)
		}
	}
	a.mu.RUnlock()
	if err != nil {
		return err
	}
	for _, ip := range vips {
		if err := ctx.Err(); err != nil {
			return err
		}
		sent, err := a.announceOne(ip)
		if err != nil {
			return fmt.Errorf("arp: announce %s on %s: %w", ip, a.ifi.Name, err)
		}
		if !sent {
			return fmt.Errorf("%w: %s on %s (released meanwhile)", ErrNotOwned, ip, a.ifi.Name)
		}
	}
	return nil
}

// Owned returns the VIPs the Announcer owns, sorted.
func (a *Announcer) Owned() []netip.Addr {
	a.mu.RLock()
	out := make([]netip.Addr, 0, len(a.owned))
	for ip := range a.owned {
		out = append(out, ip)
	}
	a.mu.RUnlock()
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Stats returns a snapshot of the Announcer's counters.
func (a *Announcer) Stats() Stats {
	s := &a.stats
	return Stats{
		Received:               s.received.Load(),
		Malformed:              s.malformed.Load(),
		Ignored:                s.ignored.Load(),
		ARPReplies:             s.arpReplies.Load(),
		NeighborAdvertisements: s.advertisements.Load(),
		Announcements:          s.announcements.Load(),
		Conflicts:              s.conflicts.Load(),
		WriteErrors:            s.writeErrors.Load(),
	}
}

// Done returns a channel that is closed when the Announcer stops: after
// Close, or when reading from its connection failed for good (see Err).
func (a *Announcer) Done() <-chan struct{} { return a.stop }

// Err returns nil while the Announcer runs, the read error that stopped it,
// or ErrClosed after Close.
func (a *Announcer) Err() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.err
}

// Close releases every VIP, stops the goroutines, waits for them and closes
// the connection, which also leaves every multicast group. It is idempotent.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.owned = map[netip.Addr]*vipState{}
	a.mu.Unlock()
	a.halt(ErrClosed)
	err := a.conn.Close()
	a.wg.Wait()
	if err != nil {
		return fmt.Errorf("arp: close %s: %w", a.ifi.Name, err)
	}
	return nil
}

// halt records why the announcer stops (the first reason wins) and stops
// the scheduler.
func (a *Announcer) halt(cause error) {
	a.errMu.Lock()
	if a.err == nil {
		a.err = cause
	}
	a.errMu.Unlock()
	a.stopOnce.Do(func() { close(a.stop) })
}

// usable reports why the announcer cannot take work; a.mu must be held.
func (a *Announcer) usable() error {
	if a.closed {
		return ErrClosed
	}
	if err := a.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return nil
}

func (a *Announcer) nudge() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// join joins the solicited-node multicast group of an IPv6 VIP.
func (a *Announcer) join(ip netip.Addr) error {
	if !ip.Is6() || a.mc == nil {
		return nil
	}
	if err := a.mc.JoinGroup(IPv6MulticastMAC(SolicitedNodeMulticast(ip))); err != nil {
		return fmt.Errorf("arp: join solicited-node group of %s on %s: %w", ip, a.ifi.Name, err)
	}
	return nil
}

// dropLocked stops owning vips; a.mu must be held for writing.
func (a *Announcer) dropLocked(vips []netip.Addr) {
	for _, ip := range vips {
		if _, ok := a.owned[ip]; !ok {
			continue
		}
		delete(a.owned, ip)
		if ip.Is6() && a.mc != nil {
			if err := a.mc.LeaveGroup(IPv6MulticastMAC(SolicitedNodeMulticast(ip))); err != nil {
				a.log.Warn("leave solicited-node group", "vip", ip, "err", err)
			}
		}
	}
}

// nextAfter returns when the scheduler should next announce a VIP in state
// st, counting from now.
func (a *Announcer) nextAfter(st *vipState, now time.Time) time.Time {
	switch {
	case st.left > 0:
		return now.Add(a.cfg.AnnounceInterval)
	case a.cfg.ReannounceInterval > 0:
		return now.Add(a.cfg.ReannounceInterval)
	}
	return time.Time{}
}

func normalizeVIPs(vips []netip.Addr) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(vips))
	for i, ip := range vips {
		field := fmt.Sprintf("vips[%d]", i)
		switch {
		case !ip.IsValid():
			return nil, invalid(field, "the zero netip.Addr")
		case ip.Is4In6():
			return nil, invalid(field, fmt.Sprintf("%v is an IPv4-mapped IPv6 address, whose family is ambiguous; pass %v", ip, ip.Unmap()))
		case ip.Zone() != "":
			return nil, invalid(field, fmt.Sprintf("%v has a zone", ip))
		case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLoopback(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, invalid(field, fmt.Sprintf("%v is not a unicast address", ip))
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
}

// scheduleLoop sends the rest of each burst and the periodic
// re-announcements.
func (a *Announcer) scheduleLoop() {
	defer a.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := a.collectDue(time.Now())
		for _, ip := range due {
			if _, err := a.announceOne(ip); err != nil {
				a.log.Warn("announce", "vip", ip, "err", err)
			}
		}
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-a.stop:
			return
		case <-a.wake:
		case <-fire:
		}
		timer.Stop()
	}
}

// collectDue returns the VIPs whose announcement is due at now, advancing
// their schedules, and the earliest time one is due next.
func (a *Announcer) collectDue(now time.Time) (due []netip.Addr, next time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, st := range a.owned {
		if st.next.IsZero() {
			continue
		}
		if !now.Before(st.next) {
			due = append(due, ip)
			if st.left > 0 {
				st.left--
			}
			st.next = a.nextAfter(st, now)
		}
		if !st.next.IsZero() && (next.IsZero() || st.next.Before(next)) {
			next = st.next
		}
	}
	return due, next
}

// announceOne sends one announcement of ip (one or two gratuitous ARP
// frames, or one unsolicited advertisement) if ip is still owned, and
// reports whether it was.
func (a *Announcer) announceOne(ip netip.Addr) (bool, error) {
	var frames [][]byte
	var err error
	if ip.Is4() {
		var pkts []Packet
		if a.cfg.GratuitousARP != GratuitousReply {
			pkts = append(pkts, GratuitousARP(a.mac, ip, OperationRequest))
		}
		if a.cfg.GratuitousARP != GratuitousRequest {
			pkts = append(pkts, GratuitousARP(a.mac, ip, OperationReply))
		}
		for i := range pkts {
			var f []byte
			if f, err = AppendARPFrame(nil, broadcastMAC, a.mac, &pkts[i]); err != nil {
				return false, err
			}
			frames = append(frames, f)
		}
	} else {
		na := UnsolicitedAdvertisement(a.mac, ip)
		f, err := AppendNeighborFrame(nil, IPv6MulticastMAC(na.Destination), a.mac, &na)
		if err != nil {
			return false, err
		}
		frames = append(frames, f)
	}
	dst := frames[0][:6]
	return a.sendIfOwned(ip, dst, &a.stats.announcements, frames...)
}

// sendIfOwned writes frames to dst while holding a.mu for reading, if ip is
// owned. It reports whether ip was owned.
func (a *Announcer) sendIfOwned(ip netip.Addr, dst net.HardwareAddr, counter *atomic.Uint64, frames ...[]byte) (bool, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, ok := a.owned[ip]; !ok {
		return false, nil
	}
	to := &packet.Addr{HardwareAddr: dst}
	for _, f := range frames {
		// Counted before the write, so that whoever sees the frame sees
		// the count; taken back if the write fails.
		counter.Add(1)
		if _, err := a.conn.WriteTo(f, to); err != nil {
			counter.Add(^uint64(0))
			a.stats.writeErrors.Add(1)
			return true, err
		}
	}
	return true, nil
}

// readBufferLen holds any Ethernet frame up to a 9000-byte MTU.
const readBufferLen = 9216

// readLoop reads frames and answers them until the connection is closed or
// fails.
func (a *Announcer) readLoop() {
	defer a.wg.Done()
	buf := make([]byte, readBufferLen)
	for {
		n, _, err := a.conn.ReadFrom(buf)
		if n > 0 && err == nil {
			a.handle(buf[:n])
		}
		if err == nil {
			continue
		}
		select {
		case <-a.stop:
			return
		default:
		}
		if errors.Is(err, syscall.ENETDOWN) {
			// The kernel reports an interface going down once per socket
			// and keeps the socket; answering resumes when it comes up.
			a.log.Warn("interface down", "err", err)
			select {
			case <-a.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		a.log.Error("read failed, announcer stops", "err", err)
		a.halt(fmt.Errorf("arp: read on %s: %w", a.ifi.Name, err))
		return
	}
}

// handle answers one received frame if it asks for an owned VIP.
func (a *Announcer) handle(b []byte) {
	a.stats.received.Add(1)
	f, err := ParseFrame(b)
	if err != nil {
		a.malformed(err)
		return
	}
	switch {
	case f.VLANID() != 0:
		// A tagged frame belongs to a VLAN sub-interface, not to ours.
		a.stats.ignored.Add(1)
	case equalMAC(f.Source, a.mac):
		a.stats.ignored.Add(1)
	case f.EtherType == EtherTypeARP:
		a.handleARP(&f)
	case f.EtherType == EtherTypeIPv6:
		a.handleNDP(&f)
	default:
		a.stats.ignored.Add(1)
	}
}

func (a *Announcer) malformed(err error) {
	if errors.Is(err, ErrUnsupported) {
		a.stats.ignored.Add(1)
		return
	}
	a.stats.malformed.Add(1)
	a.log.Debug("malformed frame", "err", err)
}

func (a *Announcer) handleARP(f *Frame) {
	p, err := ParsePacket(f.Payload)
	if err != nil {
		a.malformed(err)
		return
	}
	if !equalMAC(f.Destination, broadcastMAC) && !equalMAC(f.Destination, a.mac) {
		a.stats.ignored.Add(1)
		return
	}
	if !equalMAC(p.SenderHardwareAddr, a.mac) && a.owns(p.SenderIP) {
		a.stats.conflicts.Add(1)
		a.log.Warn("another host claims an owned VIP", "vip", p.SenderIP, "mac", p.SenderHardwareAddr, "op", p.Operation)
	}
	if p.Operation != OperationRequest || p.IsGratuitous() || equalMAC(p.SenderHardwareAddr, a.mac) {
		a.stats.ignored.Add(1)
		return
	}
	reply := ReplyTo(&p, a.mac)
	dst := p.SenderHardwareAddr
	if isZeroMAC(dst) || equalMAC(dst, broadcastMAC) || dst[0]&1 != 0 {
		dst = f.Source
	}
	frame, err := AppendARPFrame(nil, dst, a.mac, &reply)
	if err != nil {
		a.malformed(err)
		return
	}
	a.answer(p.TargetIP, dst, &a.stats.arpReplies, frame, "arp reply", p.SenderIP)
}

func (a *Announcer) handleNDP(f *Frame) {
	m, err := ParseNeighborMessage(f.Payload)
	if err != nil {
		a.malformed(err)
		return
	}
	if m.Type != TypeNeighborSolicitation {
		a.stats.ignored.Add(1)
		return
	}
	if err := m.CheckReceived(); err != nil {
		a.malformed(err)
		return
	}
	snm := SolicitedNodeMulticast(m.Target)
	if (m.Destination != snm && m.Destination != m.Target) ||
		(!equalMAC(f.Destination, IPv6MulticastMAC(snm)) && !equalMAC(f.Destination, a.mac)) {
		a.stats.ignored.Add(1)
		return
	}
	na := AdvertisementFor(&m, a.mac)
	var dst net.HardwareAddr
	switch {
	case na.Destination.IsMulticast():
		dst = IPv6MulticastMAC(na.Destination)
	case len(m.LinkLayerAddr) == 6:
		dst = m.LinkLayerAddr
	default:
		dst = f.Source
	}
	frame, err := AppendNeighborFrame(nil, dst, a.mac, &na)
	if err != nil {
		a.malformed(err)
		return
	}
	a.answer(m.Target, dst, &a.stats.advertisements, frame, "neighbor advertisement", m.Source)
}

// answer sends a reply about vip if vip is owned, and counts it as ignored
// otherwise.
func (a *Announcer) answer(vip netip.Addr, dst net.HardwareAddr, counter *atomic.Uint64, frame []byte, what string, to netip.Addr) {
	owned, err := a.sendIfOwned(vip, dst, counter, frame)
	switch {
	case !owned:
		a.stats.ignored.Add(1)
	case err != nil:
		a.log.Warn(what, "vip", vip, "to", to, "err", err)
	default:
		a.log.Debug(what, "vip", vip, "to", to, "mac", dst)
	}
}

func (a *Announcer) owns(ip netip.Addr) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.owned[ip]
	return ok
}
