// Package nftables is a typed engine for one nftables table: it programs
// the Linux kernel's nf_tables (the netfilter packet classification
// framework behind the nft tool) through netlink with
// github.com/google/nftables, one atomic batch per change, and renders the
// same changes as `nft -f` scripts for dry runs and golden tests. It never
// runs nft to apply anything.
//
// # Objects
//
// A Ruleset is the content of the owned Table: Chains (regular ones, and
// base chains attached to a netfilter hook) holding Rules, and named Sets
// and maps (Set with Data) with their Elements. Keys and data are typed
// (Type) and may be concatenations, such as
// ipv4_addr . inet_proto . inet_service : verdict for a service dispatch
// map. A Rule is a list of statements (Stmt) from a closed set: matches
// (Match, NFProtoMatch, MarkMatch, FibLocal, CtState, CtStatus, Lookup) and actions
// (Counter, SetMark, DNAT, DNATMap, SNAT, Masquerade, Verdict, VMap,
// Reject, SetUpdate). Maps can be indexed by packet fields (Concat), by a
// random number (Numgen, `numgen random mod N`) or by a hash of fields
// (JHash, for consistent hashing). Every statement renders itself as nft
// text and compiles to kernel expressions, adding the `meta nfproto` and
// `meta l4proto` guards nft adds in an inet table.
//
// # Applying
//
// Engine implements Interface on the kernel; Fake implements it in memory
// with the kernel's semantics and a Dump as nft text, for tests of code
// built on the engine. Apply sends a Transaction (add or delete tables,
// chains, rules, sets and elements; flush chains and sets) as one netlink
// batch: the kernel commits all of it or none of it. Sync computes the
// difference between the last applied Ruleset and a new one (Diff) and
// sends only that, so that a change to one service touches only its
// elements and chains. Read returns what the kernel holds, decoded back
// into the same types (in the form Canonical describes), for drift
// detection; Reconcile uses it to repair drift. Cleanup deletes the owned
// table and nothing else. Bad input is refused with a *ValidationError
// before anything is sent; a refused batch is a *KernelError wrapping the
// errno. A batch whose acknowledgements were lost after it was sent may
// or may not have been committed: its error matches ErrOutcomeUnknown, and
// the engine reads the kernel again before its next Sync. Read of a table
// that does not exist matches ErrNotFound. Dial and the kernel operations
// need CAP_NET_ADMIN in the target network namespace; Render, Diff,
// Validate and Fake need nothing.
//
// # Batches and their cost
//
// google/nftables sends a batch in one sendmsg call and asks for an
// acknowledgement of every message. The kernel processes the whole batch
// inside that call, so the batch must fit the socket's send buffer, and
// all acknowledgements are queued before the first is read, so they must
// fit its receive buffer: otherwise sendmsg fails with EMSGSIZE, or the
// acknowledgements overflow with ENOBUFS after the kernel has committed.
// Dial's engine sizes both buffers for each batch with SO_SNDBUFFORCE and
// SO_RCVBUFFORCE (CAP_NET_ADMIN). Element lists are split into messages
// below 64 KiB, because google/nftables v0.3.0 silently truncates longer
// netlink attributes.
//
// Every commit walks all chains of all tables of the namespace once
// (nf_tables_commit), some 10-20 ns per chain. A commit that adds a rule
// with a jump, a NAT or another validated expression, or a verdict map
// element that jumps, also revalidates the table: a walk from every base
// chain through every chain it can reach, measured at about 0.6 µs per
// reachable chain at 1 000 chains and 1.5 µs at 20 000 (7 ms and 29 ms per
// commit at 10 000 and 20 000 service chains). A commit that only adds and
// deletes elements of a data map (such as a map from numgen slots to
// backend address . port) skips that validation: about 0.2 ms at 10 000
// chains. Binding a map to a rule walks the elements it holds, and each
// element added is checked against every rule bound to the map, so
// batches are ordered chains, empty sets, rules, elements, and a map
// should not be shared by thousands of rules. Design rulesets so that
// frequent changes are element changes.
//
// # Limitations inherited from google/nftables v0.3.0
//
//   - It cannot write nft's typeof metadata, so a map keyed or valued by a
//     TypeInteger (numgen or jhash output) is listed by nft as "type 0";
//     the renderer declares it with `typeof numgen random mod 1`. Integers
//     are therefore refused inside concatenations, where nft would also
//     misprint the elements.
//   - It marks every anonymous set big-endian: nft lists the integer keys
//     of an anonymous map (`numgen random mod 2 vmap { 0 : ..., 1 : ... }`)
//     byte-swapped (1 shows as 16777216) and interface names as empty
//     strings. The kernel's data is right; several interface names in one
//     match are refused (use a named set).
//   - Its hash expression omits a zero seed, which makes the kernel pick a
//     random one, so JHash requires a non-zero Seed.
//   - Names that are nft keywords ("snat", "counter", "tcp", ...) are
//     refused, because nft 1.0.6 cannot parse a script using them.
//
// Kernel features used: nf_tables tables, chains, rules, sets, maps,
// verdict maps, interval sets, dynamic sets with timeouts, and the
// payload, meta, cmp, bitwise, lookup, dynset, numgen, hash, fib, ct, nat,
// masq, reject, counter and immediate expressions.
package nftables
