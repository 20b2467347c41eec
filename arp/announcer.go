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
//
// They are deliberately faster than the protocols' own intervals, because a
// failover wants the LAN to move within a second and a lost first frame
// should be repeated within a fraction of it: RFC 5227 section 2.3 sends
// ANNOUNCE_NUM (2) ARP Announcements ANNOUNCE_INTERVAL (2 s) apart, and RFC
// 4861 section 7.2.6 allows up to MAX_NEIGHBOR_ADVERTISEMENT (3)
// unsolicited advertisements that MUST be at least RetransTimer (1 s) apart.
// To follow the RFCs to the letter, set AnnounceCount and AnnounceInterval
// to 2 and 2 s (IPv4) or 3 and 1 s (IPv6).
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
	// acquire, the first at once, and again each time the interface comes
	// back up. A send that fails is retried AnnounceInterval later and does
	// not count. 0 means DefaultAnnounceCount (see the defaults for how they
	// compare with RFC 5227 and RFC 4861).
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

// ErrNotOwned is returned by Announce for a VIP the Announcer does not own,
// and by Acquire when a Release running at the same time took one of its
// VIPs back before Acquire returned.
var ErrNotOwned = errors.New("arp: VIP not owned")

// Stats counts what an Announcer saw and did since it was created.
type Stats struct {
	// Received counts frames read from the connection (with Dial, only
	// those the socket filter let through).
	Received uint64
	// Malformed counts frames that failed to decode, or neighbour
	// discovery messages that failed the RFC 4861 receive checks.
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
	// Conflicts counts ARP packets whose sender IP, and neighbour
	// advertisements whose target, is a VIP this Announcer owns while
	// their link-layer address is another's: another node claims the VIP.
	Conflicts uint64
	// WriteErrors counts frames the connection failed to send.
	WriteErrors uint64
}

type counters struct {
	received, malformed, ignored, arpReplies, advertisements, announcements, conflicts, writeErrors atomic.Uint64
}

// vipState is the announcement schedule of one owned VIP.
type vipState struct {
	// left is how many announcements the current burst still owes.
	left int
	// next is when the scheduler sends the next one; zero for never.
	next time.Time
	// sending is set while an announcement is being sent (by Acquire or by
	// the scheduler), which then sets next.
	sending bool
}

// due is a VIP whose announcement is being sent, with the state it was
// sent for.
type due struct {
	ip netip.Addr
	st *vipState
}

// reader is the receiving half of a connection. The connection Dial opens
// has two, one socket per protocol.
type reader interface {
	ReadFrom(b []byte) (n int, addr net.Addr, err error)
}

// sender is what the Announcer needs of its connection besides reading.
type sender interface {
	WriteTo(b []byte, addr net.Addr) (n int, err error)
	Close() error
}

type groupJoiner interface {
	JoinGroup(mac net.HardwareAddr) error
	LeaveGroup(mac net.HardwareAddr) error
}

