package nat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/lbkit/lbkit/iptables"
	"github.com/lbkit/lbkit/lb"
)

// DefaultFullSyncInterval is how often IPTables rewrites everything it owns
// even when nothing changed, to repair drift (a chain flushed by hand, a
// hook deleted by another program).
const DefaultFullSyncInterval = time.Hour

// IPTablesOptions configure an IPTables syncer.
type IPTablesOptions struct {
	// FullSyncInterval: a sync that comes this long or longer after the
	// last full sync is itself a full sync. Zero means
	// DefaultFullSyncInterval; a negative value makes every sync full.
	FullSyncInterval time.Duration
	// Logger receives one debug record per sync; nil discards.
	Logger *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
	// Conntrack deletes the connection-tracking entries of UDP and SCTP
	// flows that a sync made stale; nil means NetlinkConntrack{}, in the
	// network namespace of the calling thread (the one the iptables
	// Client programs).
	Conntrack Conntrack
}

// IPTablesStats describes what one sync did in one family.
type IPTablesStats struct {
	Family lb.IPFamily
	// Full reports a full sync: every owned chain rewritten, stale chains
	// found in the kernel deleted, hooks re-ensured.
	Full bool
	// Ports is the number of service ports in the family; Changed the
	// number whose rules were rebuilt.
	Ports, Changed int
	// ChainsWritten and ChainsDeleted count the chains of the restore;
	// Rules the rules it wrote (hooks it inserted included); Bytes its
	// size.
	ChainsWritten, ChainsDeleted, Rules, Bytes int
	// FlowsDeleted counts the conntrack entries removed after the restore
	// (UDP and SCTP flows to removed endpoints, or to services that
	// regained endpoints; in a full sync, also flows translated to
	// anything but a port's current endpoints).
	FlowsDeleted int
}

// ErrNoEngine is returned when the services need an IP family for which
// the syncer was given no iptables engine.
var ErrNoEngine = errors.New("nat: no engine for this IP family")

// IPTables programs services into iptables with kube-proxy's layout: one
// iptables-restore --noflush per family per sync, rewriting only the chains
// of service ports that changed (a partial sync), with a periodic full sync
// that repairs drift. It owns the chains that start with Config.Prefix and
// the hook rules it adds to the built-in chains, and nothing else.
//
// An IPTables is safe for concurrent use; syncs are serialized.
type IPTables struct {
	cfg     Config
	names   *names
	engines map[lb.IPFamily]iptables.Interface
	opts    IPTablesOptions
	log     *slog.Logger

	mu      sync.Mutex
	hasher  *portHasher
	state   map[lb.IPFamily]*iptState
	bufs    map[lb.IPFamily]*iptables.Buffer
	scratch map[lb.IPFamily]*iptables.Buffer
}

// iptState is what the syncer believes is in the kernel for one family
// after its last successful sync.
type iptState struct {
	ports  map[string]*portRules                            // by Port.Key
	global map[iptables.Table]map[iptables.ChainName]uint64 // hash of each shared chain's text
	valid  bool                                             // false: the next sync must be full
	// lastFull is when this family's last full restore was applied (zero:
	// never). Each family keeps its own, so that a failure in one family,
	// or in a conntrack cleanup after the rules were applied, does not make
	// every later sync of the other family full.
	lastFull time.Time
}

