// Package iptables is a typed engine for Linux iptables (the kernel's
// x_tables, programmed through the iptables 1.8 tools on either of their
// backends: legacy setsockopt or nf_tables).
//
// It is a generic building block, useful on its own: it knows rules,
// chains and tables, not services. (lbkit's nat package compiles services
// into rules for it.)
//
// # Rules
//
// A Rule is a struct: basic matches (Addr, Iface, ProtoMatch, Fragment),
// extension matches in order (Comment, Ports, Statistic, MarkMatch,
// AddrType, Recent, Conntrack, RawMatch) and a target (Verdict, Jump,
// Goto, Reject, DNAT, SNAT, Masquerade, Mark, RawTarget). A Rule renders
// exactly as iptables-save prints it back, so that render → iptables-restore
// → iptables-save → ParseDump gives back equal typed rules (the tier-2
// tests prove it on the kernel, for both backends and both families).
// Values that have several spellings in iptables have one here: the
// probability of the statistic match is the kernel's 2^-31 integer, MARK is
// always --set-xmark, defaults that iptables prints explicitly are the zero
// value.
//
// # Names
//
// ChainNamer derives stable chain names from a key the way kube-proxy names
// KUBE-SVC-/KUBE-SEP- chains (SHA-256, base32, first 16 characters), with a
// configurable prefix so that lbkit's chains never collide with those of a
// kube-proxy on the same node. Names longer than the kernel's 28 bytes are
// refused with a *ChainNameError.
//
// # Rendering and applying
//
// A Sync describes one iptables-restore --noflush run: per table, the
// user-defined chains to declare and rewrite (declaring a chain under
// --noflush flushes it) and the stale chains to flush and delete; every
// other chain — built-in chains, other programs' chains, the caller's
// unchanged chains — is left alone. That is a partial sync; a periodic
// full sync (every chain the caller owns, plus Stale of ListChains) is the
// caller's choice. Sync.Render writes into a Buffer, a reusable line buffer
// that renders without allocating once grown.
//
// Client applies a Sync with ONE iptables-restore --noflush --wait (or
// ip6tables-restore) fed on stdin — never one exec per rule — on the
// detected backend, or on a forced one through iptables-legacy-restore /
// iptables-nft-restore. iptables-restore commits each table atomically: a
// refused restore leaves that table as it was, and the *RestoreError
// carries the line iptables-restore blamed and its text. Single rules that
// must live in built-in chains (the jump from PREROUTING to the program's
// chain) are managed with go-iptables: EnsureJump, EnsureRule, DeleteJump.
// A Client needs CAP_NET_ADMIN in its network namespace and the iptables
// 1.8 binaries (iptables-restore, iptables-save and their legacy/nft
// variants); New returns an error matching ErrBinaryNotFound without them.
// Rendering, parsing and Fake need neither.
//
// # Injection
//
// Comments may hold quotes, backslashes and any printable UTF-8: they are
// quoted and escaped exactly as iptables-save does, and read back
// unchanged. Newlines, tabs and other control characters, invalid UTF-8 and
// comments longer than 255 bytes (which iptables would silently truncate)
// are rejected: iptables-restore has no escape for a newline, so a comment
// holding one could end the rule and start another. SanitizeComment turns
// any string into an acceptable comment. Chain names, recent-list names and
// interface names are printed verbatim by iptables-save, so they are
// restricted to safe bytes and rejected otherwise, never escaped.
//
// # Testing callers
//
// Fake implements Interface in memory with the semantics of
// iptables-restore --noflush (and is tested against the kernel with the
// same inputs), so code built on this package can be unit-tested without
// root: apply, then compare Dump with a golden iptables-save text.
package iptables
