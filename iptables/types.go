package iptables

import (
	"fmt"
	"strings"
)

// Family is the address family a client, a buffer or a rule speaks:
// iptables programs IPv4, ip6tables programs IPv6.
type Family uint8

// The two families. The zero value is IPv4.
const (
	IPv4 Family = iota
	IPv6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// Valid reports whether f is IPv4 or IPv6.
func (f Family) Valid() bool { return f == IPv4 || f == IPv6 }

// command returns the iptables binary base name of the family.
func (f Family) command() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// Table is an iptables table name.
type Table string

// The tables of the kernel's iptables (x_tables) for IPv4 and IPv6.
const (
	TableFilter   Table = "filter"
	TableNAT      Table = "nat"
	TableMangle   Table = "mangle"
	TableRaw      Table = "raw"
	TableSecurity Table = "security"
)

// allTables returns every table in the order the Fake prints them (the
// order iptables-legacy-save uses).
func allTables() [5]Table {
	return [5]Table{TableFilter, TableMangle, TableNAT, TableRaw, TableSecurity}
}

// Valid reports whether t is one of the five x_tables tables.
func (t Table) Valid() bool {
	switch t {
	case TableFilter, TableMangle, TableNAT, TableRaw, TableSecurity:
		return true
	}
	return false
}

// BuiltinChains returns the built-in chains of t in the order iptables-save
// prints them, or nil when t is not a valid table.
func (t Table) BuiltinChains() []ChainName {
	switch t {
	case TableFilter, TableSecurity:
		return []ChainName{ChainInput, ChainForward, ChainOutput}
	case TableNAT:
		return []ChainName{ChainPrerouting, ChainInput, ChainOutput, ChainPostrouting}
	case TableMangle:
		return []ChainName{ChainPrerouting, ChainInput, ChainForward, ChainOutput, ChainPostrouting}
	case TableRaw:
		return []ChainName{ChainPrerouting, ChainOutput}
	}
	return nil
}

// HasBuiltin reports whether c is a built-in chain of t.
func (t Table) HasBuiltin(c ChainName) bool {
	for _, b := range t.BuiltinChains() {
		if b == c {
			return true
		}
	}
	return false
}

// ChainName is the name of an iptables chain, built-in or user-defined.
type ChainName string

// The built-in chains (netfilter hooks).
const (
	ChainPrerouting  ChainName = "PREROUTING"
	ChainInput       ChainName = "INPUT"
	ChainForward     ChainName = "FORWARD"
	ChainOutput      ChainName = "OUTPUT"
	ChainPostrouting ChainName = "POSTROUTING"
)

// MaxChainNameLen is the longest chain name iptables accepts: the kernel's
// XT_EXTENSION_MAXNAMELEN (29) minus the terminating NUL.
const MaxChainNameLen = 28

// IsBuiltin reports whether c names one of the five netfilter hooks.
func (c ChainName) IsBuiltin() bool {
	switch c {
	case ChainPrerouting, ChainInput, ChainForward, ChainOutput, ChainPostrouting:
		return true
	}
	return false
}

// isReservedTarget reports whether a user-defined chain may not take name
// because iptables would read it as a verdict or as a well-known target;
// iptables itself refuses a chain name that clashes with any loadable target
// ("chain name may not clash with target name").
func isReservedTarget(name string) bool {
	switch name {
	case "ACCEPT", "DROP", "RETURN", "QUEUE",
		"DNAT", "SNAT", "MASQUERADE", "MARK", "REJECT",
		"LOG", "NFLOG", "NFQUEUE", "REDIRECT", "CONNMARK",
		"CT", "NOTRACK", "TRACE", "TPROXY", "TCPMSS",
		"CLASSIFY", "DSCP", "TOS", "TTL", "HL",
		"SET", "AUDIT", "CHECKSUM", "CONNSECMARK",
		"SECMARK", "NETMAP", "CLUSTERIP", "IDLETIMER",
		"LED", "RATEEST", "SYNPROXY", "TEE", "ULOG",
		"ECN", "HMARK", "NFCT":
		return true
	}
	return false
}

// Validate checks that c can be declared as a user-defined chain: 1 to 28
// bytes of ASCII letters, digits, '-', '_' and '.', not starting with '-',
// not a built-in chain and not the name of a verdict or target. Chain names
// are rejected rather than escaped because iptables-save prints them
// verbatim. The error is a *ChainNameError.
func (c ChainName) Validate() error {
	if err := c.validateRef(); err != nil {
		return err
	}
	if c.IsBuiltin() {
		return &ChainNameError{Name: string(c), Err: ErrChainNameBuiltin}
	}
	return nil
}

// validateRef checks c as something a rule may name (a user chain; built-in
// chains are not jump targets either, but that is the caller's check).
func (c ChainName) validateRef() error {
	s := string(c)
	if s == "" {
		return &ChainNameError{Name: s, Err: ErrChainNameInvalid, Reason: "empty"}
	}
	if len(s) > MaxChainNameLen {
		return &ChainNameError{Name: s, Err: ErrChainNameTooLong,
			Reason: fmt.Sprintf("%d bytes, iptables allows at most %d", len(s), MaxChainNameLen)}
	}
	if s[0] == '-' {
		return &ChainNameError{Name: s, Err: ErrChainNameInvalid, Reason: "starts with '-'"}
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return &ChainNameError{Name: s, Err: ErrChainNameInvalid,
				Reason: fmt.Sprintf("byte %q at offset %d is not a letter, digit, '-', '_' or '.'", s[i], i)}
		}
	}
	if isReservedTarget(s) {
		return &ChainNameError{Name: s, Err: ErrChainNameInvalid, Reason: "clashes with a target name"}
	}
	return nil
}

