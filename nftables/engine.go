package nftables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	gnft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Interface programs one owned table. *Engine does it through netlink on
// the kernel; *Fake keeps the table in memory with the same semantics, for
// tests of code built on top (such as lbkit's nat package).
type Interface interface {
	// Table returns the owned table.
	Table() Table
	// Apply sends tx as one atomic batch. A *ValidationError means
	// nothing was sent; a *KernelError means the kernel refused the batch
	// and nothing changed (unless it wraps ErrOutcomeUnknown).
	Apply(ctx context.Context, tx *Transaction) error
	// Sync makes the table hold desired, sending only the difference
	// from what the engine last applied (or read), in one batch, and
	// returns the transaction it sent (empty when nothing differed). The
	// engine keeps desired to diff the next Sync against: do not modify
	// it afterwards, build a new Ruleset for the next call.
	Sync(ctx context.Context, desired *Ruleset) (*Transaction, error)
	// Reconcile is Sync against what the kernel holds now, read afresh:
	// it repairs drift (a chain flushed or an element deleted by someone
	// else).
	Reconcile(ctx context.Context, desired *Ruleset) (*Transaction, error)
	// Read returns what the table holds, in canonical form (see
	// Canonical). It wraps ErrNotFound when the table does not exist.
	Read(ctx context.Context) (*Ruleset, error)
	// Cleanup deletes the owned table and everything in it, and nothing
	// else. Deleting a table that does not exist is not an error.
	Cleanup(ctx context.Context) error
}

// Batcher is the write side of the engine: a batch of nftables messages
// built with these calls and sent by Flush. *nftables.Conn from
// github.com/google/nftables implements it.
type Batcher interface {
	AddTable(*gnft.Table) *gnft.Table
	DelTable(*gnft.Table)
	AddChain(*gnft.Chain) *gnft.Chain
	DelChain(*gnft.Chain)
	FlushChain(*gnft.Chain)
	AddRule(*gnft.Rule) *gnft.Rule
	AddSet(*gnft.Set, []gnft.SetElement) error
	DelSet(*gnft.Set)
	FlushSet(*gnft.Set)
	SetAddElements(*gnft.Set, []gnft.SetElement) error
	SetDeleteElements(*gnft.Set, []gnft.SetElement) error
	Flush() error
}

// Option configures an Engine.
type Option func(*config)

type config struct {
	netns  int
	logger *slog.Logger
}

// WithNetNS makes Dial open its netlink sockets in the network namespace
// the file descriptor refers to (for example nettest's Host.NamespaceFd).
func WithNetNS(fd int) Option { return func(c *config) { c.netns = fd } }

// WithLogger makes the engine log to l (at debug level: every batch with
// its size and duration). The default is silent.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Stats describes the last batch an engine sent.
type Stats struct {
	Ops      int           // operations in the transaction
	Messages int           // netlink messages in the batch
	Bytes    int           // estimated size of the batch
	Compile  time.Duration // validation and encoding
	Commit   time.Duration // send, kernel commit, acknowledgements
}

// Engine programs the owned table through netlink with google/nftables.
// Its methods are safe for concurrent use; they are serialised.
type Engine struct {
	t     Table
	log   *slog.Logger
	netns int // WithNetNS's descriptor; 0 when none was given

	mu     sync.Mutex
	redial func() (Batcher, *netlink.Conn, error) // nil when injected
	b      Batcher
	bconn  *netlink.Conn // the Batcher's socket, when the engine dialled it
	d      Dumper
	dconn  io.Closer
	defs   *schema  // definitions the table holds; nil when unknown
	state  *Ruleset // what the last Sync applied; nil when unknown
	rcv    int      // receive buffer size set on bconn
	snd    int      // send buffer size set on bconn
	stats  Stats
	// keepBuffers leaves the socket buffers at the system defaults; only
	// tests set it, to show what happens without sizing.
	keepBuffers bool
}

var _ Interface = (*Engine)(nil)

// Dial opens a lasting google/nftables connection and a netlink socket for
// reading, in the namespace given by WithNetNS (or the caller's), and
// returns an engine for table t. Close releases them.
func Dial(t Table, opts ...Option) (*Engine, error) {
	if err := ValidateTable(t); err != nil {
		return nil, err
	}
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	redial := func() (Batcher, *netlink.Conn, error) { return dialBatcher(cfg.netns) }
	b, bconn, err := redial()
	if err != nil {
		return nil, err
	}
	dc, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: cfg.netns})
	if err != nil {
		closeBatcher(b)
		return nil, fmt.Errorf("nftables: dial netlink: %w", err)
	}
	_ = dc.SetOption(netlink.ExtendedAcknowledge, true)
	e := newEngine(t, b, dc, cfg)
	e.redial, e.bconn, e.dconn = redial, bconn, dc
	return e, nil
}

