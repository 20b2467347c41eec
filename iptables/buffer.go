package iptables

import (
	"fmt"
	"io"
)

// Limits of one rule line, below what iptables-restore 1.8.9 accepts: it
// reads lines into a 10240-byte buffer (a longer line is split and
// misread) and refuses rules of more than about 185 arguments ("Parser
// cannot handle more arguments").
const (
	MaxLineLen  = 8192
	MaxRuleArgs = 128
)

// Buffer is a reusable line buffer of iptables-restore input. Rules are
// appended straight into one growing byte slice (no string per rule), so
// after the first sync a Buffer renders without allocating. Reset it and
// reuse it for the next sync; it is not safe for concurrent use.
//
// The methods enforce the shape of restore input (*table, declarations,
// rules, deletions, COMMIT) and validate what they write; a method that
// returns an error leaves the buffer as it was.
type Buffer struct {
	family Family
	table  Table // the open table, "" between tables
	b      []byte
}

// NewBuffer returns an empty buffer for family f.
func NewBuffer(f Family) *Buffer { return &Buffer{family: f} }

// Family returns the family the buffer renders for.
func (b *Buffer) Family() Family { return b.family }

// Reset empties the buffer and keeps its memory.
func (b *Buffer) Reset() { b.b, b.table = b.b[:0], "" }

// Truncate discards everything written after the first n bytes, for a
// caller that started a table and found it had nothing to put in it. n
// must be at a table boundary (a value of Len taken before StartTable or
// after Commit); the buffer is then between tables.
func (b *Buffer) Truncate(n int) {
	if n < 0 || n > len(b.b) {
		panic("iptables: Buffer.Truncate out of range")
	}
	b.b, b.table = b.b[:n], ""
}

// Bytes returns the text written so far. It aliases the buffer: it is valid
// until the next write or Reset.
func (b *Buffer) Bytes() []byte { return b.b }

// Len returns the number of bytes written.
func (b *Buffer) Len() int { return len(b.b) }

// Grow makes room for n more bytes.
func (b *Buffer) Grow(n int) {
	if cap(b.b)-len(b.b) < n {
		nb := make([]byte, len(b.b), 2*cap(b.b)+n)
		copy(nb, b.b)
		b.b = nb
	}
}

// WriteTo writes the text to w.
func (b *Buffer) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b.b)
	return int64(n), err
}

// String returns a copy of the text.
func (b *Buffer) String() string { return string(b.b) }

// StartTable writes "*TABLE". The previous table must be committed.
func (b *Buffer) StartTable(t Table) error {
	if b.table != "" {
		return invalid("table", "table %s is not committed", b.table)
	}
	if !t.Valid() {
		return invalid("table", "unknown table %q", string(t))
	}
	b.table = t
	b.b = append(b.b, '*')
	b.b = append(b.b, t...)
	b.b = append(b.b, '\n')
	return nil
}

// DeclareChain writes ":CHAIN - [0:0]". Under --noflush this creates the
// user-defined chain, or flushes it when it exists.
func (b *Buffer) DeclareChain(c ChainName) error {
	if b.table == "" {
		return invalid("chain", "no table started")
	}
	if err := c.Validate(); err != nil {
		return &ValidationError{Field: "chain", Err: err}
	}
	b.declare(c)
	return nil
}

func (b *Buffer) declare(c ChainName) {
	b.b = append(b.b, ':')
	b.b = append(b.b, c...)
	b.b = append(b.b, " - [0:0]\n"...)
}

// AppendRule writes "-A CHAIN RULE" after validating the rule for the
// buffer's family and table. Chain may be a built-in chain.
func (b *Buffer) AppendRule(c ChainName, r *Rule) error {
	if b.table == "" {
		return invalid("chain", "no table started")
	}
	if !c.IsBuiltin() {
		if err := c.validateRef(); err != nil {
			return &ValidationError{Field: "chain", Err: err}
		}
	}
	return b.appendRule(c, r)
}

// InsertRule writes "-I CHAIN 1 RULE": r goes to the head of the built-in
// chain c (see TableSync.Insert).
func (b *Buffer) InsertRule(c ChainName, r *Rule) error {
	if b.table == "" {
		return invalid("chain", "no table started")
	}
	if !c.IsBuiltin() {
		return invalid("chain", "%s is not a built-in chain", c)
	}
	return b.writeRule("-I ", c, " 1", r)
}

// DeleteRule writes "-D CHAIN RULE": the first rule of chain c equal to r is
// deleted. iptables-restore fails (and leaves the table as it was) when
// there is no such rule, so delete only rules a save showed.
func (b *Buffer) DeleteRule(c ChainName, r *Rule) error {
	if b.table == "" {
		return invalid("chain", "no table started")
	}
	if !c.IsBuiltin() {
		if err := c.validateRef(); err != nil {
			return &ValidationError{Field: "chain", Err: err}
		}
	}
	return b.writeRule("-D ", c, "", r)
}

