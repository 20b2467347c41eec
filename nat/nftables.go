package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net/netip"
	"sync"
	"time"

	"github.com/lbkit/lbkit/lb"
	"github.com/lbkit/lbkit/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultNFTablesTable is the table NewNFTables's callers usually give the
// engine: lbkit's own, in the inet family (IPv4 and IPv6 together).
var DefaultNFTablesTable = nftables.Table{Family: nftables.FamilyINet, Name: "lbkit"}

// DefaultEndpointMaps is how many endpoint maps per family the nftables
// layout spreads the service ports over. The kernel checks every element
// added to a map against every rule bound to the map, and finds sets by
// name in a list, so neither one map for all ports nor one per port scales
// to 10 000 services; a hundred or so shards keep both costs small.
const DefaultEndpointMaps = 128

// Consistent hashing defaults.
const (
	// DefaultConsistentSeed is the jhash seed when ConsistentHashing.Seed
	// is zero ("lbkt"). Every node must use the same seed.
	DefaultConsistentSeed uint32 = 0x6c626b74
	// DefaultConsistentTableSize is the Maglev table size M of a service
	// port when ConsistentHashing.TableSize is zero: a prime, about 100
	// slots per endpoint for ten endpoints. See ConsistentHashing.TableSize
	// for what a larger or smaller table costs and gains.
	DefaultConsistentTableSize = 1021
)

// ConsistentHashing makes NFTables choose a new connection's endpoint by a
// hash of the flow (the kernel's jhash, seeded) into a Maglev table that
// package lb computes from the endpoints alone (lb.NewMaglev), instead of
// at random. Every node that runs lbkit with the same settings and the same
// endpoints picks the same endpoint for the same flow, whichever node the
// flow reaches, and when an endpoint goes away only the flows it served
// move. Weights are honoured to within one slot of the table.
//
// A port's table is lb.NewMaglev of its endpoints, each keyed by its
// "address:port" (lb.Target's String) with its weight, so it depends only
// on the set of endpoints; slot s of the table is the endpoint of the
// flows whose hash reduces to s (lb.Maglev.Slot32: the kernel's `jhash ...
// mod M`).
type ConsistentHashing struct {
	// Seed of the hash; 0 means DefaultConsistentSeed. Every node must
	// use the same.
	Seed uint32
	// TableSize is M, the number of slots of each service port's table:
	// a prime from 2 to 65521; 0 means DefaultConsistentTableSize (1021).
	// A port with more endpoints than M uses the smallest prime at least
	// four times its endpoint count, at most 65521; a port with more than
	// 65521 endpoints is refused (an error matching lb.ErrInvalid that
	// names it, before anything is applied). Ports with ClientIP affinity
	// use the same size.
	//
	// The trade-off: M is the number of map elements each service port
	// (and family) holds in the kernel, and is sent whole in a cold sync,
	// while a larger M spreads flows more evenly (each endpoint owns M/N
	// slots, give or take one) and moves fewer flows when an endpoint
	// comes or goes. The table must be rebuilt from the endpoints alone
	// (so that every node computes the same one), and a fresh Maglev
	// table moves more than the leaving endpoint's share. Share of flows
	// that move when 1 of 10 equal endpoints is removed (ideal 10%), and
	// when 1 of 50 is (ideal 2%), from lb.NewMaglev:
	//
	//	M        elements/port   1 of 10   1 of 50
	//	251          251          13.5%      9.2%
	//	1021        1021          11.5%      7.8%
	//	4093        4093          11.0%      4.3%
	//	16381      16381          10.5%      3.0%
	//	65537      65537          10.3%      2.4%  (largest allowed: 65521)
	//
	// At 10 000 service ports the default is about 10 million elements
	// per family; choose 251 when the element count matters more than
	// the disruption, or a larger M for ports with many endpoints. Every
	// node must use the same M.
	TableSize int
	// SourceOnly hashes the client address alone, so that all connections
	// of a client go to one endpoint on every node (affinity without
	// state); otherwise the address and the source port are hashed (each
	// flow on its own). Services with ClientIP affinity always hash the
	// address alone.
	SourceOnly bool
}

func (c *ConsistentHashing) seed() uint32 {
	if c.Seed == 0 {
		return DefaultConsistentSeed
	}
	return c.Seed
}

// tableSize returns M for a port with n endpoints: TableSize, or for more
// endpoints than that the smallest prime at least 4n, at most
// nftMaxTableSize (the caller refuses n > M).
func (c *ConsistentHashing) tableSize(n int) int {
	m := c.TableSize
	if m == 0 {
		m = DefaultConsistentTableSize
	}
	if n > m {
		m = nftMaxTableSize
		if n <= nftMaxTableSize/4 {
			m = smallestPrimeAtLeast(4 * n)
		}
	}
	return m
}