func dialBatcher(netns int) (Batcher, *netlink.Conn, error) {
	var sock *netlink.Conn
	opts := []gnft.ConnOption{gnft.AsLasting(), gnft.WithSockOptions(func(c *netlink.Conn) error {
		sock = c
		// Acknowledgements of failed messages carry only the header, not
		// the whole message back: small and bounded.
		// No extended acknowledgements here: mdlayher/netlink v1.11.2
		// does not handle capped ones (it looks for their attributes past
		// the omitted message and loses the errno).
		return c.SetOption(netlink.CapAcknowledge, true)
	})}
	if netns > 0 {
		opts = append(opts, gnft.WithNetNSFd(netns))
	}
	conn, err := gnft.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: dial: %w", err)
	}
	return conn, sock, nil
}

func closeBatcher(b Batcher) {
	if c, ok := b.(*gnft.Conn); ok {
		_ = c.CloseLasting()
	}
}

// New returns an engine for table t that writes through b and reads through
// d, for callers that manage their own connections. The engine cannot size
// the socket buffers of an injected Batcher; size them for the batches you
// send (see the package documentation).
func New(t Table, b Batcher, d Dumper, opts ...Option) (*Engine, error) {
	if err := ValidateTable(t); err != nil {
		return nil, err
	}
	if b == nil || d == nil {
		return nil, errors.New("nftables: New needs a Batcher and a Dumper")
	}
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	return newEngine(t, b, d, cfg), nil
}

func newEngine(t Table, b Batcher, d Dumper, cfg config) *Engine {
	log := cfg.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{t: t, log: log, b: b, d: d, netns: cfg.netns}
}

// Table returns the owned table.
func (e *Engine) Table() Table { return e.t }

// NetNS returns the network-namespace file descriptor the engine was given
// with WithNetNS, and whether one was given. Without it the engine works in
// the namespace of the thread that called Dial (ok is false). The
// descriptor still belongs to the caller, who must keep it open for as long
// as something uses it; programs that must act in the same namespace as
// the engine (deleting conntrack entries, say) use it.
func (e *Engine) NetNS() (fd int, ok bool) { return e.netns, e.netns > 0 }

// Close releases the engine's sockets (when it dialled them).
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.redial != nil {
		closeBatcher(e.b)
	}
	if e.dconn != nil {
		return e.dconn.Close()
	}
	return nil
}

// LastStats returns the figures of the last batch sent.
func (e *Engine) LastStats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// forget drops what the engine believes the kernel holds; the next call
// reads it again.
func (e *Engine) forget() { e.defs, e.state = nil, nil }

// Apply validates tx against what the engine knows of the table (reading
// the table's definitions first if it knows nothing), encodes it and sends
// it as one batch.
func (e *Engine) Apply(ctx context.Context, tx *Transaction) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if tx.Empty() {
		return nil
	}
	if e.defs == nil {
		if err := e.loadDefs(ctx); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := validateTx(e.defs, tx); err != nil {
		return err
	}
	if err := e.send(ctx, tx, e.defs, start); err != nil {
		return err
	}
	e.defs.applyDefs(tx)
	e.state = nil
	return nil
}

// loadDefs reads the chain and set definitions of the table.
func (e *Engine) loadDefs(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rr, err := readRaw(e.d, e.t, false)
	if errors.Is(err, ErrNotFound) {
		e.defs = &schema{family: e.t.Family, known: true, sets: map[string]*Set{}, chains: map[string]*Chain{}}
		return nil
	}
	if err != nil {
		return newKernelError("read", 0, err)
	}
	sc := &schema{family: e.t.Family, known: true, sets: map[string]*Set{}, chains: map[string]*Chain{}}
	for i := range rr.chains {
		c := rr.chains[i]
		sc.chains[c.Name] = &c
	}
	for n, s := range rr.sets {
		if !isAnonName(n) {
			sc.sets[n] = s
		}
	}
	e.defs = sc
	return nil
}

// applyDefs records the definition changes of tx.
func (sc *schema) applyDefs(tx *Transaction) {
	for i := range tx.ops {
		o := &tx.ops[i]
		switch o.kind {
		case opDelTable:
			sc.sets, sc.chains = map[string]*Set{}, map[string]*Chain{}
		case opAddChain:
			if sc.chains[o.name] == nil {
				sc.chains[o.name] = &Chain{Name: o.name, Base: o.chain.Base}
			}
		case opDelChain:
			delete(sc.chains, o.name)
		case opAddSet:
			def := *o.set
			def.Elements = nil
			sc.sets[o.name] = &def
		case opDelSet:
			delete(sc.sets, o.name)
		}
	}
}

// recorder buffers the calls of a compilation, so that a batch is handed
// to the Batcher only once it is complete and valid.
type recorder struct {
	calls []func(Batcher) error
}

