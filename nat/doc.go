// Package nat compiles load-balanced services into NAT rules and programs
// them through an engine, with the semantics of kube-proxy.
//
// Compile takes services and their endpoints (package lb's model) and the
// node's Config and returns a Plan: every service port in every IP family,
// resolved for this node — each frontend (cluster IP, node port, external
// IP, load-balancer IP with its ipMode), the endpoints each kind of traffic
// may use under the traffic policies, ClientIP affinity, source ranges, and
// what to do when there is no endpoint. The Plan is engine-neutral.
//
// Two syncers program the services: IPTables (package iptables,
// kube-proxy's iptables layout, below) and NFTables (package nftables, one
// inet table in the layout of kube-proxy's nftables mode with O(1) dispatch
// and endpoint changes; see NFTables). Both need CAP_NET_ADMIN in the
// network namespace they program, and conntrack over netlink for the
// cleanup of UDP and SCTP flows; Compile and the renderers need nothing.
//
// # Errors
//
// Invalid services or configuration are reported before anything is
// applied, all problems joined in one error: *lb.ValidationError,
// *DuplicateServiceError and *ConflictError (two services claim one
// frontend), found with errors.As and all matching lb.ErrInvalid; and
// ErrNoEngine (a family with addresses but no engine). An engine
// that refuses a change returns its own error (*iptables.RestoreError,
// *nftables.KernelError) and leaves the previous rules in place; the next
// sync is a full one.
//
// # The iptables layout
//
// IPTables programs a plan into iptables (package iptables) with
// kube-proxy's chain layout, as `iptables-save -t nat` shows it on a
// kube-proxy node, but under its own prefix ("LBK-" by default) and its own
// masquerade mark so that it can run beside a kube-proxy:
//
//   - nat PREROUTING and OUTPUT jump to LBK-SERVICES, which sends each
//     frontend to its port's chain: LBK-SVC-<hash> (cluster endpoints),
//     LBK-SVL-<hash> (local endpoints, for Local policies), LBK-EXT-<hash>
//     (external traffic: masquerade under the Cluster policy, short-circuit
//     of pod and node traffic under Local) and LBK-FW-<hash> (load-balancer
//     source ranges). Its last rule sends traffic to a local address to
//     LBK-NODEPORTS.
//   - The port's internal chain (SVC, or SVL under internalTrafficPolicy
//     Local) first marks cluster-IP traffic from outside the cluster CIDR
//     for masquerading. An SVC or SVL chain sends clients with ClientIP
//     affinity back to their endpoint (the recent match), then picks an
//     endpoint with a chain of `statistic --mode random --probability` rules
//     whose probabilities honour the endpoint weights exactly
//     (lb.ProbabilityChain).
//   - Under externalTrafficPolicy Local the EXT chain exists whenever the
//     port has endpoints anywhere: traffic from the cluster CIDR and from
//     the node itself goes to the cluster endpoints, the rest to the local
//     ones, or, when this node has none, on to the filter table's DROP.
//   - One LBK-SEP-<hash> chain per endpoint marks hairpin traffic (from the
//     endpoint itself) and DNATs to the endpoint's address and target port.
//   - nat POSTROUTING jumps to LBK-POSTROUTING, which masquerades marked
//     packets (optionally --random-fully).
//   - In the filter table, ports without any endpoint REJECT and Local
//     policies without a local endpoint DROP (LBK-SERVICES,
//     LBK-EXTERNAL-SERVICES), load-balancer traffic from outside the source
//     ranges is dropped (LBK-FIREWALL), and marked or established forwarded
//     traffic is accepted (LBK-FORWARD).
//   - Load-balancer IPs with ipMode Proxy are not intercepted at all.
//
// After a sync, the conntrack entries of UDP and SCTP flows that the change
// made stale are deleted, as kube-proxy does: flows to a port's frontends
// translated to an endpoint the port no longer has, and untranslated flows
// (that met the REJECT) to the frontends of a port that gained endpoints.
// Datagram flows have no end, so a client that keeps its socket would stay
// on its old translation for as long as it keeps sending. A full sync (the
// first of a new syncer, the first after a Cleanup or a failed sync, the
// periodic one) also deletes, whatever the syncer remembers, the flows to
// each frontend of every UDP and SCTP port translated to anything but one
// of the port's current endpoints (through any of its frontends): those
// left by endpoints removed while the proxy was down. For a port without
// endpoints that is every translated flow to its frontends. A node port's
// flows are those to any address on its port number but the cluster,
// external and load-balancer IPs of other ports on that number. Translated
// flows to endpoints still in use are left alone, also by a new syncer that
// takes over rules already in place (a restarted proxy); an endpoint in use
// is a serving one (lb.EndpointSelection.Serving), so the flows of an
// endpoint that is terminating but still serving go on until it stops
// serving or is gone, although new flows no longer reach it. The filters are
// indexed (see NetlinkConntrack), so the table is read once per family and each
// entry checked only against the filters that can match it.
//
// An IPTables sync is one iptables-restore --noflush per family. A sync rewrites
// only the chains of service ports that changed since the previous sync and
// deletes the chains that are gone; every DefaultFullSyncInterval (or after
// a failed sync) a full sync rewrites everything it owns and deletes stale
// chains it finds in the kernel, repairing drift. The syncer never touches a
// chain without its prefix, and of the built-in chains only its own hook
// rules.
package nat