// NFTablesOptions configure an NFTables syncer.
type NFTablesOptions struct {
	// FullSyncInterval: a sync that comes this long or longer after the
	// last full sync is itself a full sync. Zero means
	// DefaultFullSyncInterval; a negative value makes every sync full.
	FullSyncInterval time.Duration
	// EndpointMaps is the number of endpoint maps per family
	// (DefaultEndpointMaps when zero, at most 4096). Balancing chain i
	// (a port's service chain, and its local chain under a Local policy)
	// owns the 65536 keys from (i/S)*65536 in map i mod S, so S maps hold
	// at most S*65536 balancing chains per family: 8 388 608 with the
	// default, 65536 with 1; a sync that needs more is refused with an
	// error matching lb.ErrInvalid, before anything is applied.
	//
	// The count is a kernel-cost trade-off: the kernel checks every
	// element added to a map against every rule bound to the map, and
	// finds a set by name by walking the table's list of sets. At 10 000
	// services × 10 endpoints a cold sync took 17 s with one map, 5.5 s
	// with one per port, and 1.0–1.8 s with 16 to 1000 maps (1.0 s with
	// 128). Ports with ClientIP affinity do not use these maps (see
	// NFTables).
	EndpointMaps int
	// Consistent, when set, chooses endpoints by consistent hashing (see
	// ConsistentHashing) instead of at random.
	Consistent *ConsistentHashing
	// Conntrack deletes the connection-tracking entries of UDP and SCTP
	// flows that a sync made stale (flows translated to a removed endpoint,
	// flows to the frontends of a port that regained endpoints; in a full
	// sync, flows translated to anything but a port's current endpoints),
	// as IPTables does. nil means the kernel's, through netlink, in the
	// network namespace of the engine when the engine tells it (it
	// implements NetNSer, as an *nftables.Engine dialled with
	// nftables.WithNetNS does; a netlink socket is opened there for each
	// cleanup).
	//
	// Otherwise nil means NetlinkConntrack{}, which works in the network
	// namespace of the thread that calls Sync: right when the engine
	// programs that same namespace, but with an engine of your own that
	// programs another namespace it would delete the entries of the
	// caller's namespace (possibly the node's root namespace) and leave
	// the engine's stale. Give such an engine
	// NetlinkConntrack{Handle: <a netlink handle in its namespace>}.
	Conntrack Conntrack
	// Logger receives one debug record per sync; nil discards.
	Logger *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// NFTablesStats describes what one sync did.
type NFTablesStats struct {
	// Full reports a full sync: the whole desired table diffed against
	// what the kernel holds, read afresh, which repairs drift.
	Full bool
	// Ports is the number of service ports (per family) programmed;
	// Changed the number whose rules were built anew (the ports of the
	// services that were added or changed: all of them in a cold sync),
	// Removed the number that went away.
	Ports, Changed, Removed int
	// Ops is the number of operations in the batch sent (0: nothing was
	// sent, the table already held the desired state).
	Ops int
	// FlowsDeleted counts the conntrack entries removed after the batch
	// (UDP and SCTP flows to removed endpoints, or to ports that regained
	// endpoints; in a full sync, also flows translated to anything but a
	// port's current endpoints).
	FlowsDeleted int
	// Compile is the time the compilation took (Compile of the services
	// that changed, and the checks against the others), Build the time to
	// build the ruleset or the delta, Apply the time of the engine's call
	// (with a full sync, the read of the kernel's table and the diff
	// included).
	Compile, Build, Apply time.Duration
}

// NFTables programs services into one nftables table that lbkit owns (an
// inet table, IPv4 and IPv6 together) through the nftables engine, one
// netlink batch per sync, with the semantics of IPTables (kube-proxy's)
// in the layout of kube-proxy's nftables mode, made O(1) per packet and
// per endpoint change:
//
//   - The nat base chains jump to "services", which dispatches with one
//     verdict map per family keyed by destination address . protocol .
//     port ("service-ips4") to the port's chain, and traffic to a local
//     address with a map keyed by protocol . port ("service-nodeports4").
//     A packet pays the same for the first and the ten-thousandth service.
//   - A port's chain ("service4-<hash>-ns/name/proto/port", "local4-..."
//     for the Local policy's endpoints) marks cluster-IP traffic from
//     outside the cluster CIDR for masquerading and DNATs with one rule:
//     `numgen random mod W offset B map @endpoints4-NNN`, the port owning
//     slots B..B+W-1 of one of a few shared endpoint maps, each endpoint
//     weight/gcd slots, so weights are exact (or, with ConsistentHashing,
//     `jhash ... mod M` into a Maglev table). Chains grow with ports, not
//     endpoints, and an endpoint that changes address or port is one
//     element deleted and one added, which the kernel commits without
//     revalidating the table. A port owns at most 65536 slots: weights
//     whose sum (divided by their greatest common divisor) is larger are
//     apportioned, each within one slot of its share, and a port with
//     more endpoints than slots (65536; 65521 with ConsistentHashing) is
//     refused.
//   - "external4-..." chains handle external traffic as kube-proxy's EXT
//     chains do (masquerade under Cluster; short-circuit of pod and node
//     traffic under Local, `fib saddr type local`), "firewall4-..." chains
//     drop load-balancer traffic from outside the source ranges (filter
//     chains in the prerouting and output hooks, before DNAT).
//   - Hairpin traffic (an endpoint reaching itself through the service) is
//     masqueraded in postrouting by a lookup of saddr . daddr in a set of
//     endpoint . endpoint pairs; marked packets are masqueraded.
//   - Ports without endpoints are rejected, and Local policies without a
//     local endpoint dropped, by verdict maps in filter chains
//     (kube-proxy's endpoints-check): in the output hook, before DNAT, for
//     the node's own traffic; in the input and forward hooks, after the
//     prerouting DNAT, for traffic that enters the node. They still see
//     the frontend there because a frontend that is rejected or dropped
//     has no dispatch element, so nothing translated it.
//   - ClientIP affinity uses, for the ports that ask for it, one dynamic
//     set per endpoint (the clients it served, with the timeout) and one
//     chain per endpoint (remember the client, DNAT), as kube-proxy does,
//     and one verdict map per service (or local) chain, slot : goto
//     endpoint chain ("service-slots4-...", "local-slots4-..."), sized as
//     the slots of other ports are (exact weights; the Maglev table with
//     ConsistentHashing), so that an endpoint change is an element change
//     there too. A map per port, not shared ones: such a port already adds
//     a set and a chain per endpoint, so one more set adds little to the
//     kernel's name lookups, while a shared map of jumping verdicts would
//     be walked whole whenever the kernel revalidates the table.
//   - Load-balancer IPs with ipMode Proxy are not intercepted.
//
// A sync compiles the services (Compile), builds the fragment of every
// port whose resolved form changed, and sends one batch that touches only
// those ports' chains and elements (a partial sync). A full sync (the first,
// after FullSyncInterval, after a failure, or FullSync) builds the whole
// table and lets the engine diff it against what the kernel holds, read
// afresh, so drift is repaired; on an empty table that is the cold sync: one
// batch, so the table goes from nothing to everything in one commit with no
// intermediate state. The engine sizes its socket buffers for batches of
// any size. A batch the kernel refuses changes nothing, and makes the next
// sync full.
//
// The syncer owns the engine's table, whole, and touches nothing else: a
// full sync makes the table hold exactly what it describes, and Cleanup
// deletes it. Config.Prefix, which scopes what an IPTables syncer owns,
// plays no part here; two NFTables syncers on one node need two tables
// (nftables.Table names), and must not share one.
//
// Forwarded traffic and other tables: the kernel runs the base chains of
// every table on a hook, and a packet any of them drops is dropped; an
// accept ends only the chain it is in. On a node whose iptables FORWARD
// policy is DROP (Docker sets it), service traffic this syncer DNATs to an
// endpoint on another host, or in a network the node routes to, is
// forwarded, and that other table drops it, whatever lbkit's table says
// (kube-proxy's nftables mode has the same limitation). The IPTables
// syncer does not have it: it accepts such traffic in LBK-FORWARD, inside
// the FORWARD chain itself. On such a node its owner must accept the
// translated traffic there, for example
//
//	iptables -I FORWARD -m conntrack --ctstate DNAT -j ACCEPT
//	ip6tables -I FORWARD -m conntrack --ctstate DNAT -j ACCEPT
//
// (with Docker, in its DOCKER-USER chain instead of FORWARD), or set the
// policy to ACCEPT. The syncer does neither: it touches only its table.
//
// An NFTables is safe for concurrent use; syncs are serialized.
type NFTables struct {
	cfg          Config
	eng          nftables.Interface
	opts         NFTablesOptions
	b            nftBuilder
	log          *slog.Logger
	ct           Conntrack
	globalChains []nftables.Chain
	globalSets   []nftables.Set

	mu       sync.Mutex
	fp       *fingerprinter
	gen      uint64
	mem      map[lb.ServiceName]*compiled       // by service
	claims   map[claimKey]claimOwner            // frontends in use
	nports   int                                // service ports programmed
	hairpin  map[lb.IPFamily]map[netip.Addr]int // users of each hairpin element
	shards   map[lb.IPFamily]map[uint32]int     // slots using each endpoint map
	ids      idAlloc
	valid    bool // the kernel holds what mem describes
	lastFull time.Time
}

// NewNFTables returns a syncer that programs the table of eng, which must
// be an inet table (use nftables.Dial(nat.DefaultNFTablesTable) on a node,
// nftables.NewFake in tests). The configuration and options are checked at
// once; errors match lb.ErrInvalid.
func NewNFTables(cfg Config, eng nftables.Interface, opts NFTablesOptions) (*NFTables, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, fmt.Errorf("nat: NewNFTables needs an nftables engine: %w", lb.ErrInvalid)
	}
	if t := eng.Table(); t.Family != nftables.FamilyINet {
		return nil, fmt.Errorf("nat: the nftables table %s must be in the inet family, to hold IPv4 and IPv6: %w", t, lb.ErrInvalid)
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	shards := opts.EndpointMaps
	if shards == 0 {
		shards = DefaultEndpointMaps
	}
	s := &NFTables{
		cfg: cfg, eng: eng, opts: opts,
		b:   nftBuilder{cfg: cfg, opts: nftOptions{shards: uint32(shards), consistent: opts.Consistent}},
		fp:  newFingerprinter(),
		log: opts.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ct = opts.Conntrack
	if s.ct == nil {
		s.ct = defaultConntrack(eng)
	}
	s.globalChains, s.globalSets = s.b.globals()
	s.reset()
	return s, nil
}

// NetNSer is implemented by engines that know the network namespace they
// program (*nftables.Engine: the descriptor given to nftables.WithNetNS).
// NewNFTables uses it to delete conntrack entries in that namespace.
type NetNSer interface {
	NetNS() (fd int, ok bool)
}

// defaultConntrack is the Conntrack of NFTablesOptions.Conntrack nil: in the
// engine's namespace when it tells, else in the calling thread's.
func defaultConntrack(eng nftables.Interface) Conntrack {
	if n, ok := eng.(NetNSer); ok {
		if fd, ok := n.NetNS(); ok {
			return nsConntrack{fd: fd}
		}
	}
	return NetlinkConntrack{}
}

// nsConntrack is NetlinkConntrack in the namespace fd refers to, with a
// netlink handle opened there for each call (and closed after), so that
// the syncer holds no socket between syncs.
type nsConntrack struct{ fd int }

func (c nsConntrack) Delete(ctx context.Context, family lb.IPFamily, filters []FlowFilter) (int, error) {
	if len(filters) == 0 {
		return 0, nil
	}
	// Only the netfilter family: a request of another family would go to
	// a socket of the calling thread's namespace.
	h, err := netlink.NewHandleAt(netns.NsHandle(c.fd), unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("nat: conntrack in the engine's namespace: %w", err)
	}
	defer h.Close()
	return NetlinkConntrack{Handle: h}.Delete(ctx, family, filters)
}

func (o *NFTablesOptions) validate() error {
	var fe []*lb.FieldError
	add := func(field, format string, args ...any) {
		fe = append(fe, &lb.FieldError{Field: field, Type: lb.ErrorTypeInvalid, Detail: fmt.Sprintf(format, args...)})
	}
	if o.EndpointMaps < 0 || o.EndpointMaps > 4096 {
		add("endpointMaps", "%d is not in 0..4096", o.EndpointMaps)
	}
	if c := o.Consistent; c != nil && c.TableSize != 0 && (c.TableSize > 65521 || !isPrime(c.TableSize)) {
		add("consistent.tableSize", "%d is not a prime from 2 to 65521", c.TableSize)
	}
	if len(fe) == 0 {
		return nil
	}
	return &lb.ValidationError{Object: "nat.NFTablesOptions", Errors: fe}
}

func (s *NFTables) reset() {
	s.mem = map[lb.ServiceName]*compiled{}
	s.claims = map[claimKey]claimOwner{}
	s.nports = 0
	s.hairpin = map[lb.IPFamily]map[netip.Addr]int{lb.IPv4: {}, lb.IPv6: {}}
	s.shards = map[lb.IPFamily]map[uint32]int{lb.IPv4: {}, lb.IPv6: {}}
	s.ids = idAlloc{}
	s.valid = false
	s.lastFull = time.Time{}
}

// Config returns the effective configuration (defaults filled in).
func (s *NFTables) Config() Config { return s.cfg }

// Table returns the table the syncer programs.
func (s *NFTables) Table() nftables.Table { return s.eng.Table() }

func (s *NFTables) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

// Sync compiles services (see Compile) and programs them: a partial sync
// that sends only the changes of the service ports that changed since the
// last sync, or a full sync when the full-sync interval has passed, the
// previous sync failed, or this is the first sync. Invalid input applies
// nothing; so does a service port the layout cannot hold (too many
// endpoints, or too many balancing chains for EndpointMaps): a
// *lb.ValidationError naming the port. A batch the kernel refuses (an
// *nftables.KernelError) leaves the table as it was and makes the next sync
// full.
//
// The conntrack cleanup runs after the batch is committed. When only it
// fails, Sync returns its error with the new rules already in force and
// the returned stats valid (FlowsDeleted counts what was deleted); the
// flows it could not delete are not retried by later syncs.
func (s *NFTables) Sync(ctx context.Context, services []ServiceEndpoints) (NFTablesStats, error) {
	return s.sync(ctx, services, false)
}

// FullSync is Sync forced to be a full sync: it reads the table from the
// kernel and repairs whatever differs.
func (s *NFTables) FullSync(ctx context.Context, services []ServiceEndpoints) (NFTablesStats, error) {
	return s.sync(ctx, services, true)
}

// nftChange is one service port whose fragment changes in a sync.
type nftChange struct {
	old, new *nftFragment // nil when added, or removed
}

func (s *NFTables) sync(ctx context.Context, services []ServiceEndpoints, forceFull bool) (NFTablesStats, error) {
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	c, err := compileChanged(s.cfg, services, s.fp, s.mem, s.claims, s.gen)
	if err != nil {
		return NFTablesStats{}, err
	}
	st := NFTablesStats{Compile: time.Since(start)}
	now := s.now()
	interval := s.opts.FullSyncInterval
	if interval == 0 {
		interval = DefaultFullSyncInterval
	}
	full := forceFull || !s.valid || s.lastFull.IsZero() || interval < 0 || now.Sub(s.lastFull) >= interval
	st.Full = full

	buildStart := time.Now()
	saved := s.ids.clone()
	frags, changes, err := s.build(c.plan.Ports, &s.ids, c)
	if err != nil {
		s.ids = saved
		return st, err
	}
	st.Ports = s.nports
	type famKey struct {
		fam lb.IPFamily
		key string
	}
	built := map[famKey]bool{}
	for _, ch := range changes {
		if ch.new != nil {
			st.Ports++
			st.Changed++
			built[famKey{ch.new.family.fam, ch.new.key}] = true
		}
	}
	for _, ch := range changes {
		if ch.old != nil {
			st.Ports--
			if !built[famKey{ch.old.family.fam, ch.old.key}] {
				st.Removed++
			}
		}
	}
	var tx *nftables.Transaction
	var hairpin map[lb.IPFamily]map[netip.Addr]int
	var shards map[lb.IPFamily]map[uint32]int
	var applyStart time.Time
	var all []*nftFragment // every port's, in a full sync
	if full {
		var rs *nftables.Ruleset
		all = s.allFragments(c, frags)
		rs, hairpin, shards = s.assemble(all)
		applyStart = time.Now()
		st.Build = applyStart.Sub(buildStart)
		tx, err = s.eng.Reconcile(ctx, rs)
	} else {
		tx = s.delta(changes)
		applyStart = time.Now()
		st.Build = applyStart.Sub(buildStart)
		if !tx.Empty() {
			err = s.eng.Apply(ctx, tx)
		}
	}
	st.Apply = time.Since(applyStart)
	if tx != nil {
		st.Ops = tx.Len()
	}
	if err != nil {
		s.ids = saved
		s.valid = false
		return st, fmt.Errorf("nat: nftables sync: %w", err)
	}
	c.remember(s.mem, s.claims, frags)
	s.commit(changes, hairpin, shards)
	s.nports = st.Ports
	s.valid = true
	if full {
		s.lastFull = now
	}
	// Only after the new rules are in force: a flow deleted earlier would
	// be tracked again at once through the old ones.
	st.FlowsDeleted, err = s.deleteStaleFlows(ctx, changes, all)
	s.log.Debug("nftables sync", "table", s.eng.Table().String(), "full", st.Full, "ports", st.Ports, "changed", st.Changed,
		"removed", st.Removed, "ops", st.Ops, "flowsDeleted", st.FlowsDeleted, "compile", st.Compile, "build", st.Build, "apply", st.Apply)
	if err != nil {
		// The rules are in force; only the cleanup failed.
		return st, err
	}
	return st, nil
}

// deleteStaleFlows deletes the conntrack entries the changes made stale,
// and in a full sync (all holds every port's fragments) those
// reconcileFlows finds, one call per family.
func (s *NFTables) deleteStaleFlows(ctx context.Context, changes []nftChange, all []*nftFragment) (int, error) {
	type famKey struct {
		fam lb.IPFamily
		key string
	}
	olds := map[famKey]*nftFragment{}
	for _, c := range changes {
		if c.old != nil && c.old.flows != nil {
			olds[famKey{c.old.family.fam, c.old.key}] = c.old
		}
	}
	stale := map[lb.IPFamily][]FlowFilter{}
	for _, c := range changes {
		if c.new == nil {
			continue
		}
		k := famKey{c.new.family.fam, c.new.key}
		var old *portFlows
		if o := olds[k]; o != nil {
			old = o.flows
			delete(olds, k)
		}
		stale[k.fam] = append(stale[k.fam], staleFlows(old, c.new.flows)...)
	}
	for k, o := range olds {
		stale[k.fam] = append(stale[k.fam], staleFlows(o.flows, nil)...)
	}
	if all != nil {
		ports := map[lb.IPFamily][]*portFlows{}
		for _, fr := range all {
			ports[fr.family.fam] = append(ports[fr.family.fam], fr.flows)
		}
		for fam, ps := range ports {
			stale[fam] = append(stale[fam], reconcileFlows(ps)...)
		}
	}
	ct := s.ct
	total := 0
	var errs []error
	for _, fam := range []lb.IPFamily{lb.IPv4, lb.IPv6} {
		if len(stale[fam]) == 0 {
			continue
		}
		n, err := ct.Delete(ctx, fam, stale[fam])
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("nat: %s conntrack cleanup: %w", fam, err))
		}
	}
	return total, errors.Join(errs...)
}