// NewIPTables returns a syncer that programs IPv4 through v4 and IPv6
// through v6 (either may be nil when the node runs one family only; a
// service port of that family is then an error matching ErrNoEngine). The
// configuration is checked at once.
func NewIPTables(cfg Config, v4, v6 iptables.Interface, opts IPTablesOptions) (*IPTables, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n, err := newNames(cfg)
	if err != nil {
		return nil, err
	}
	s := &IPTables{
		cfg: cfg, names: n, opts: opts,
		engines: map[lb.IPFamily]iptables.Interface{},
		hasher:  newPortHasher(),
		state:   map[lb.IPFamily]*iptState{},
		bufs:    map[lb.IPFamily]*iptables.Buffer{},
		scratch: map[lb.IPFamily]*iptables.Buffer{},
	}
	for fam, e := range map[lb.IPFamily]iptables.Interface{lb.IPv4: v4, lb.IPv6: v6} {
		if e == nil || reflect.ValueOf(e).IsNil() {
			continue
		}
		if e.Family() != iptFamily(fam) {
			return nil, fmt.Errorf("nat: the %s engine programs %s", fam, e.Family())
		}
		s.engines[fam] = e
		s.state[fam] = &iptState{}
		s.bufs[fam] = iptables.NewBuffer(iptFamily(fam))
		s.scratch[fam] = iptables.NewBuffer(iptFamily(fam))
	}
	if len(s.engines) == 0 {
		return nil, fmt.Errorf("nat: %w: neither an IPv4 nor an IPv6 engine", ErrNoEngine)
	}
	s.log = opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Config returns the effective configuration (defaults filled in).
func (s *IPTables) Config() Config { return s.cfg }

func (s *IPTables) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

// Sync compiles services (see Compile) and programs them: a partial sync
// that rewrites only the chains of changed service ports, or a full sync
// when the family's full-sync interval has passed, its previous sync
// failed, or this is its first sync. On invalid input nothing is applied.
//
// The families are applied one after the other, IPv4 first, each with its
// own restore; they are not one transaction. A restore the kernel refuses
// leaves that family's tables as they were (the error is an
// *iptables.RestoreError with the offending line) and makes that family's
// next sync full. So if the IPv6 restore is refused after the IPv4 one
// succeeded, IPv4's new rules stay in force (as in kube-proxy) and are not
// rolled back. The returned stats list only the families whose rules were
// applied, also when an error follows (a failed conntrack cleanup after
// the restore).
func (s *IPTables) Sync(ctx context.Context, services []ServiceEndpoints) ([]IPTablesStats, error) {
	return s.sync(ctx, services, false)
}

// FullSync is Sync forced to be a full sync.
func (s *IPTables) FullSync(ctx context.Context, services []ServiceEndpoints) ([]IPTablesStats, error) {
	return s.sync(ctx, services, true)
}

func (s *IPTables) sync(ctx context.Context, services []ServiceEndpoints, forceFull bool) ([]IPTablesStats, error) {
	plan, err := Compile(s.cfg, services)
	if err != nil {
		return nil, err
	}
	for _, p := range plan.Ports {
		if s.engines[p.Family] == nil {
			return nil, fmt.Errorf("%w: %s (%s)", ErrNoEngine, p.Family, p.Key)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	interval := s.opts.FullSyncInterval
	if interval == 0 {
		interval = DefaultFullSyncInterval
	}
	var stats []IPTablesStats
	var errs []error
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		if s.engines[fam] == nil {
			continue
		}
		last := s.state[fam].lastFull
		full := forceFull || last.IsZero() || interval < 0 || now.Sub(last) >= interval
		st, applied, err := s.syncFamily(ctx, fam, plan.Family(fam), full, now)
		if applied {
			// The family's rules are in force even if an error follows
			// (a failed conntrack cleanup): its stats say what was done.
			stats = append(stats, st)
			s.log.Debug("iptables sync", "family", fam, "full", st.Full, "ports", st.Ports, "changed", st.Changed,
				"chainsWritten", st.ChainsWritten, "chainsDeleted", st.ChainsDeleted, "rules", st.Rules, "bytes", st.Bytes,
				"flowsDeleted", st.FlowsDeleted)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("nat: %s sync: %w", fam, err))
		}
	}
	return stats, errors.Join(errs...)
}

// renderer writes one family's restore text for a sync, streaming: the
// rules of each rebuilt port go into the buffer as soon as they are built
// and are not kept, so a cold sync of a large cluster never holds more than
// one port's typed rules at a time.
type renderer struct {
	s     *IPTables
	fam   lb.IPFamily
	buf   *iptables.Buffer
	b     *ipBuilder
	stats IPTablesStats
}

// chains writes the declarations of chains, then their rules, into the
// open table.
func (r *renderer) chains(chains []iptables.Chain) error {
	for i := range chains {
		if err := r.buf.DeclareChain(chains[i].Name); err != nil {
			return err
		}
	}
	for i := range chains {
		c := &chains[i]
		for j := range c.Rules {
			if err := r.buf.AppendRule(c.Name, &c.Rules[j]); err != nil {
				return fmt.Errorf("chain %s rule %d: %w", c.Name, j, err)
			}
		}
		r.stats.Rules += len(c.Rules)
	}
	r.stats.ChainsWritten += len(chains)
	return nil
}

// tableEdit is what a sync does to one table besides writing chains.
type tableEdit struct {
	table  iptables.Table
	delete []iptables.ChainName
	insert []iptables.ChainRule
}

// render writes a sync of ports into r.buf and returns the new state.
// old is the state of the previous sync (ignored when full). When full,
// saves holds iptables-save text of each table, to find stale chains and
// missing hooks; nil saves (a dry run) finds neither.
func (r *renderer) render(ports []Port, old *iptState, full bool, saves map[iptables.Table][]byte) (*iptState, error) {
	s := r.s
	st := &iptState{ports: make(map[string]*portRules, len(ports)),
		global: map[iptables.Table]map[iptables.ChainName]uint64{iptables.TableNAT: {}, iptables.TableFilter: {}}}
	r.stats.Ports = len(ports)
	r.stats.Full = full

	// nat: the masquerade chain first (port chains jump to it), then each
	// rebuilt port's chains, then the shared chains that changed, then
	// deletions and hooks.
	natStart := r.buf.Len()
	if err := r.buf.StartTable(iptables.TableNAT); err != nil {
		return nil, err
	}
	natBody := r.buf.Len()
	if full {
		if err := r.buf.DeclareChain(s.names.markMasq); err != nil {
			return nil, err
		}
	}
	ordered := make([]*portRules, 0, len(ports))
	var stale []iptables.ChainName
	for i := range ports {
		p := &ports[i]
		h := s.hasher.port(p)
		prev := old.ports[p.Key]
		if !full && prev != nil && prev.hash == h {
			st.ports[p.Key] = prev
			ordered = append(ordered, prev)
			continue
		}
		pr, chains, err := r.b.port(p)
		if err != nil {
			return nil, err
		}
		pr.hash = h
		if err := r.chains(chains); err != nil {
			return nil, err
		}
		r.stats.Changed++
		st.ports[p.Key] = pr
		ordered = append(ordered, pr)
		if !full && prev != nil {
			stale = append(stale, iptables.Stale(prev.chains, pr.chains)...)
		}
	}
	if !full {
		for key, prev := range old.ports {
			if st.ports[key] == nil {
				stale = append(stale, prev.chains...)
			}
		}
	}
	natGlobal, fltGlobal := r.b.globalChains(ordered)
	edits := []tableEdit{{table: iptables.TableNAT}, {table: iptables.TableFilter}}
	if full && saves != nil {
		desired := map[iptables.Table][]iptables.ChainName{}
		for _, pr := range ordered {
			desired[iptables.TableNAT] = append(desired[iptables.TableNAT], pr.chains...)
		}
		for _, c := range natGlobal {
			desired[iptables.TableNAT] = append(desired[iptables.TableNAT], c.Name)
		}
		for _, c := range fltGlobal {
			desired[iptables.TableFilter] = append(desired[iptables.TableFilter], c.Name)
		}
		for i := range edits {
			e := &edits[i]
			e.delete = iptables.Stale(iptables.ListChainNames(saves[e.table], s.cfg.Prefix), desired[e.table])
			e.insert = missingHooks(saves[e.table], s.names.hooks(), e.table)
		}
	} else {
		edits[0].delete = stale
	}
	for ti, globals := range [][]iptables.Chain{natGlobal, fltGlobal} {
		e := &edits[ti]
		tableStart, bodyStart := natStart, natBody
		if ti == 1 {
			tableStart = r.buf.Len()
			if err := r.buf.StartTable(iptables.TableFilter); err != nil {
				return nil, err
			}
			bodyStart = r.buf.Len()
		}
		var changed []iptables.Chain
		for _, c := range globals {
			h, err := s.chainHash(r.fam, e.table, &c)
			if err != nil {
				return nil, err
			}
			st.global[e.table][c.Name] = h
			if full || old.global[e.table][c.Name] != h {
				changed = append(changed, c)
			}
		}
		for i := range changed {
			if full && e.table == iptables.TableNAT && changed[i].Name == s.names.markMasq {
				continue // declared at the start of the table
			}
			if err := r.buf.DeclareChain(changed[i].Name); err != nil {
				return nil, err
			}
		}
		for i := range changed {
			c := &changed[i]
			for j := range c.Rules {
				if err := r.buf.AppendRule(c.Name, &c.Rules[j]); err != nil {
					return nil, fmt.Errorf("chain %s rule %d: %w", c.Name, j, err)
				}
			}
			r.stats.Rules += len(c.Rules)
		}
		r.stats.ChainsWritten += len(changed)
		for _, c := range e.delete {
			if err := r.buf.DeclareChain(c); err != nil { // flush before -X
				return nil, err
			}
		}
		for i := len(e.insert) - 1; i >= 0; i-- { // each goes to position 1
			if err := r.buf.InsertRule(e.insert[i].Chain, &e.insert[i].Rule); err != nil {
				return nil, err
			}
		}
		r.stats.Rules += len(e.insert)
		for _, c := range e.delete {
			if err := r.buf.DeleteChain(c); err != nil {
				return nil, err
			}
		}
		r.stats.ChainsDeleted += len(e.delete)
		// A table with nothing to do is left out of the restore.
		if r.buf.Len() == bodyStart {
			r.buf.Truncate(tableStart)
			continue
		}
		if err := r.buf.Commit(); err != nil {
			return nil, err
		}
	}
	st.valid = true
	return st, nil
}

// syncFamily syncs one family. applied reports that its rules are in force
// (the restore succeeded or there was nothing to write), even when err
// then reports a failed conntrack cleanup.
func (s *IPTables) syncFamily(ctx context.Context, fam lb.IPFamily, ports []Port, full bool, now time.Time) (stats IPTablesStats, applied bool, err error) {
	st := s.state[fam]
	eng := s.engines[fam]
	full = full || !st.valid
	var saves map[iptables.Table][]byte
	if full {
		saves = map[iptables.Table][]byte{}
		for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
			save, err := eng.SaveText(ctx, t)
			if err != nil {
				return IPTablesStats{Family: fam, Full: full}, false, err
			}
			saves[t] = save
		}
	}
	buf := s.bufs[fam]
	buf.Reset()
	if full {
		buf.Grow(estimateSize(ports))
	}
	r := &renderer{s: s, fam: fam, buf: buf, b: newIPBuilder(s.cfg, fam, s.names), stats: IPTablesStats{Family: fam}}
	next, err := r.render(ports, st, full, saves)
	if err != nil {
		return r.stats, false, err
	}
	r.stats.Bytes = buf.Len()
	st.valid = false // until the restore is known good
	if buf.Len() > 0 {
		if err := eng.Restore(ctx, buf); err != nil {
			return r.stats, false, err
		}
	}
	next.lastFull = st.lastFull
	if full {
		next.lastFull = now
	}
	s.state[fam] = next
	// Only after the new rules are in force: a flow deleted earlier would
	// be tracked again at once through the old ones.
	var stale []FlowFilter
	for key, pr := range next.ports {
		var old *portFlows
		if prev := st.ports[key]; prev != nil {
			old = prev.flows
		}
		if prev := st.ports[key]; prev == pr {
			continue // unchanged
		}
		stale = append(stale, staleFlows(old, pr.flows)...)
	}
	for key, prev := range st.ports {
		if next.ports[key] == nil {
			stale = append(stale, staleFlows(prev.flows, nil)...)
		}
	}
	if full {
		all := make([]*portFlows, 0, len(next.ports))
		for _, pr := range next.ports {
			all = append(all, pr.flows)
		}
		stale = append(stale, reconcileFlows(all)...)
	}
	if len(stale) > 0 {
		ct := s.opts.Conntrack
		if ct == nil {
			ct = NetlinkConntrack{}
		}
		n, err := ct.Delete(ctx, fam, stale)
		r.stats.FlowsDeleted = n
		if err != nil {
			// The rules are in force; only the cleanup failed.
			return r.stats, true, err
		}
	}
	return r.stats, true, nil
}

