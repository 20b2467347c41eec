// Package lb is the vocabulary and the algorithms of lbkit: the service
// model every engine compiles from, its validation, the endpoint-selection
// rules, schedulers and weighted Maglev hashing. It is pure Go: no
// syscalls, no exec, no root, no package state. Invalid input is reported
// with errors matching ErrInvalid (a *ValidationError for services and
// endpoints, listing every problem with its field path); a scheduler with
// no backend that can take a flow returns ErrNoBackend.
//
// # Model
//
// Service, ServicePort, Endpoint and their helpers follow Kubernetes'
// Service and EndpointSlice semantics without importing Kubernetes:
// netip addresses throughout, dual-stack (one cluster IP per family, see
// IPFamily), service types ClusterIP, NodePort and LoadBalancer,
// load-balancer ingress IPs with an ipMode (VIP or Proxy, KEP-1860),
// session affinity, external and internal traffic policies, published
// not-ready addresses and a same-zone traffic distribution. Zero values mean
// the Kubernetes defaults. ServicePortName gives a port its kube-proxy
// identity ("namespace/name:port").
//
// ValidateService and ValidateEndpoints report every problem at once in a
// *ValidationError, one *FieldError per problem with its Kubernetes field
// path (for example "spec.ports[1].nodePort: 80 is outside 30000-32767").
// Accepted names are DNS labels, so they are safe to place in iptables
// comments and nft rules.
//
// # Resolution and endpoint selection
//
// Resolve (or a Resolver carrying the node and the node-port range) turns a
// Service and its endpoints into one ResolvedPort per service port and IP
// family: the port's identity, every frontend (cluster IP, node port,
// external IPs, load-balancer IPs with their ipMode), source ranges,
// affinity, the effective policies, and an EndpointSelection with the
// target port resolved per endpoint. The selection follows kube-proxy's
// rules (pkg/proxy/topology.go): ready endpoints; when none is ready
// anywhere, the serving-and-terminating ones (graceful termination,
// KEP-1669); all endpoints when the service publishes not-ready addresses;
// Local policies use this node's endpoints and report VerdictDrop when it
// has none; PreferSameZone narrows cluster traffic to the node's zone unless
// the zone has no ready endpoint or some ready endpoint has no zone (no
// topology hint); a port with no usable endpoint anywhere reports
// VerdictReject.
//
// As in kube-proxy, each family stands alone: external IPs and VIP-mode
// load-balancer IPs count only in their own family, so whether a port takes
// external traffic, its effective external policy and masquerading are
// decided per family (a dual-stack service with only an IPv4 external IP
// takes no external traffic on IPv6). Input Kubernetes produces is valid:
// endpoints both ready and terminating (publishNotReadyAddresses), one
// address in several endpoints (merged per address and port), addresses of
// a family the service has no cluster IP for (ignored), and endpoint ports
// named after the service port, as EndpointSlices carry them (see
// Endpoint.Ports).
//
// # Probability chains
//
// ProbabilityChain gives the conditional probabilities of an iptables
// "statistic --mode random" chain for weighted endpoints, and Probability
// formats them exactly as they appear on a kube-proxy node: kube-proxy
// writes "%0.10f", the xt_statistic match stores lround(p·2^31) and
// iptables-save prints that with "%.11f", which is why three endpoints show
// 0.33333333349.
//
// # Schedulers
//
// NewScheduler returns, behind the small Scheduler interface, the IPVS
// algorithms under their IPVS names (rr, wrr, lc, wlc, sh, dh, sed, nq; see
// net/netfilter/ipvs/ip_vs_*.c in Linux), weighted Maglev as mh, and a
// weighted random scheduler. The IPVS ones reproduce the kernel's
// arithmetic: wrr's gcd stepping (with an optional smooth variant), the
// 256·active+inactive overhead of lc and wlc, the (active+1)/weight of sed
// and nq, and the 256-bucket tables and hash_32 of sh and dh, fallback
// included.
//
// A weight of 0 means different things on the two sides, as it does in
// Kubernetes and IPVS: an Endpoint's Weight of 0 is the default weight 1,
// while a Backend's or MaglevBackend's Weight of 0 is a drained backend
// that takes no new flows. Build backends from Endpoint.EffectiveWeight,
// not Endpoint.Weight.
//
// # Weighted Maglev
//
// Maglev (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer", NSDI 2016) fills a prime-sized table by letting backends
// take turns claiming their next preferred free slot, each backend's
// preferences being the permutation (offset + j·skip) mod M derived from a
// hash of its key. NewMaglev builds such a table, of any prime size from 2
// to 2^24 (65537 by default; small sizes like 251 or 1021 suit kernel
// maps), with these changes:
//
//   - Weights: each backend's number of slots is fixed first, by
//     largest-remainder apportionment of M by weight, so it is always its
//     exact share rounded down or up. Backends then take turns in rounds,
//     each claiming in proportion to its quota, until all quotas are met.
//   - Order and history independence: backends are sorted by key, and ties
//     broken by key-derived values, so the same set of backends gives the
//     same table on every node.
//   - Speed: the table is filled with a free-slot bitmap and a branch-free
//     modulo; once fewer than about sqrt(M) slots are free, a scanner finds
//     the slot a permutation walk would reach first directly (from each free
//     slot's rank in the permutation, via the modular inverse of skip)
//     instead of walking about M/F slots to find one of F free slots. The
//     table is identical to the walk's; a test checks it.
//
// Maglev.Update builds the table for a new set of backends from the
// previous table instead of from scratch: each slot whose backend remains
// keeps it, up to the backend's new quota; only the slots of removed
// backends and the excess of backends whose share shrank are freed, and
// backends short of their quota claim them along their permutations. The
// quotas' extra slots are handed, where there is a choice, to backends that
// already held them, so nothing else moves. A change therefore moves the
// minimum any table with exact shares must move: removing one of 1000
// equal backends from a 65537-slot table moves that backend's 66 slots
// (0.10%), where a rebuild moves 0.74% (0.68% for the paper's algorithm;
// figures of BenchmarkMaglevRemoveOne).
// The price is history: an updated table depends on the table it came from,
// so nodes that must agree on every flow either apply the same sequence of
// updates from the same start, or all use NewMaglev.
//
// Lookup takes a 64-bit flow hash and maps it to a slot with Lemire's
// multiply-shift range reduction (the high word of hash·M) rather than a
// 64-bit modulo; Lookup32 and Slot32 do the same for 32-bit hashes and
// equal the kernel's reciprocal_scale, which nftables uses for
// "jhash ... mod M". Table exposes the slots for loading into a kernel map.
package lb