// appendRule is AppendRule for a chain name already checked.
func (b *Buffer) appendRule(c ChainName, r *Rule) error {
	return b.writeRule("-A ", c, "", r)
}

// writeRule writes "CMD CHAIN[POS] RULE" (cmd "-A " or "-I ", pos "" or
// " 1").
func (b *Buffer) writeRule(cmd string, c ChainName, pos string, r *Rule) error {
	start := len(b.b)
	b.b = append(b.b, cmd...)
	b.b = append(b.b, c...)
	b.b = append(b.b, pos...)
	var err error
	b.b, err = appendRuleSpec(b.b, b.family, r)
	if err == nil && r.Target != nil && !r.Target.tableOK(b.table) {
		err = invalid("target", "%T is not allowed in table %s", r.Target, b.table)
	}
	if err == nil {
		line := b.b[start:]
		switch {
		case len(line) > MaxLineLen:
			err = invalid("", "rule is %d bytes, iptables-restore reads lines of at most %d", len(line), MaxLineLen)
		case len(line) > 2*MaxRuleArgs && countArgs(line) > MaxRuleArgs:
			err = invalid("", "rule has %d arguments, at most %d", countArgs(line), MaxRuleArgs)
		}
	}
	if err != nil {
		b.b = b.b[:start]
		return err
	}
	b.b = append(b.b, '\n')
	return nil
}

// DeleteChain writes "-X CHAIN". iptables deletes only an empty chain that
// no rule jumps to: declare it first (DeclareChain flushes it) and rewrite
// the chains that jumped to it, as Sync does.
func (b *Buffer) DeleteChain(c ChainName) error {
	if b.table == "" {
		return invalid("chain", "no table started")
	}
	if err := c.Validate(); err != nil {
		return &ValidationError{Field: "chain", Err: err}
	}
	b.b = append(b.b, "-X "...)
	b.b = append(b.b, c...)
	b.b = append(b.b, '\n')
	return nil
}

// Commit writes "COMMIT" and closes the table.
func (b *Buffer) Commit() error {
	if b.table == "" {
		return invalid("table", "COMMIT without a table")
	}
	b.table = ""
	b.b = append(b.b, "COMMIT\n"...)
	return nil
}

// Sync is the input of one iptables-restore --noflush run: per table, the
// user-defined chains to (re)write and the chains to delete. Every other
// chain of the table — built-in chains, chains of other programs, the
// caller's own chains that did not change — is left exactly as it is, which
// is what makes a partial sync possible: rewrite only the chains whose
// rules changed, delete the stale ones, and from time to time send every
// chain (a full sync) to repair drift.
type Sync struct {
	Tables []TableSync
}

// TableSync is the part of a Sync for one table.
type TableSync struct {
	Table Table
	// Chains are declared (":NAME - [0:0]", which creates the chain or, as
	// it exists, flushes it) and then filled with their rules, so after the
	// restore each holds exactly Rules.
	Chains []Chain
	// Delete are flushed and deleted ("-X"). No rule of the table may jump
	// to them afterwards: rewrite the chains that did in the same Sync.
	Delete []ChainName
	// Insert are single rules put at the head of built-in chains ("-I
	// CHAIN 1 RULE"), typically the jumps from the hooks into the
	// program's chains that a caller found missing. After the restore they
	// stand first in their chains in the order listed, before the rules
	// that were there; no other rule of a built-in chain is touched. They
	// are written after the chains above, so they may jump to them.
	Insert []ChainRule
}

// ChainRule is a rule and the chain it goes into.
type ChainRule struct {
	Chain ChainName
	Rule  Rule
}

// Chain is a user-defined chain and its rules.
type Chain struct {
	Name  ChainName
	Rules []Rule
}

// IsEmpty reports whether s changes nothing.
func (s *Sync) IsEmpty() bool {
	for i := range s.Tables {
		if len(s.Tables[i].Chains) > 0 || len(s.Tables[i].Delete) > 0 {
			return false
		}
	}
	return true
}

// NumRules returns the number of rules s writes.
func (s *Sync) NumRules() int {
	n := 0
	for i := range s.Tables {
		for j := range s.Tables[i].Chains {
			n += len(s.Tables[i].Chains[j].Rules)
		}
		n += len(s.Tables[i].Insert)
	}
	return n
}