// estimateSize guesses the restore text size of a full sync of ports, so
// that the buffer grows once instead of doubling its way to tens of
// megabytes. A kube-proxy-shaped ruleset measures about 400 bytes per port
// and 430 per endpoint (its SEP chain and its line in the SVC chain); the
// guess errs on the large side.
func estimateSize(ports []Port) int {
	n := 4096
	for i := range ports {
		n += 800 + 500*len(ports[i].Endpoints.Reachable)
	}
	return n
}

// chainHash renders c alone and hashes the text, to tell whether a shared
// chain changed since the last sync.
func (s *IPTables) chainHash(fam lb.IPFamily, t iptables.Table, c *iptables.Chain) (uint64, error) {
	b := s.scratch[fam]
	b.Reset()
	if err := b.StartTable(t); err != nil {
		return 0, err
	}
	if err := b.DeclareChain(c.Name); err != nil {
		return 0, err
	}
	for i := range c.Rules {
		if err := b.AppendRule(c.Name, &c.Rules[i]); err != nil {
			return 0, fmt.Errorf("chain %s rule %d: %w", c.Name, i, err)
		}
	}
	if err := b.Commit(); err != nil {
		return 0, err
	}
	return maphash.Bytes(s.hasher.seed, b.Bytes()), nil
}

