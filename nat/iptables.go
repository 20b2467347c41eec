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

	mu       sync.Mutex
	hasher   *portHasher
	state    map[lb.IPFamily]*iptState
	lastFull time.Time
	bufs     map[lb.IPFamily]*iptables.Buffer
	scratch  map[lb.IPFamily]*iptables.Buffer
}

// iptState is what the syncer believes is in the kernel for one family
// after its last successful sync.
type iptState struct {
	ports  map[string]*portRules                            // by Port.Key
	global map[iptables.Table]map[iptables.ChainName]uint64 // hash of each shared chain's text
	valid  bool                                             // false: the next sync must be full
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
// when the full-sync interval has passed, the previous sync failed, or this
// is the first sync. On invalid input nothing is applied. A restore the
// kernel refuses leaves that table as it was (the error is an
// *iptables.RestoreError with the offending line) and makes the next sync
// full.
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
	full := forceFull || s.lastFull.IsZero() || interval < 0 || now.Sub(s.lastFull) >= interval
	var stats []IPTablesStats
	var errs []error
	allFull := true
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		if s.engines[fam] == nil {
			continue
		}
		st, err := s.syncFamily(ctx, fam, plan.Family(fam), full)
		if err != nil {
			errs = append(errs, fmt.Errorf("nat: %s sync: %w", fam, err))
			continue
		}
		allFull = allFull && st.Full
		stats = append(stats, st)
		s.log.Debug("iptables sync", "family", fam, "full", st.Full, "ports", st.Ports, "changed", st.Changed,
			"chainsWritten", st.ChainsWritten, "chainsDeleted", st.ChainsDeleted, "rules", st.Rules, "bytes", st.Bytes)
	}
	if len(errs) > 0 {
		return stats, errors.Join(errs...)
	}
	if allFull {
		s.lastFull = now
	}
	return stats, nil
}

// builtPort is one port's rules in a sync, and whether they were rebuilt.
type builtPort struct {
	rules   *portRules
	changed bool
}

// build returns the rules of every port of a family in plan order, reusing
// those of unchanged ports from old (nil for a rebuild from scratch).
func (s *IPTables) build(fam lb.IPFamily, ports []Port, old map[string]*portRules) (map[string]*portRules, []builtPort, error) {
	b := newIPBuilder(s.cfg, fam, s.names)
	byKey := make(map[string]*portRules, len(ports))
	built := make([]builtPort, 0, len(ports))
	for i := range ports {
		p := &ports[i]
		h := s.hasher.port(p)
		pr := old[p.Key]
		changed := pr == nil || pr.hash != h
		if changed {
			var err error
			if pr, err = b.port(p); err != nil {
				return nil, nil, err
			}
			pr.hash = h
		}
		byKey[p.Key] = pr
		built = append(built, builtPort{rules: pr, changed: changed})
	}
	return byKey, built, nil
}

func (s *IPTables) syncFamily(ctx context.Context, fam lb.IPFamily, ports []Port, full bool) (IPTablesStats, error) {
	st := s.state[fam]
	eng := s.engines[fam]
	full = full || !st.valid
	stats := IPTablesStats{Family: fam, Full: full, Ports: len(ports)}

	old := st.ports
	if full {
		old = nil
	}
	byKey, built, err := s.build(fam, ports, old)
	if err != nil {
		return stats, err
	}
	ordered := make([]*portRules, len(built))
	for i, bp := range built {
		ordered[i] = bp.rules
		if bp.changed {
			stats.Changed++
		}
	}
	natGlobal, fltGlobal := newIPBuilder(s.cfg, fam, s.names).globalChains(ordered)

	natSync := iptables.TableSync{Table: iptables.TableNAT}
	fltSync := iptables.TableSync{Table: iptables.TableFilter}
	newGlobal := map[iptables.Table]map[iptables.ChainName]uint64{
		iptables.TableNAT: {}, iptables.TableFilter: {},
	}
	for _, g := range []struct {
		ts     *iptables.TableSync
		chains []iptables.Chain
	}{{&natSync, natGlobal}, {&fltSync, fltGlobal}} {
		for _, c := range g.chains {
			h, err := s.chainHash(fam, g.ts.Table, &c)
			if err != nil {
				return stats, err
			}
			newGlobal[g.ts.Table][c.Name] = h
			if full || st.global[g.ts.Table][c.Name] != h {
				g.ts.Chains = append(g.ts.Chains, c)
			}
		}
	}

	// Per-port chains: all of them on a full sync, those of changed
	// ports otherwise; chains of the old state that are gone are deleted.
	desired := map[iptables.ChainName]bool{}
	for _, pr := range ordered {
		for _, c := range pr.chains {
			desired[c.Name] = true
		}
	}
	for _, bp := range built {
		if full || bp.changed {
			natSync.Chains = append(natSync.Chains, bp.rules.chains...)
		}
	}
	if full {
		for _, g := range natGlobal {
			desired[g.Name] = true
		}
		fltDesired := map[iptables.ChainName]bool{}
		for _, g := range fltGlobal {
			fltDesired[g.Name] = true
		}
		// One iptables-save per table tells which of our chains exist
		// (stale ones are deleted) and which hooks are missing (they are
		// inserted by the same restore).
		for _, tbl := range []struct {
			ts      *iptables.TableSync
			desired map[iptables.ChainName]bool
		}{{&natSync, desired}, {&fltSync, fltDesired}} {
			save, err := eng.SaveText(ctx, tbl.ts.Table)
			if err != nil {
				return stats, err
			}
			tbl.ts.Delete = staleChains(iptables.ListChainNames(save, s.cfg.Prefix), tbl.desired)
			tbl.ts.Insert = missingHooks(save, s.names.hooks(), tbl.ts.Table)
		}
	} else {
		for _, pr := range st.ports {
			for _, c := range pr.chains {
				if !desired[c.Name] {
					natSync.Delete = append(natSync.Delete, c.Name)
				}
			}
		}
	}

	sync := &iptables.Sync{Tables: []iptables.TableSync{natSync, fltSync}}
	buf := s.bufs[fam]
	buf.Reset()
	if err := sync.Render(buf); err != nil {
		return stats, err
	}
	stats.ChainsWritten = len(natSync.Chains) + len(fltSync.Chains)
	stats.ChainsDeleted = len(natSync.Delete) + len(fltSync.Delete)
	stats.Rules = sync.NumRules()
	stats.Bytes = buf.Len()
	st.valid = false // until the restore and the hooks are known good
	if buf.Len() > 0 {
		if err := eng.Restore(ctx, buf); err != nil {
			return stats, err
		}
	}
	st.ports = byKey
	st.global = newGlobal
	st.valid = true
	return stats, nil
}