// Flush does nothing: a recorder only collects.
func (r *recorder) Flush() error { return nil }

func (r *recorder) AddTable(t *gnft.Table) *gnft.Table {
	r.calls = append(r.calls, func(b Batcher) error { b.AddTable(t); return nil })
	return t
}
func (r *recorder) DelTable(t *gnft.Table) {
	r.calls = append(r.calls, func(b Batcher) error { b.DelTable(t); return nil })
}
func (r *recorder) AddChain(c *gnft.Chain) *gnft.Chain {
	r.calls = append(r.calls, func(b Batcher) error { b.AddChain(c); return nil })
	return c
}
func (r *recorder) DelChain(c *gnft.Chain) {
	r.calls = append(r.calls, func(b Batcher) error { b.DelChain(c); return nil })
}
func (r *recorder) FlushChain(c *gnft.Chain) {
	r.calls = append(r.calls, func(b Batcher) error { b.FlushChain(c); return nil })
}
func (r *recorder) AddRule(x *gnft.Rule) *gnft.Rule {
	r.calls = append(r.calls, func(b Batcher) error { b.AddRule(x); return nil })
	return x
}
func (r *recorder) AddSet(s *gnft.Set, es []gnft.SetElement) error {
	r.calls = append(r.calls, func(b Batcher) error { return b.AddSet(s, es) })
	return nil
}
func (r *recorder) DelSet(s *gnft.Set) {
	r.calls = append(r.calls, func(b Batcher) error { b.DelSet(s); return nil })
}
func (r *recorder) FlushSet(s *gnft.Set) {
	r.calls = append(r.calls, func(b Batcher) error { b.FlushSet(s); return nil })
}
func (r *recorder) SetAddElements(s *gnft.Set, es []gnft.SetElement) error {
	r.calls = append(r.calls, func(b Batcher) error { return b.SetAddElements(s, es) })
	return nil
}
func (r *recorder) SetDeleteElements(s *gnft.Set, es []gnft.SetElement) error {
	r.calls = append(r.calls, func(b Batcher) error { return b.SetDeleteElements(s, es) })
	return nil
}

// knownSets returns the set definitions a schema knows (for the encoder).
func (sc *schema) knownSets() map[string]*Set {
	out := map[string]*Set{}
	for s := sc; s != nil; s = s.parent {
		for n, def := range s.sets {
			if _, ok := out[n]; !ok && def != nil {
				out[n] = def
			}
		}
	}
	return out
}

// send encodes tx and commits it as one batch.
func (e *Engine) send(ctx context.Context, tx *Transaction, sc *schema, start time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec := &recorder{}
	var known map[string]*Set
	if sc != nil {
		known = sc.knownSets()
	}
	comp := newCompiler(e.t, known, rec)
	if err := comp.compile(tx); err != nil {
		return &ValidationError{Reason: err.Error()}
	}
	compiled := time.Now()
	e.sizeBuffers(comp.msgs, comp.bytes)
	if e.bconn != nil {
		// The kernel handles the whole batch inside sendmsg and queues
		// every acknowledgement before Flush reads one, so reading never
		// waits on the kernel's work; a deadline only bounds a stuck
		// socket. A deadline that passes makes the outcome unknown.
		dl, _ := ctx.Deadline()
		_ = e.bconn.SetDeadline(dl)
	}
	for _, call := range rec.calls {
		if err := call(e.b); err != nil {
			// Only the anonymous-set guard of google/nftables returns
			// errors here; the batch was not sent, but the Batcher holds
			// part of it: start from a fresh connection.
			e.reconnect()
			return &ValidationError{Reason: err.Error()}
		}
	}
	err := e.b.Flush()
	e.stats = Stats{Ops: len(tx.ops), Messages: comp.msgs, Bytes: comp.bytes, Compile: compiled.Sub(start), Commit: time.Since(compiled)}
	if err != nil {
		e.reconnect()
		e.forget()
		ke := newKernelError("apply", comp.msgs, classify(err))
		e.log.Debug("nftables: batch failed", "table", e.t.String(), "messages", comp.msgs, "err", ke)
		return ke
	}
	e.log.Debug("nftables: batch committed", "table", e.t.String(), "ops", len(tx.ops), "messages", comp.msgs,
		"bytes", comp.bytes, "compile", e.stats.Compile, "commit", e.stats.Commit)
	return nil
}