// build returns the fragments of ports, by service, allocating slot ids
// from ids: a port keeps the ids its chains had (so that an endpoint change
// touches only its elements). With a compilation, it also returns the
// changes against the syncer's state and frees the ids of chains that went
// away.
func (s *NFTables) build(ports []Port, ids *idAlloc, c *compilation) (map[lb.ServiceName][]*nftFragment, []nftChange, error) {
	frags := map[lb.ServiceName][]*nftFragment{}
	var changes []nftChange
	var old *nftFragment
	b := s.b
	limit := uint64(s.b.opts.shards) * nftSlotsPerChain
	b.slotID = func(chain string) (uint32, error) {
		if old != nil {
			for _, sl := range old.slots {
				if sl.chain == chain {
					return sl.id, nil
				}
			}
		}
		id, ok := ids.alloc(limit)
		if !ok {
			return 0, fmt.Errorf("all %d balancing chains the %d endpoint maps hold are in use (raise NFTablesOptions.EndpointMaps)", limit, s.b.opts.shards)
		}
		return id, nil
	}
	kept := map[uint32]bool{}
	for i := range ports {
		p := &ports[i]
		name := p.Name.ServiceName
		old = nil
		if m := s.mem[name]; m != nil {
			for _, fr := range m.frags {
				if fr.key == p.Key && fr.family.fam == p.Family {
					old = fr
				}
			}
		}
		fr, err := b.port(p)
		if err != nil {
			return nil, nil, err
		}
		fr.key = p.Key
		for _, sl := range fr.slots {
			kept[sl.id] = true
		}
		frags[name] = append(frags[name], fr)
		changes = append(changes, nftChange{new: fr})
	}
	if c == nil {
		return frags, nil, nil
	}
	gone := func(name lb.ServiceName) {
		for _, fr := range s.mem[name].frags {
			for _, sl := range fr.slots {
				if !kept[sl.id] {
					ids.free(sl.id)
				}
			}
			changes = append(changes, nftChange{old: fr})
		}
	}
	for name := range c.changed {
		if s.mem[name] != nil {
			gone(name)
		}
	}
	for _, name := range c.removed {
		gone(name)
	}
	return frags, changes, nil
}

