package iptables

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Use errors.Is; the typed errors below wrap them.
var (
	// ErrInvalid is wrapped by every *ValidationError: the typed input
	// cannot be rendered (nothing was sent to the kernel).
	ErrInvalid = errors.New("invalid iptables input")

	// ErrChainNameTooLong: a chain name is longer than MaxChainNameLen.
	ErrChainNameTooLong = errors.New("chain name too long")
	// ErrChainNameInvalid: a chain name is empty, starts with '-', holds a
	// byte outside [A-Za-z0-9._-] or clashes with a target name.
	ErrChainNameInvalid = errors.New("invalid chain name")
	// ErrChainNameBuiltin: a built-in chain was given where only a
	// user-defined chain may appear (declared, deleted, or jumped to).
	ErrChainNameBuiltin = errors.New("built-in chain not allowed here")

	// ErrSyntax is wrapped by every *ParseError.
	ErrSyntax = errors.New("iptables-save syntax error")

	// ErrRestore is wrapped by every *RestoreError: iptables-restore (or the
	// Fake) refused the input; the table it failed in was left unchanged.
	ErrRestore = errors.New("iptables-restore failed")

	// ErrUnknownChain: a rule or a command names a chain that does not exist.
	ErrUnknownChain = errors.New("no chain by that name")
	// ErrChainInUse: a chain to delete is still the target of a rule.
	ErrChainInUse = errors.New("chain is referenced")
	// ErrChainNotEmpty: a chain to delete still has rules.
	ErrChainNotEmpty = errors.New("chain is not empty")
	// ErrLoop: the jumps of a table form a loop, which the kernel refuses.
	ErrLoop = errors.New("chain jumps form a loop")
	// ErrHook: a target or match is used in a chain reachable from a
	// built-in chain (hook) where the kernel does not allow it, such as
	// DNAT reachable from POSTROUTING.
	ErrHook = errors.New("not allowed in this hook")
	// ErrRuleNotFound: a rule to delete does not exist.
	ErrRuleNotFound = errors.New("no such rule")

	// ErrBinaryNotFound: the iptables binary for the family and backend is
	// not installed.
	ErrBinaryNotFound = errors.New("iptables binary not found")
)

// ValidationError reports typed input that cannot be rendered. Field is the
// path of the offending value, for example
// "tables[0].chains[2].rules[5].matches[1].comment".
type ValidationError struct {
	Field  string
	Reason string
	// Err is a more specific cause (a *ChainNameError, say), or nil.
	Err error
}

// Error implements error.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("iptables: invalid ")
	if e.Field != "" {
		b.WriteString(e.Field)
	} else {
		b.WriteString("input")
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the specific cause and ErrInvalid.
func (e *ValidationError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Err, ErrInvalid}
	}
	return []error{ErrInvalid}
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// inField prefixes the Field of a *ValidationError with prefix ("rules[3]"),
// or wraps any other error in a *ValidationError at prefix.
func inField(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		out := *ve
		switch {
		case out.Field == "":
			out.Field = prefix
		case strings.HasPrefix(out.Field, "["):
			out.Field = prefix + out.Field
		default:
			out.Field = prefix + "." + out.Field
		}
		return &out
	}
	return &ValidationError{Field: prefix, Err: err}
}

func indexed(name string, i int) string { return name + "[" + strconv.Itoa(i) + "]" }

// ChainNameError reports a chain name iptables would refuse or that may not
// be used where it was given. Err is ErrChainNameTooLong,
// ErrChainNameInvalid or ErrChainNameBuiltin.
type ChainNameError struct {
	Name   string
	Reason string
	Err    error
}

// Error implements error.
func (e *ChainNameError) Error() string {
	msg := fmt.Sprintf("chain name %q: %v", e.Name, e.Err)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *ChainNameError) Unwrap() error { return e.Err }

// ParseError reports iptables-save (or iptables-restore) text that cannot be
// parsed. Line is 1-based; Text is the offending line.
type ParseError struct {
	Line   int
	Text   string
	Reason string
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("iptables: line %d: %s: %q", e.Line, e.Reason, e.Text)
}

// Unwrap returns ErrSyntax.
func (e *ParseError) Unwrap() error { return ErrSyntax }

// Exit statuses of the iptables tools (enum xtables_exittype).
const (
	ExitOtherProblem     = 1 // most kernel refusals: "line N failed"
	ExitParameterProblem = 2 // the tool could not parse a line
	ExitVersionProblem   = 3
	ExitResourceProblem  = 4 // nf_tables refusals, lock timeouts, no memory
)

// RestoreError reports a restore that was refused. iptables-restore commits
// each table at its COMMIT line, atomically: the table named here was left
// exactly as it was, and tables that come after it in the input were not
// touched either; tables before it in the same input were committed.
//
// Line is the 1-based line of the input the tool blamed and Text that line
// of the input; for refusals the kernel reports only when the table is
// committed, that is the COMMIT line. Line is 0 when the tool named no line.
type RestoreError struct {
	Family   Family
	Table    Table
	Line     int
	Text     string
	ExitCode int    // exit status of the tool, 0 for the Fake
	Stderr   string // what the tool printed, trimmed; the Fake's reason
	// Err is the cause: an *exec.ExitError (or another exec error) for the
	// real tool, one of ErrUnknownChain, ErrChainInUse, ErrChainNotEmpty,
	// ErrLoop, ErrHook, ErrRuleNotFound, ErrSyntax, ErrInvalid for the Fake.
	Err error
}

// Error implements error.
func (e *RestoreError) Error() string {
	var b strings.Builder
	b.WriteString("iptables: ")
	if e.Family == IPv6 {
		b.WriteString("ip6tables")
	} else {
		b.WriteString("iptables")
	}
	b.WriteString("-restore failed")
	if e.Table != "" {
		b.WriteString(" in table ")
		b.WriteString(string(e.Table))
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " at line %d %q", e.Line, e.Text)
	}
	if e.ExitCode != 0 {
		fmt.Fprintf(&b, " (exit status %d)", e.ExitCode)
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	} else if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause and ErrRestore.
func (e *RestoreError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Err, ErrRestore}
	}
	return []error{ErrRestore}
}