func staleChains(existing []iptables.ChainName, desired map[iptables.ChainName]bool) []iptables.ChainName {
	var out []iptables.ChainName
	for _, c := range existing {
		if !desired[c] {
			out = append(out, c)
		}
	}
	return out
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
// does not hold, in hooks order. A hook is recognised by its exact save
// line, which the typed rule renders canonically.
func missingHooks(save []byte, hooks []hook, t iptables.Table) []iptables.ChainRule {
	present := map[string]bool{}
	for line := range bytes.Lines(save) {
		if bytes.HasPrefix(line, []byte("-A ")) {
			present[string(bytes.TrimRight(line, "\n"))] = true
		}
	}
	var out []iptables.ChainRule
	for _, h := range hooks {
		if h.table != t {
			continue
		}
		if !present["-A "+string(h.chain)+" "+h.rule.String()] {
			out = append(out, iptables.ChainRule{Chain: h.chain, Rule: h.rule})
		}
	}
	return out
}

// Render returns, per family, the iptables-restore text a full sync of
// services would apply, without touching the kernel or the syncer's state:
// for dry runs, reviews and golden tests. (A real full sync also deletes
// stale chains it finds in the kernel, and ensures the hooks.)
func (s *IPTables) Render(services []ServiceEndpoints) (map[lb.IPFamily][]byte, error) {
	plan, err := Compile(s.cfg, services)
	if err != nil {
		return nil, err
	}
	out := map[lb.IPFamily][]byte{}
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		if s.engines[fam] == nil {
			continue
		}
		ports := plan.Family(fam)
		b := newIPBuilder(s.cfg, fam, s.names)
		var ordered []*portRules
		natSync := iptables.TableSync{Table: iptables.TableNAT}
		for i := range ports {
			pr, err := b.port(&ports[i])
			if err != nil {
				return nil, err
			}
			ordered = append(ordered, pr)
		}
		natGlobal, fltGlobal := b.globalChains(ordered)
		natSync.Chains = append(natSync.Chains, natGlobal...)
		for _, pr := range ordered {
			natSync.Chains = append(natSync.Chains, pr.chains...)
		}
		sync := &iptables.Sync{Tables: []iptables.TableSync{natSync, {Table: iptables.TableFilter, Chains: fltGlobal}}}
		buf := iptables.NewBuffer(iptFamily(fam))
		if err := sync.Render(buf); err != nil {
			return nil, err
		}
		out[fam] = append([]byte(nil), buf.Bytes()...)
	}
	return out, nil
}

// Cleanup removes everything the syncer owns from every family: the hook
// rules in the built-in chains, then every chain whose name starts with the
// prefix, in one restore per family. Rules and chains of others are left
// as they are. The next Sync is a full sync.
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
		for _, h := range s.names.hooks() {
			if err := eng.DeleteRule(ctx, h.table, h.chain, &h.rule); err != nil {
				errs = append(errs, fmt.Errorf("nat: %s cleanup: hook %s/%s: %w", fam, h.table, h.chain, err))
			}
		}
		var sync iptables.Sync
		for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
			chains, err := eng.ListChains(ctx, t, s.cfg.Prefix)
			if err != nil {
				errs = append(errs, fmt.Errorf("nat: %s cleanup: %w", fam, err))
				continue
			}
			if len(chains) > 0 {
				sync.Tables = append(sync.Tables, iptables.TableSync{Table: t, Delete: chains})
			}
		}
		if len(sync.Tables) > 0 {
			if err := eng.Apply(ctx, &sync); err != nil {
				errs = append(errs, fmt.Errorf("nat: %s cleanup: %w", fam, err))
			}
		}
	}
	s.lastFull = time.Time{}
	return errors.Join(errs...)
}