func isNameByte(b byte) bool { return nameBytes[b] }

// nameBytes marks the bytes allowed in chain names; a table, because every
// jump of every rule is checked and a sync renders hundreds of thousands.
var nameBytes = func() (t [256]bool) {
	for b := 0; b < 256; b++ {
		c := byte(b)
		t[b] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.'
	}
	return t
}()

// HasPrefix reports whether c starts with prefix.
func (c ChainName) HasPrefix(prefix string) bool { return strings.HasPrefix(string(c), prefix) }

// Policy is the policy of a chain: ACCEPT or DROP for a built-in chain, "-"
// (PolicyNone) for a user-defined chain.
type Policy string

// Chain policies as iptables-save prints them.
const (
	PolicyAccept Policy = "ACCEPT"
	PolicyDrop   Policy = "DROP"
	PolicyNone   Policy = "-"
)

// Backend is the kernel interface the iptables binaries program: the legacy
// x_tables setsockopt interface or nf_tables through iptables-nft.
type Backend string

// The backends. BackendAuto lets the system's default iptables binaries
// (Debian's alternatives) decide and reports what they use.
const (
	BackendAuto   Backend = ""
	BackendLegacy Backend = "legacy"
	BackendNFT    Backend = "nf_tables"
)

// String returns "legacy", "nf_tables" or "auto".
func (b Backend) String() string {
	if b == BackendAuto {
		return "auto"
	}
	return string(b)
}

// binary returns the name of tool ("", "-restore" or "-save") for family f
// on backend b: iptables-restore, iptables-legacy-restore,
// ip6tables-nft-save, ...
func (b Backend) binary(f Family, tool string) string {
	base := f.command()
	switch b {
	case BackendLegacy:
		return base + "-legacy" + tool
	case BackendNFT:
		return base + "-nft" + tool
	}
	return base + tool
}

// Position says where EnsureRule puts a rule that is missing.
type Position int

// Prepend inserts the rule as the first of the chain; Append adds it last.
const (
	Prepend Position = iota
	Append
)

// String returns "prepend" or "append".
func (p Position) String() string {
	if p == Append {
		return "append"
	}
	return "prepend"
}