type linkWatcher interface {
	LinkStates() <-chan LinkState
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// writeTimeout bounds each write. A frame is sent while the Announcer's
// lock is held for reading (so that Release can promise that nothing is sent
// for a VIP once it returns), so a write that blocked, on a socket whose
// send buffer stays full, would hold up Release and Close; after
// writeTimeout it fails instead and the burst retries it.
const writeTimeout = 100 * time.Millisecond

// Announcer owns a set of VIPs on one Ethernet interface: it announces each
// on acquire, optionally again at intervals, and answers ARP requests and
// neighbour solicitations for exactly the VIPs it owns, on exactly its
// interface. It runs a scheduler goroutine, a reader goroutine per socket
// and, when its connection reports the link's state, a goroutine that
// follows it, from New until Close. Its methods are safe for concurrent
// use.
//
// When the connection reports the link's state (Dial's does, through
// rtnetlink; see LinkConn), the Announcer stops announcing while the link
// is down, announces every VIP it owns again, a full burst, when the link
// comes back up (switches and neighbours may have forgotten it meanwhile),
// and stops for good with ErrInterfaceGone when the interface is deleted.
// A write or read that fails with ENXIO or ENODEV stops it the same way.
// A stopped Announcer owns nothing; a new interface of the same name needs a
// new Announcer (Dial again).
type Announcer struct {
	ifi  net.Interface
	mac  net.HardwareAddr
	conn sender
	mc   groupJoiner    // nil when conn cannot join groups
	wd   writeDeadliner // nil when conn has no write deadline
	cfg  Config
	log  *slog.Logger

	// mu guards owned, closed and linkDown. Every frame about a VIP is sent
	// while holding mu for reading and after checking that the VIP is
	// owned, so that once Release (which takes mu for writing) returns,
	// nothing more is sent for the released VIPs.
	mu       sync.RWMutex
	owned    map[netip.Addr]*vipState
	closed   bool
	linkDown bool

	wake      chan struct{} // nudges the scheduler
	stop      chan struct{} // closed when the Announcer stops
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error // of conn.Close
	wg        sync.WaitGroup
	errMu     sync.Mutex
	err       error // why the announcer stopped

	stats counters
}

// New returns an Announcer for ifi that reads and writes frames on conn,
// which it owns from now on (Close closes it). ifi supplies the MAC address
// the Announcer answers with and, for Dial, the interface index. Use New with
// a FakeConn to test without root, or with a packet socket you opened
// yourself (with Filter attached). When conn is also a MulticastConn the
// Announcer joins solicited-node groups through it, when it is a LinkConn it
// follows the link's state, and when it has a SetWriteDeadline method (as
// *packet.Conn has) every write gets a deadline.
func New(ifi *net.Interface, conn Conn, cfg Config) (*Announcer, error) {
	if conn == nil {
		return nil, invalid("conn", "nil Conn")
	}
	return newAnnouncer(ifi, conn, []reader{conn}, cfg)
}

func newAnnouncer(ifi *net.Interface, conn sender, readers []reader, cfg Config) (*Announcer, error) {
	if err := validateIface(ifi); err != nil {
		return nil, err
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
	a.mc, _ = conn.(groupJoiner)
	a.wd, _ = conn.(writeDeadliner)
	lw, follow := conn.(linkWatcher)
	if follow {
		// Take in a state already reported (Dial's connection reports
		// the link's state when it opens) before New returns, so that an
		// Acquire right after it does not write on a link that is down.
		select {
		case s, ok := <-lw.LinkStates():
			if ok {
				a.setLink(s)
			}
		default:
		}
	}
	a.wg.Add(1)
	go a.scheduleLoop()
	for _, r := range readers {
		a.wg.Add(1)
		go a.readLoop(r)
	}
	if follow {
		a.wg.Add(1)
		go a.linkLoop(lw.LinkStates())
	}
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
// first announcement of each before it returns (unless the link is down:
// then the burst starts when it comes up) and schedules the rest of the
// burst. VIPs it already owns are left as they are (use Announce to announce
// them again).
//
// Taking ownership is all or nothing: when a VIP is invalid, ctx has ended,
// or a group join fails, Acquire returns the error and owns none of the VIPs
// this call would have added. A first announcement that cannot be sent does
// not undo the acquisition: it is counted in Stats.WriteErrors, logged, and
// retried AnnounceInterval later (an interface that is gone stops the
// Announcer instead, and Acquire returns ErrClosed). When ctx ends while the
// first announcements are being sent, Acquire leaves the rest to the
// scheduler, which sends them at once.
//
// Acquire returns nil only if every VIP in vips is owned when it returns:
// if a Release running at the same time took one back first, it returns
// ErrNotOwned, and if the Announcer was closed or stopped, ErrClosed.
func (a *Announcer) Acquire(ctx context.Context, vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	if err := a.usable(); err != nil {
		a.mu.Unlock()
		return err
	}
	var added []due
	for _, ip := range vips {
		if _, ok := a.owned[ip]; ok {
			continue
		}
		if err := a.join(ip); err != nil {
			for _, d := range added {
				a.dropLocked(d.ip)
			}
			a.mu.Unlock()
			return err
		}
		// This call sends the first announcement.
		st := &vipState{left: a.cfg.AnnounceCount, sending: true}
		a.owned[ip] = st
		added = append(added, due{ip, st})
	}
	down := a.linkDown
	a.mu.Unlock()

	for i, d := range added {
		if down || ctx.Err() != nil {
			a.handOver(added[i:])
			break
		}
		a.announceDue(d)
	}
	err = a.checkOwned(vips, " (released while being acquired)")
	if err == nil && len(added) > 0 {
		a.log.Debug("acquired", "vips", vips)
	}
	return err
}

// handOver schedules the first announcement of VIPs Acquire did not send
// for now, and wakes the scheduler.
func (a *Announcer) handOver(ds []due) {
	now := time.Now()
	a.mu.Lock()
	for _, d := range ds {
		if a.owned[d.ip] == d.st && d.st.sending {
			d.st.sending = false
			d.st.next = now
		}
	}
	a.mu.Unlock()
	a.nudge()
}

// Release stops the Announcer owning vips: when it returns, no answer and no
// announcement for them is sent any more, and their solicited-node groups
// are left. VIPs it does not own are ignored. It fails only for invalid
// input, in which case nothing is released.
//
// Release takes no context on purpose: it never waits for the network (at
// most for one frame being written, whose write has a deadline) and it must
// not be refused because a context ended, as it runs on failover and
// shutdown paths whose contexts often have.
func (a *Announcer) Release(vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	a.mu.Lock()
	for _, ip := range vips {
		a.dropLocked(ip)
	}
	a.mu.Unlock()
	a.log.Debug("released", "vips", vips)
	return nil
}

// Announce sends one announcement for each of vips now, outside the burst
// and re-announcement schedule. Every VIP must be owned (ErrNotOwned
// otherwise, and nothing is sent). It returns the first write error.
func (a *Announcer) Announce(ctx context.Context, vips ...netip.Addr) error {
	vips, err := normalizeVIPs(vips)
	if err != nil {
		return err
	}
	if err := a.checkOwned(vips, ""); err != nil {
		return err
	}
	for _, ip := range vips {
		if err := ctx.Err(); err != nil {
			return err
		}
		sent, err := a.announceOne(ip)
		if err != nil {
			a.writeFailed(err)
			if cerr := a.closedErr(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("arp: announce %s on %s: %w", ip, a.ifi.Name, err)
		}
		if !sent {
			if cerr := a.closedErr(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("%w: %s on %s (released meanwhile)", ErrNotOwned, ip, a.ifi.Name)
		}
	}
	return nil
}

// Owned returns the VIPs the Announcer owns, sorted. A stopped Announcer
// owns none.
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
// Close, or when its interface is gone or reading from its connection failed
// for good (see Err). A stopped Announcer owns nothing and sends nothing;
// Close it to wait for its goroutines.
func (a *Announcer) Done() <-chan struct{} { return a.stop }

// Err returns nil while the Announcer runs; then why it stopped: ErrClosed
// after Close, an error matching ErrInterfaceGone when its interface was
// deleted, or the read error that stopped it.
func (a *Announcer) Err() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.err
}

// Close releases every VIP, stops the goroutines, closes the connection
// (which also leaves every multicast group) and waits for the goroutines.
// It is idempotent, and also needed after the Announcer stopped by itself.
func (a *Announcer) Close() error {
	a.shutdown(ErrClosed)
	a.wg.Wait()
	if a.closeErr != nil {
		return fmt.Errorf("arp: close %s: %w", a.ifi.Name, a.closeErr)
	}
	return nil
}

// shutdown stops the Announcer: it records why (the first reason wins),
// drops every VIP, wakes the goroutines and closes the connection, which
// ends the readers. a.mu must not be held.
func (a *Announcer) shutdown(cause error) {
	a.errMu.Lock()
	first := a.err == nil
	if first {
		a.err = cause
	}
	a.errMu.Unlock()
	a.mu.Lock()
	a.closed = true
	a.owned = map[netip.Addr]*vipState{} // closing the connection leaves the groups
	a.mu.Unlock()
	a.stopOnce.Do(func() { close(a.stop) })
	a.closeOnce.Do(func() { a.closeErr = a.conn.Close() })
	if first && cause != ErrClosed {
		a.log.Error("announcer stops", "err", cause)
	}
}

func (a *Announcer) stopped() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

// usable reports why the announcer cannot take work; a.mu must be held.
func (a *Announcer) usable() error {
	if !a.closed {
		return nil
	}
	if err := a.Err(); err != nil && err != ErrClosed {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return ErrClosed
}

// checkOwned returns ErrClosed if the Announcer has stopped, and
// ErrNotOwned, its message followed by why, if it does not own every one of
// vips.
func (a *Announcer) checkOwned(vips []netip.Addr, why string) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if err := a.usable(); err != nil {
		return err
	}
	for _, ip := range vips {
		if _, ok := a.owned[ip]; !ok {
			return fmt.Errorf("%w: %s on %s%s", ErrNotOwned, ip, a.ifi.Name, why)
		}
	}
	return nil
}

// closedErr is usable for callers that do not hold a.mu.
func (a *Announcer) closedErr() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.usable()
}

// gone returns the error that stops the Announcer when its interface is
// deleted; cause is the error that told, or nil.
func (a *Announcer) gone(cause error) error {
	if cause == nil {
		return fmt.Errorf("%w: %s (index %d) was deleted", ErrInterfaceGone, a.ifi.Name, a.ifi.Index)
	}
	return fmt.Errorf("%w: %s (index %d): %w", ErrInterfaceGone, a.ifi.Name, a.ifi.Index, cause)
}

// isGone reports whether a socket error means that the interface no longer
// exists: a packet socket's sendto fails with ENXIO for an interface index
// that is gone, and other calls with ENODEV.
func isGone(err error) bool {
	return errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.ENODEV)
}

// writeFailed stops the Announcer when a write failed because the interface
// is gone. a.mu must not be held.
func (a *Announcer) writeFailed(err error) {
	if isGone(err) {
		a.shutdown(a.gone(err))
	}
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

// dropLocked stops owning ip; a.mu must be held for writing.
func (a *Announcer) dropLocked(ip netip.Addr) {
	if _, ok := a.owned[ip]; !ok {
		return
	}
	delete(a.owned, ip)
	if ip.Is6() && a.mc != nil {
		if err := a.mc.LeaveGroup(IPv6MulticastMAC(SolicitedNodeMulticast(ip))); err != nil {
			a.log.Warn("leave solicited-node group", "vip", ip, "err", err)
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

// scheduleLoop sends the rest of each burst, the retries of failed
// announcements and the periodic re-announcements.
func (a *Announcer) scheduleLoop() {
	defer a.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := a.collectDue(time.Now())
		for _, d := range due {
			a.announceDue(d)
		}
		if len(due) > 0 {
			continue // announceDue has set new times
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

// collectDue returns the VIPs whose announcement is due at now, marking each
// as being sent, and the earliest time one is due next. While the link is
// down nothing is due.
func (a *Announcer) collectDue(now time.Time) (ds []due, next time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.linkDown {
		return nil, time.Time{}
	}
	for ip, st := range a.owned {
		switch {
		case st.sending || st.next.IsZero():
		case !now.Before(st.next):
			st.sending = true
			ds = append(ds, due{ip, st})
		case next.IsZero() || st.next.Before(next):
			next = st.next
		}
	}
	return ds, next
}

// announceDue sends the announcement of d that is due and schedules the
// next: a successful one counts towards the burst, a failed one is retried
// AnnounceInterval later.
func (a *Announcer) announceDue(d due) {
	sent, err := a.announceOne(d.ip)
	now := time.Now()
	a.mu.Lock()
	if a.owned[d.ip] == d.st && d.st.sending {
		d.st.sending = false
		if sent && err == nil && d.st.left > 0 {
			d.st.left--
		}
		if err != nil {
			d.st.next = now.Add(a.cfg.AnnounceInterval)
		} else {
			d.st.next = a.nextAfter(d.st, now)
		}
	}
	a.mu.Unlock()
	a.nudge() // the scheduler may be waiting for a later time, or none
	if err != nil && !a.stopped() {
		a.log.Warn("announce", "vip", d.ip, "err", err)
		a.writeFailed(err)
	}
}

// announceOne sends one announcement of ip (one or two gratuitous ARP
// frames, or one unsolicited advertisement) if ip is still owned, and
// reports whether it was.
func (a *Announcer) announceOne(ip netip.Addr) (bool, error) {
	var frames [][]byte
	if ip.Is4() {
		var pkts []Packet
		if a.cfg.GratuitousARP != GratuitousReply {
			pkts = append(pkts, GratuitousARP(a.mac, ip, OperationRequest))
		}
		if a.cfg.GratuitousARP != GratuitousRequest {
			pkts = append(pkts, GratuitousARP(a.mac, ip, OperationReply))
		}
		for i := range pkts {
			f, err := AppendARPFrame(nil, broadcastMAC, a.mac, &pkts[i])
			if err != nil {
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
// owned. It reports whether ip was owned. The caller handles the error (see
// writeFailed), after this has let go of a.mu.
func (a *Announcer) sendIfOwned(ip netip.Addr, dst net.HardwareAddr, counter *atomic.Uint64, frames ...[]byte) (bool, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, ok := a.owned[ip]; !ok {
		return false, nil
	}
	to := &packet.Addr{HardwareAddr: dst}
	for _, f := range frames {
		if a.wd != nil {
			_ = a.wd.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		// Counted before the write, so that whoever sees the frame sees
		// the count; taken back if the write fails.
		counter.Add(1)
		if _, err := a.conn.WriteTo(f, to); err != nil {
			counter.Add(^uint64(0))
			if !a.stopped() {
				a.stats.writeErrors.Add(1)
			}
			return true, err
		}
	}
	return true, nil
}

// linkLoop follows the link states the connection reports.
func (a *Announcer) linkLoop(states <-chan LinkState) {
	defer a.wg.Done()
	for {
		select {
		case <-a.stop:
			return
		case s, ok := <-states:
			if !ok {
				if !a.stopped() {
					a.log.Warn("the connection stopped reporting the link's state")
				}
				return
			}
			a.setLink(s)
		}
	}
}

// setLink acts on a link state: LinkDown pauses the announcements, LinkUp
// after LinkDown starts a new burst for every owned VIP, LinkGone stops the
// Announcer.
func (a *Announcer) setLink(s LinkState) {
	switch s {
	case LinkGone:
		a.shutdown(a.gone(nil))
	case LinkDown:
		a.mu.Lock()
		was := a.linkDown
		a.linkDown = true
		a.mu.Unlock()
		if !was {
			a.log.Warn("link down: announcements wait for it to come up")
		}
	case LinkUp:
		now := time.Now()
		a.mu.Lock()
		was := a.linkDown
		a.linkDown = false
		if was {
			for _, st := range a.owned {
				st.left = a.cfg.AnnounceCount
				if !st.sending { // else the send in flight counts
					st.next = now
				}
			}
		}
		n := len(a.owned)
		a.mu.Unlock()
		if was {
			a.log.Info("link up: announcing again", "vips", n)
			a.nudge()
		}
	}
}

// readBufferLen holds any Ethernet frame up to a 9000-byte MTU.
const readBufferLen = 9216

// readLoop reads frames from r and answers them until the connection is
// closed or fails.
func (a *Announcer) readLoop(r reader) {
	defer a.wg.Done()
	buf := make([]byte, readBufferLen)
	for {
		n, _, err := r.ReadFrom(buf)
		if err == nil {
			if n > 0 {
				a.handle(buf[:n])
			}
			continue
		}
		if a.stopped() {
			return
		}
		switch {
		case errors.Is(err, syscall.ENETDOWN):
			// The kernel reports an interface going down once per socket
			// and keeps the socket; frames arrive again when it is up.
			a.log.Warn("interface down", "err", err)
			select {
			case <-a.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		case isGone(err):
			a.shutdown(a.gone(err))
		default:
			a.shutdown(fmt.Errorf("arp: read on %s: %w", a.ifi.Name, err))
		}
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
	a.checkConflict(p.SenderIP, p.SenderHardwareAddr, p.Operation.String())
	if p.Operation != OperationRequest || p.IsGratuitous() || equalMAC(p.SenderHardwareAddr, a.mac) {
		a.stats.ignored.Add(1)
		return
	}
	// Most requests on a LAN are for other hosts: drop them before
	// building an answer. sendIfOwned checks again under the lock, for a
	// Release in between.
	if !a.owns(p.TargetIP) {
		a.stats.ignored.Add(1)
		return
	}
	reply := ReplyTo(&p, a.mac)
	dst := p.SenderHardwareAddr
	if isZeroMAC(dst) || equalMAC(dst, broadcastMAC) || dst[0]&1 != 0 {
		dst = f.Source
	}
	frame, err := AppendARPFrame(make([]byte, 0, MinFrameLen), dst, a.mac, &reply)
	if err != nil {
		a.malformed(err)
		return
	}
	a.answer(p.TargetIP, dst, &a.stats.arpReplies, frame, "arp reply", p.SenderIP)
}

// checkConflict counts and logs another host's claim of an owned VIP.
func (a *Announcer) checkConflict(ip netip.Addr, mac net.HardwareAddr, what string) {
	if !equalMAC(mac, a.mac) && a.owns(ip) {
		a.stats.conflicts.Add(1)
		a.log.Warn("another host claims an owned VIP", "vip", ip, "mac", mac, "op", what)
	}
}

func (a *Announcer) handleNDP(f *Frame) {
	m, err := ParseNeighborMessage(f.Payload)
	if err != nil {
		a.malformed(err)
		return
	}
	if err := m.CheckReceived(); err != nil {
		a.malformed(err)
		return
	}
	if m.Type == TypeNeighborAdvertisement {
		// An advertisement without a target link-layer address option
		// speaks for the host that sent it.
		lla := m.LinkLayerAddr
		if lla == nil {
			lla = f.Source
		}
		a.checkConflict(m.Target, lla, m.Type.String())
		a.stats.ignored.Add(1)
		return
	}
	if !a.owns(m.Target) { // as in handleARP
		a.stats.ignored.Add(1)
		return
	}
	snm := SolicitedNodeMulticast(m.Target)
	if (m.Destination != snm && m.Destination != m.Target) ||
		(!isIPv6MulticastMACOf(f.Destination, snm) && !equalMAC(f.Destination, a.mac)) {
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
	frame, err := AppendNeighborFrame(make([]byte, 0, advertisementFrameLen), dst, a.mac, &na)
	if err != nil {
		a.malformed(err)
		return
	}
	a.answer(m.Target, dst, &a.stats.advertisements, frame, "neighbor advertisement", m.Source)
}

// advertisementFrameLen is the length of the neighbour advertisements the
// Announcer answers with: untagged, with a target link-layer address.
const advertisementFrameLen = EthernetHeaderLen + ipv6HeaderLen + ndMessageLen + 8

// answer sends a reply about vip if vip is owned, and counts it as ignored
// otherwise.
func (a *Announcer) answer(vip netip.Addr, dst net.HardwareAddr, counter *atomic.Uint64, frame []byte, what string, to netip.Addr) {
	owned, err := a.sendIfOwned(vip, dst, counter, frame)
	switch {
	case !owned:
		a.stats.ignored.Add(1)
	case err != nil:
		if !a.stopped() {
			a.log.Warn(what, "vip", vip, "to", to, "err", err)
		}
		a.writeFailed(err)
	case a.log.Enabled(context.Background(), slog.LevelDebug):
		// Guarded: the arguments alone cost allocations on every answer,
		// for a record that is usually discarded.
		a.log.Debug(what, "vip", vip, "to", to, "mac", dst)
	}
}

func (a *Announcer) owns(ip netip.Addr) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.owned[ip]
	return ok
}