// missingHooks returns the hooks of table t that the iptables-save text
// does not hold, in hooks order.
func missingHooks(save []byte, hooks []hook, t iptables.Table) []iptables.ChainRule {
	found := foundHooks(save, hooks, t)
	var out []iptables.ChainRule
	for i, h := range hooks {
		if h.table == t && !found[i] {
			out = append(out, iptables.ChainRule{Chain: h.chain, Rule: h.rule})
		}
	}
	return out
}

// foundHooks reports, for each of hooks, whether it belongs to table t and
// the iptables-save text holds it. A hook is recognised by its exact save
// line, which the typed rule renders canonically. Only the wanted lines
// become map keys; each line of the save (tens of megabytes for a large
// cluster) is looked up without being copied.
func foundHooks(save []byte, hooks []hook, t iptables.Table) []bool {
	want := make(map[string][]int, len(hooks))
	for i, h := range hooks {
		if h.table == t {
			line := "-A " + string(h.chain) + " " + h.rule.String()
			want[line] = append(want[line], i)
		}
	}
	found := make([]bool, len(hooks))
	for line := range bytes.Lines(save) {
		if idx, ok := want[string(bytes.TrimSuffix(line, []byte("\n")))]; ok {
			for _, i := range idx {
				found[i] = true
			}
		}
	}
	return found
}