// Render appends the iptables-restore text of s to b, after b's existing
// content: per table "*TABLE", the declarations of the chains to write and
// of the chains to delete, the rules, the "-X" lines, "COMMIT". Tables with
// nothing to do are left out. On error b is left as it was and the error is
// a *ValidationError whose Field locates the value
// ("tables[0].chains[3].rules[1].target").
func (s *Sync) Render(b *Buffer) error {
	start := len(b.b)
	if err := s.render(b); err != nil {
		b.b, b.table = b.b[:start], ""
		return err
	}
	return nil
}

// Validate checks that s renders for family f.
func (s *Sync) Validate(f Family) error {
	return s.Render(NewBuffer(f))
}

func (s *Sync) render(b *Buffer) error {
	if b.table != "" {
		return invalid("", "the buffer has table %s open", b.table)
	}
	seenTables := make(map[Table]bool, len(s.Tables))
	for ti := range s.Tables {
		ts := &s.Tables[ti]
		if err := ts.render(b, seenTables); err != nil {
			return inField(indexed("tables", ti), err)
		}
	}
	return nil
}

func (ts *TableSync) render(b *Buffer, seenTables map[Table]bool) error {
	if seenTables[ts.Table] {
		return invalid("table", "table %s appears twice", ts.Table)
	}
	seenTables[ts.Table] = true
	if len(ts.Chains) == 0 && len(ts.Delete) == 0 && len(ts.Insert) == 0 {
		if !ts.Table.Valid() {
			return invalid("table", "unknown table %q", string(ts.Table))
		}
		return nil
	}
	if err := b.StartTable(ts.Table); err != nil {
		return err
	}
	seen := make(map[ChainName]bool, len(ts.Chains)+len(ts.Delete))
	var deleted map[ChainName]bool
	if len(ts.Delete) > 0 {
		deleted = make(map[ChainName]bool, len(ts.Delete))
	}
	for i := range ts.Chains {
		c := ts.Chains[i].Name
		if err := c.Validate(); err != nil {
			return &ValidationError{Field: indexed("chains", i) + ".name", Err: err}
		}
		if seen[c] {
			return invalid(indexed("chains", i)+".name", "chain %s appears twice", c)
		}
		seen[c] = true
		b.declare(c)
	}
	for i, c := range ts.Delete {
		if err := c.Validate(); err != nil {
			return &ValidationError{Field: indexed("delete", i), Err: err}
		}
		if seen[c] {
			return invalid(indexed("delete", i), "chain %s is both written and deleted, or deleted twice", c)
		}
		seen[c] = true
		deleted[c] = true
		b.declare(c)
	}
	for i := range ts.Chains {
		ch := &ts.Chains[i]
		for j := range ch.Rules {
			r := &ch.Rules[j]
			if deleted != nil {
				if to := jumpTarget(r.Target); to != "" && deleted[to] {
					return &ValidationError{Field: indexed("chains", i) + "." + indexed("rules", j) + ".target",
						Reason: fmt.Sprintf("jumps to %s, which this sync deletes", to), Err: ErrChainInUse}
				}
			}
			if err := b.appendRule(ch.Name, r); err != nil {
				return inField(indexed("chains", i)+"."+indexed("rules", j), err)
			}
		}
	}
	// Each insert goes to position 1, so the last one listed is written
	// first and the first one listed ends up at the head of its chain.
	for i := len(ts.Insert) - 1; i >= 0; i-- {
		in := &ts.Insert[i]
		if !in.Chain.IsBuiltin() {
			return invalid(indexed("insert", i)+".chain", "%s is not a built-in chain", in.Chain)
		}
		if to := jumpTarget(in.Rule.Target); to != "" && deleted[to] {
			return &ValidationError{Field: indexed("insert", i) + ".rule.target",
				Reason: fmt.Sprintf("jumps to %s, which this sync deletes", to), Err: ErrChainInUse}
		}
		if err := b.writeRule("-I ", in.Chain, " 1", &in.Rule); err != nil {
			return inField(indexed("insert", i)+".rule", err)
		}
	}
	for _, c := range ts.Delete {
		b.b = append(b.b, "-X "...)
		b.b = append(b.b, c...)
		b.b = append(b.b, '\n')
	}
	return b.Commit()
}

// jumpTarget returns the chain a Jump or Goto target names, "" otherwise.
func jumpTarget(t Target) ChainName {
	switch t := t.(type) {
	case Jump:
		return t.Chain
	case Goto:
		return t.Chain
	}
	return ""
}

// Stale returns the chains of existing that desired does not hold, in the
// order of existing: the chains a full sync should delete. Typically
// existing comes from ListChains with the caller's prefix.
func Stale(existing, desired []ChainName) []ChainName {
	want := make(map[ChainName]bool, len(desired))
	for _, c := range desired {
		want[c] = true
	}
	var out []ChainName
	for _, c := range existing {
		if !want[c] {
			out = append(out, c)
		}
	}
	return out
}