// allFragments returns the fragments of every service after compilation
// c: those of the unchanged services, and frags.
func (s *NFTables) allFragments(c *compilation, frags map[lb.ServiceName][]*nftFragment) []*nftFragment {
	var out []*nftFragment
	for name, m := range s.mem {
		if _, changed := c.changed[name]; !changed && m.gen == c.gen {
			out = append(out, m.frags...)
		}
	}
	for _, fs := range frags {
		out = append(out, fs...)
	}
	return out
}

// commit records a successful sync. A full sync hands over the counts it
// computed; a partial one updates them by its changes.
func (s *NFTables) commit(changes []nftChange, hairpin map[lb.IPFamily]map[netip.Addr]int, shards map[lb.IPFamily]map[uint32]int) {
	if hairpin != nil {
		s.hairpin, s.shards = hairpin, shards
		return
	}
	for _, c := range changes {
		for _, side := range []struct {
			fr   *nftFragment
			sign int
		}{{c.old, -1}, {c.new, 1}} {
			fr, sign := side.fr, side.sign
			if fr == nil {
				continue
			}
			fam := fr.family.fam
			for _, a := range fr.hairpin {
				if s.hairpin[fam][a] += sign; s.hairpin[fam][a] == 0 {
					delete(s.hairpin[fam], a)
				}
			}
			for _, sl := range fr.slots {
				sh := sl.id % s.b.opts.shards
				if s.shards[fam][sh] += sign; s.shards[fam][sh] == 0 {
					delete(s.shards[fam], sh)
				}
			}
		}
	}
}