// classify marks errors after which the kernel may have committed.
func classify(err error) error {
	var oe *netlink.OpError
	sendFailed := errors.As(err, &oe) && oe.Op == "send-messages"
	if !sendFailed && (errors.Is(err, syscall.ENOBUFS) || errors.Is(err, os.ErrDeadlineExceeded)) {
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return err
}

// reconnect replaces the batch connection: after a failed Flush the socket
// may still hold acknowledgements of the failed batch, which would be read
// as answers to the next one.
func (e *Engine) reconnect() {
	if e.redial == nil {
		return
	}
	closeBatcher(e.b)
	b, bconn, err := e.redial()
	if err != nil {
		e.log.Debug("nftables: redial failed", "err", err)
		return
	}
	e.b, e.bconn, e.rcv, e.snd = b, bconn, 0, 0
}

// Socket buffer sizing. The kernel processes a whole batch inside the
// sendmsg call, so the batch must fit the send buffer (else EMSGSIZE), and
// every acknowledgement is queued before the engine reads the first one,
// so they must all fit the receive buffer (else ENOBUFS, after the commit).
// google/nftables asks for an acknowledgement of every message. The engine
// raises both buffers with SO_SNDBUFFORCE/SO_RCVBUFFORCE (CAP_NET_ADMIN,
// which programming nftables needs anyway), past net.core.[rw]mem_max.
const (
	ackTruesize = 1024 // bytes of receive buffer one acknowledgement uses, with margin
	bufSlack    = 256 << 10
)

func (e *Engine) sizeBuffers(msgs, bytes int) {
	if e.bconn == nil || e.keepBuffers {
		return
	}
	rcv := msgs*ackTruesize + bufSlack
	snd := 2*bytes + bufSlack
	if rcv > e.rcv {
		if setBuf(e.bconn, unix.SO_RCVBUFFORCE, rcv) == nil {
			e.rcv = rcv
		} else if e.bconn.SetReadBuffer(rcv) == nil {
			e.rcv = rcv
		}
	}
	if snd > e.snd {
		if setBuf(e.bconn, unix.SO_SNDBUFFORCE, snd) == nil {
			e.snd = snd
		} else if e.bconn.SetWriteBuffer(snd) == nil {
			e.snd = snd
		}
	}
}

func setBuf(c *netlink.Conn, opt, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, n) }); err != nil {
		return err
	}
	return serr
}

// Sync implements Interface.
func (e *Engine) Sync(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sync(ctx, desired)
}

// Reconcile implements Interface.
func (e *Engine) Reconcile(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forget()
	return e.sync(ctx, desired)
}

func (e *Engine) sync(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	start := time.Now()
	var known *schema
	if e.state != nil {
		known = e.defs
	}
	tx, old, err := plan(e.t, e.state, known, desired, func() (*Ruleset, error) { return e.read(ctx) })
	if err != nil {
		return nil, err
	}
	if !tx.Empty() {
		if known == nil {
			known = newSchema(e.t, old)
		}
		if err := e.send(ctx, tx, known, start); err != nil {
			return tx, err
		}
	}
	e.state = desired
	e.defs = newSchema(e.t, desired)
	return tx, nil
}

// plan returns the transaction that takes the table from state (the
// ruleset last applied, whose definitions sc holds) to desired, and the
// ruleset it diffed against. When state is nil it validates desired, reads
// the table and diffs against its canonical form. When state is known it
// validates the difference, plus what a difference cannot show: that
// desired names no set or chain twice (Diff would keep the last), and
// that no rule or verdict map element of desired uses a set or chain the
// difference deletes. What did not change was valid when it was applied.
func plan(t Table, state *Ruleset, sc *schema, desired *Ruleset, read func() (*Ruleset, error)) (*Transaction, *Ruleset, error) {
	if state != nil && sc != nil {
		if err := checkUnique(desired); err != nil {
			return nil, nil, err
		}
		tx := Diff(state, desired)
		if err := validateTx(sc, tx); err != nil {
			return nil, nil, err
		}
		if err := checkDeleted(t, desired, tx); err != nil {
			return nil, nil, err
		}
		return tx, state, nil
	}
	if err := Validate(t, desired); err != nil {
		return nil, nil, err
	}
	cur, err := read()
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	want, err := canonical(t, desired) // validated above
	if err != nil {
		return nil, nil, err
	}
	return Diff(cur, want), cur, nil
}

// Read implements Interface.
func (e *Engine) Read(ctx context.Context) (*Ruleset, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.read(ctx)
}

func (e *Engine) read(ctx context.Context) (*Ruleset, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rr, err := readRaw(e.d, e.t, true)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, newKernelError("read", 0, err)
	}
	return decodeRaw(e.t, rr), nil
}

// Cleanup implements Interface.
func (e *Engine) Cleanup(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := tableExists(e.d, e.t)
	if err != nil {
		return newKernelError("cleanup", 0, err)
	}
	e.forget()
	if !ok {
		return nil
	}
	tx := &Transaction{}
	tx.DeleteTable()
	if err := e.send(ctx, tx, nil, time.Now()); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil // deleted meanwhile by someone else
		}
		return err
	}
	return nil
}