// Render returns, per family, the iptables-restore text a full sync of
// services would apply, without touching the kernel or the syncer's state:
// for dry runs, reviews and golden tests. (A real full sync also deletes
// stale chains and inserts missing hooks, which it learns from the kernel.)
func (s *IPTables) Render(services []ServiceEndpoints) (map[lb.IPFamily][]byte, error) {
	plan, err := Compile(s.cfg, services)
	if err != nil {
		return nil, err
	}
	s.mu.Lock() // the hasher and the scratch buffer are shared with syncs
	defer s.mu.Unlock()
	out := map[lb.IPFamily][]byte{}
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		if s.engines[fam] == nil {
			continue
		}
		ports := plan.Family(fam)
		buf := iptables.NewBuffer(iptFamily(fam))
		buf.Grow(estimateSize(ports))
		r := &renderer{s: s, fam: fam, buf: buf, b: newIPBuilder(s.cfg, fam, s.names)}
		if _, err := r.render(ports, &iptState{}, true, nil); err != nil {
			return nil, err
		}
		out[fam] = buf.Bytes()
	}
	return out, nil
}

// Cleanup removes everything the syncer owns from every family: the hook
// rules in the built-in chains and every chain whose name starts with the
// prefix, with one iptables-save per table and one restore per family (so
// it stays quick at any size: a per-rule tool reads the whole table back
// for every rule it deletes). Rules and chains of others are left as they
// are. The next Sync is a full sync.
func (s *IPTables) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		eng := s.engines[fam]
		if eng == nil {
			continue
		}
		s.state[fam] = &iptState{}
		if err := s.cleanupFamily(ctx, fam, eng); err != nil {
			errs = append(errs, fmt.Errorf("nat: %s cleanup: %w", fam, err))
		}
	}
	return errors.Join(errs...)
}

func (s *IPTables) cleanupFamily(ctx context.Context, fam lb.IPFamily, eng iptables.Interface) error {
	buf := iptables.NewBuffer(iptFamily(fam))
	hooks := s.names.hooks()
	for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		save, err := eng.SaveText(ctx, t)
		if err != nil {
			return err
		}
		chains := iptables.ListChainNames(save, s.cfg.Prefix)
		found := foundHooks(save, hooks, t)
		var present []hook
		for i, h := range hooks {
			if found[i] {
				present = append(present, h)
			}
		}
		if len(chains) == 0 && len(present) == 0 {
			continue
		}
		if err := buf.StartTable(t); err != nil {
			return err
		}
		for i := range present {
			if err := buf.DeleteRule(present[i].chain, &present[i].rule); err != nil {
				return err
			}
		}
		for _, c := range chains { // flush all first: they jump to each other
			if err := buf.DeclareChain(c); err != nil {
				return err
			}
		}
		for _, c := range chains {
			if err := buf.DeleteChain(c); err != nil {
				return err
			}
		}
		if err := buf.Commit(); err != nil {
			return err
		}
	}
	if buf.Len() == 0 {
		return nil
	}
	return eng.Restore(ctx, buf)
}