// assemble returns the whole table for the fragments of every port, and
// the users of each hairpin element and endpoint map.
func (s *NFTables) assemble(frags []*nftFragment) (*nftables.Ruleset, map[lb.IPFamily]map[netip.Addr]int, map[lb.IPFamily]map[uint32]int) {
	hairpin := map[lb.IPFamily]map[netip.Addr]int{lb.IPv4: {}, lb.IPv6: {}}
	shards := map[lb.IPFamily]map[uint32]int{lb.IPv4: {}, lb.IPv6: {}}
	n := len(s.globalChains)
	for _, fr := range frags {
		n += len(fr.chains)
	}
	rs := &nftables.Ruleset{Chains: make([]nftables.Chain, 0, n)}
	rs.Chains = append(rs.Chains, s.globalChains...)
	sets := map[string]*nftables.Set{}
	for _, def := range s.globalSets {
		d := def
		sets[d.Name] = &d
	}
	for _, fr := range frags {
		f := fr.family
		s.b.addFragment(fr, rs, sets)
		for _, a := range fr.hairpin {
			if hairpin[f.fam][a]++; hairpin[f.fam][a] == 1 {
				set := sets[f.set(nftHairpin)]
				set.Elements = append(set.Elements, nftables.E(nftables.Addr(a), nftables.Addr(a)))
			}
		}
		for _, sl := range fr.slots {
			shards[f.fam][sl.id%s.b.opts.shards]++
		}
	}
	for _, set := range sets {
		rs.Sets = append(rs.Sets, *set)
	}
	return rs, hairpin, shards
}

// addFragment adds the chains and sets of a fragment to rs, and its
// elements to the shared maps and endpoint maps in sets (defining an
// endpoint map that is not there yet).
func (b *nftBuilder) addFragment(fr *nftFragment, rs *nftables.Ruleset, sets map[string]*nftables.Set) {
	f := fr.family
	rs.Chains = append(rs.Chains, fr.chains...)
	rs.Sets = append(rs.Sets, fr.sets...)
	for k := range fr.shared {
		if len(fr.shared[k]) > 0 {
			set := sets[f.set(nftSharedNames[k])]
			set.Elements = append(set.Elements, fr.shared[k]...)
		}
	}
	for _, sl := range fr.slots {
		shard := sl.id % b.opts.shards
		set := sets[f.shardMap(shard)]
		if set == nil {
			set = b.shardMapDef(f, shard)
			sets[set.Name] = set
		}
		set.Elements = append(set.Elements, sl.elems...)
	}
}

func (b *nftBuilder) shardMapDef(f *nftFam, shard uint32) *nftables.Set {
	return &nftables.Set{Name: f.shardMap(shard), Key: []nftables.Type{nftables.TypeInteger},
		Data: []nftables.Type{f.addr, nftables.TypeInetService}}
}

// delta returns the batch of a partial sync: the difference between what
// the changed ports contributed and what they contribute now, computed by
// nftables.Diff on two partial rulesets that hold only those ports'
// chains and sets, their elements of the shared maps, and the hairpin
// elements and endpoint maps whose users they change.
func (s *NFTables) delta(changes []nftChange) *nftables.Transaction {
	var oldRS, newRS nftables.Ruleset
	oldSets, newSets := map[string]*nftables.Set{}, map[string]*nftables.Set{}
	for _, def := range s.globalSets {
		o, n := def, def
		oldSets[def.Name], newSets[def.Name] = &o, &n
	}
	type famAddr struct {
		fam  *nftFam
		addr netip.Addr
	}
	type famShard struct {
		fam   *nftFam
		shard uint32
	}
	hairpinDelta := map[famAddr]int{}
	shardDelta := map[famShard]int{}
	var shardOrder []famShard
	side := func(fr *nftFragment, rs *nftables.Ruleset, sets map[string]*nftables.Set, sign int) {
		f := fr.family
		s.b.addFragment(fr, rs, sets)
		for _, a := range fr.hairpin {
			hairpinDelta[famAddr{f, a}] += sign
		}
		for _, sl := range fr.slots {
			fs := famShard{f, sl.id % s.b.opts.shards}
			if _, ok := shardDelta[fs]; !ok {
				shardOrder = append(shardOrder, fs)
			}
			shardDelta[fs] += sign
		}
	}
	for _, c := range changes {
		if c.old != nil {
			side(c.old, &oldRS, oldSets, -1)
		}
		if c.new != nil {
			side(c.new, &newRS, newSets, 1)
		}
	}
	// An endpoint map exists while some slot uses it; its definition is in
	// a partial ruleset when it exists on that side (the elements there are
	// only those of the changed ports).
	for _, fs := range shardOrder {
		name := fs.fam.shardMap(fs.shard)
		before := s.shards[fs.fam.fam][fs.shard]
		after := before + shardDelta[fs]
		if before == 0 {
			delete(oldSets, name)
		} else if oldSets[name] == nil {
			oldSets[name] = s.b.shardMapDef(fs.fam, fs.shard)
		}
		if after == 0 {
			delete(newSets, name)
		} else if newSets[name] == nil {
			newSets[name] = s.b.shardMapDef(fs.fam, fs.shard)
		}
	}
	// A hairpin element exists while some port uses its endpoint.
	for fa, d := range hairpinDelta {
		if d == 0 {
			continue
		}
		before := s.hairpin[fa.fam.fam][fa.addr]
		e := nftables.E(nftables.Addr(fa.addr), nftables.Addr(fa.addr))
		name := fa.fam.set(nftHairpin)
		if before > 0 {
			oldSets[name].Elements = append(oldSets[name].Elements, e)
		}
		if before+d > 0 {
			newSets[name].Elements = append(newSets[name].Elements, e)
		}
	}
	for _, set := range oldSets {
		oldRS.Sets = append(oldRS.Sets, *set)
	}
	for _, set := range newSets {
		newRS.Sets = append(newRS.Sets, *set)
	}
	return nftables.Diff(&oldRS, &newRS)
}

// Render returns the table a full sync of services would make the kernel
// hold, as an nft script (`nft -f` loads it into an empty namespace),
// without touching the kernel or the syncer's state: for dry runs, reviews
// and golden tests. Ports the syncer already programs keep their endpoint
// slots; on a new syncer this is the cold layout.
func (s *NFTables) Render(services []ServiceEndpoints) (string, error) {
	plan, err := Compile(s.cfg, services)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.ids.clone()
	frags, _, err := s.build(plan.Ports, &ids, nil)
	if err != nil {
		return "", err
	}
	var all []*nftFragment
	for _, fs := range frags {
		all = append(all, fs...)
	}
	rs, _, _ := s.assemble(all)
	return nftables.Render(s.eng.Table(), rs), nil
}

// Cleanup deletes the syncer's table (and so everything it programmed) and
// nothing else; the next Sync is a full sync into an empty table.
func (s *NFTables) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
	if err := s.eng.Cleanup(ctx); err != nil {
		return fmt.Errorf("nat: nftables cleanup: %w", err)
	}
	return nil
}

// idAlloc hands out the smallest free slot id: a bitset of ids in use.
type idAlloc struct {
	words []uint64
	hint  int // no free id below word hint
}

// alloc returns the smallest free id below limit, or false when there is
// none.
func (a *idAlloc) alloc(limit uint64) (uint32, bool) {
	for i := a.hint; uint64(i)*64 < limit; i++ {
		if i == len(a.words) {
			a.words = append(a.words, 0)
		}
		if w := a.words[i]; w != ^uint64(0) {
			b := bits.TrailingZeros64(^w)
			id := uint64(i*64 + b)
			if id >= limit {
				return 0, false
			}
			a.words[i] |= 1 << b
			a.hint = i
			return uint32(id), true
		}
	}
	return 0, false
}

func (a *idAlloc) free(id uint32) {
	i := int(id / 64)
	a.words[i] &^= 1 << (id % 64)
	a.hint = min(a.hint, i)
}

func (a *idAlloc) clone() idAlloc {
	return idAlloc{words: append([]uint64(nil), a.words...), hint: a.hint}
}
