package iptables

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// BackendFake is what a Fake reports as its backend.
const BackendFake Backend = "fake"

// Fake is an in-memory Interface for unit tests of code that programs
// iptables, without root. It applies iptables-restore --noflush input with
// the semantics of the real tools for everything the renderer emits, and
// the differential tests of this package hold it to the kernel's results:
//
//   - ":CHAIN - [0:0]" creates a user-defined chain or flushes it;
//     ":BUILTIN POLICY [0:0]" sets the policy of a built-in chain.
//   - "-A", "-I", "-D", "-F", "-N", "-X", "-P" work as in iptables-restore;
//     "-X" refuses a chain that is missing, not empty, or still jumped to.
//   - A rule that jumps to a chain that does not exist (yet) fails, and so
//     does a rule naming a target the Fake does not know.
//   - At COMMIT the table is checked as the kernel checks it: no loop of
//     jumps reachable from a built-in chain, DNAT/SNAT/MASQUERADE only in
//     the nat table and only in chains reached from the hooks that allow
//     them (DNAT: PREROUTING, OUTPUT; SNAT: POSTROUTING, INPUT; MASQUERADE:
//     POSTROUTING; REJECT: INPUT, FORWARD, OUTPUT; addrtype
//     --limit-iface-in/out likewise).
//   - Each table is committed atomically at its COMMIT: on an error the
//     table is left as it was and processing stops, so tables committed
//     before stay committed and later ones are not touched. The error is a
//     *RestoreError with the line and its text; like iptables-legacy the
//     Fake blames the COMMIT line for what the kernel checks at commit.
//
// Dump and SaveText print iptables-save format: built-in chains first, then
// user-defined chains sorted by name, rules chain by chain.
//
// Options of the typed match modules and targets (tcp, comment, mark, DNAT,
// ...) that the typed values cannot represent are refused; other modules
// and targets are kept as text (RawMatch, RawTarget) without checking
// their options.
type Fake struct {
	// BeforeRestore, when set, is called with the text of every restore
	// before it is applied; an error it returns fails the restore (nothing
	// is applied) and is wrapped in the *RestoreError. Set it before the
	// Fake is used concurrently.
	BeforeRestore func(text []byte) error

	family Family

	mu       sync.Mutex
	tables   map[Table]*fakeTable
	restores int
	last     []byte
}

type fakeTable struct {
	chains map[ChainName]*fakeChain
}

type fakeChain struct {
	policy Policy // "-" for user-defined chains
	rules  []Rule
}

var _ Interface = (*Fake)(nil)

// NewFake returns an empty Fake for family f: every table holds its
// built-in chains with policy ACCEPT and no rules.
func NewFake(f Family) *Fake {
	return &Fake{family: f, tables: make(map[Table]*fakeTable)}
}

// Family implements Interface.
func (f *Fake) Family() Family { return f.family }

// Backend implements Interface; it returns BackendFake.
func (f *Fake) Backend() Backend { return BackendFake }

// Restores returns how many restores were attempted (successful or not).
func (f *Fake) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// LastRestore returns a copy of the text of the last restore.
func (f *Fake) LastRestore() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.last)
}

func newFakeTable(t Table) *fakeTable {
	ft := &fakeTable{chains: make(map[ChainName]*fakeChain)}
	for _, c := range t.BuiltinChains() {
		ft.chains[c] = &fakeChain{policy: PolicyAccept}
	}
	return ft
}

// table returns the table, creating it with its built-in chains.
func (f *Fake) table(t Table) *fakeTable {
	ft := f.tables[t]
	if ft == nil {
		ft = newFakeTable(t)
		f.tables[t] = ft
	}
	return ft
}

func (ft *fakeTable) clone() *fakeTable {
	out := &fakeTable{chains: make(map[ChainName]*fakeChain, len(ft.chains))}
	for name, c := range ft.chains {
		out.chains[name] = &fakeChain{policy: c.policy, rules: slices.Clone(c.rules)}
	}
	return out
}

// Apply implements Interface.
func (f *Fake) Apply(ctx context.Context, s *Sync) error {
	b := NewBuffer(f.family)
	if err := s.Render(b); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	return f.RestoreText(ctx, b.Bytes())
}

// Restore implements Interface.
func (f *Fake) Restore(ctx context.Context, b *Buffer) error {
	if err := checkBuffer(f.family, b); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	return f.RestoreText(ctx, b.Bytes())
}

// RestoreText implements Interface.
func (f *Fake) RestoreText(ctx context.Context, text []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	f.last = slices.Clone(text)
	if f.BeforeRestore != nil {
		if err := f.BeforeRestore(text); err != nil {
			return &RestoreError{Family: f.family, Err: err, Stderr: err.Error()}
		}
	}
	return f.restore(text)
}

// restoreState is the progress of one restore.
type restoreState struct {
	f      *Fake
	p      parser
	name   Table      // the open table, "" outside
	txn    *fakeTable // its working copy
	lineNo int
	text   string
}

func (st *restoreState) fail(cause error, format string, args ...any) *RestoreError {
	return &RestoreError{Family: st.f.family, Table: st.name, Line: st.lineNo, Text: st.text,
		Stderr: fmt.Sprintf(format, args...), Err: cause}
}

func (f *Fake) restore(text []byte) error {
	st := &restoreState{f: f, p: parser{family: f.family}}
	data := text
	for len(data) > 0 {
		st.lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		st.text = string(line)
		trimmed := strings.TrimSpace(st.text)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if err := st.line(trimmed); err != nil {
			return err
		}
	}
	if st.name != "" {
		st.lineNo++
		st.text = ""
		return st.fail(ErrSyntax, "COMMIT expected at line %d", st.lineNo)
	}
	return nil
}

func (st *restoreState) line(line string) *RestoreError {
	switch {
	case line[0] == '*':
		if st.name != "" {
			return st.fail(ErrSyntax, "Bad argument `%s'", line)
		}
		t := Table(line[1:])
		if !t.Valid() {
			return st.fail(ErrSyntax, "unknown table %q", line[1:])
		}
		st.name = t
		st.txn = st.f.table(t).clone()
		return nil
	case line == "COMMIT":
		if st.name == "" {
			return st.fail(ErrSyntax, "COMMIT outside a table")
		}
		if err := checkTable(st.name, st.txn); err != nil {
			return st.fail(err, "%v", err)
		}
		st.f.tables[st.name] = st.txn
		st.name, st.txn = "", nil
		return nil
	}
	if st.name == "" {
		return st.fail(ErrSyntax, "no table given before %q", line)
	}
	if line[0] == ':' {
		return st.declare(line)
	}
	return st.command(line)
}

func (st *restoreState) declare(line string) *RestoreError {
	fields := strings.Fields(line[1:])
	if len(fields) < 2 {
		return st.fail(ErrSyntax, "bad chain declaration")
	}
	name, policy := ChainName(fields[0]), Policy(fields[1])
	if err := checkSavedName(string(name)); err != nil {
		return st.fail(ErrSyntax, "%v", err)
	}
	if st.name.HasBuiltin(name) {
		switch policy {
		case PolicyAccept, PolicyDrop:
			st.txn.chains[name].policy = policy
		case PolicyNone:
			// iptables-restore ignores "-" on a built-in chain.
		default:
			return st.fail(ErrSyntax, "bad policy %q", policy)
		}
		return nil
	}
	if policy != PolicyNone {
		return st.fail(ErrSyntax, "Can't set policy `%s' on `%s': Bad built-in chain name", policy, name)
	}
	if isReservedTarget(string(name)) || name[0] == '-' || name[0] == '!' {
		return st.fail(ErrSyntax, "invalid chain name %q", name)
	}
	if c := st.txn.chains[name]; c != nil {
		c.rules = nil // --noflush: a declared chain is flushed
	} else {
		st.txn.chains[name] = &fakeChain{policy: PolicyNone}
	}
	return nil
}

func (st *restoreState) command(line string) *RestoreError {
	toks, err := tokenize(line, nil)
	if err != nil || len(toks) == 0 {
		return st.fail(ErrSyntax, "bad line: %v", err)
	}
	cmd := toks[0].s
	arg := func(i int) string {
		if i < len(toks) {
			return toks[i].s
		}
		return ""
	}
	chain := ChainName(arg(1))
	c := st.txn.chains[chain]
	switch cmd {
	case "-N":
		if chain == "" || c != nil {
			return st.fail(ErrSyntax, "Chain already exists.")
		}
		if err := chain.Validate(); err != nil {
			return st.fail(err, "%v", err)
		}
		st.txn.chains[chain] = &fakeChain{policy: PolicyNone}
		return nil
	case "-F":
		if chain == "" {
			for _, c := range st.txn.chains {
				c.rules = nil
			}
			return nil
		}
		if c == nil {
			return st.fail(ErrUnknownChain, "No chain/target/match by that name.")
		}
		c.rules = nil
		return nil
	case "-X":
		if chain == "" || len(toks) != 2 {
			return st.fail(ErrSyntax, "-X needs exactly one chain")
		}
		return st.deleteChain(chain, c)
	case "-P":
		if c == nil || c.policy == PolicyNone || len(toks) != 3 {
			return st.fail(ErrUnknownChain, "Bad built-in chain name")
		}
		p := Policy(arg(2))
		if p != PolicyAccept && p != PolicyDrop {
			return st.fail(ErrSyntax, "bad policy %q", p)
		}
		c.policy = p
		return nil
	case "-A", "-I", "-D":
	default:
		return st.fail(ErrSyntax, "unknown command %q", cmd)
	}
	if c == nil {
		return st.fail(ErrUnknownChain, "No chain/target/match by that name.")
	}
	// Rebuild the line as "-A CHAIN spec" (dropping -I's position) so the
	// rule parser reads it.
	specStart := 2
	pos := -1
	if cmd == "-I" && len(toks) > 2 {
		if n, err := strconv.Atoi(toks[2].s); err == nil && !toks[2].quoted {
			if n < 1 || n > len(c.rules)+1 {
				return st.fail(ErrSyntax, "Index of insertion too big.")
			}
			pos, specStart = n-1, 3
		}
	}
	if cmd == "-I" && pos < 0 {
		pos = 0
	}
	if cmd == "-D" && len(toks) == 3 {
		if n, err := strconv.Atoi(toks[2].s); err == nil && !toks[2].quoted {
			if n < 1 || n > len(c.rules) {
				return st.fail(ErrRuleNotFound, "Index of deletion too big.")
			}
			c.rules = slices.Delete(c.rules, n-1, n)
			return nil
		}
	}
	spec := ""
	if specStart < len(toks) {
		spec = line[toks[specStart].start:]
	}
	r, err := st.p.parseSpec(spec, mustTokenize(spec), func(name string) bool {
		return st.txn.chains[ChainName(name)] != nil
	})
	if err != nil {
		return st.fail(ErrSyntax, "%v", err)
	}
	if err := st.checkRule(&r); err != nil {
		return st.fail(err, "%v", err)
	}
	switch cmd {
	case "-A":
		c.rules = append(c.rules, r)
	case "-I":
		c.rules = slices.Insert(c.rules, pos, r)
	case "-D":
		i := indexRule(st.f.family, c.rules, &r)
		if i < 0 {
			return st.fail(ErrRuleNotFound, "Bad rule (does a matching rule exist in that chain?).")
		}
		c.rules = slices.Delete(c.rules, i, i+1)
	}
	return nil
}

func mustTokenize(s string) []token {
	toks, _ := tokenize(s, nil) // the line tokenized already
	return toks
}

// checkRule refuses what iptables refuses when the rule is added.
func (st *restoreState) checkRule(r *Rule) error {
	if _, err := appendRuleSpec(nil, st.f.family, r); err != nil {
		return err
	}
	for _, m := range r.Matches {
		if raw, ok := m.(RawMatch); ok && typedModule(raw.Module) {
			return fmt.Errorf("%w: match %s: options %q not supported by the Fake", ErrInvalid, raw.Module, raw.Spec)
		}
	}
	switch t := r.Target.(type) {
	case Jump, Goto:
		to := jumpTarget(t)
		if to.IsBuiltin() || st.txn.chains[to] == nil {
			return fmt.Errorf("%w: Couldn't load target `%s'", ErrUnknownChain, to)
		}
	case RawTarget:
		switch {
		case st.txn.chains[ChainName(t.Name)] != nil:
			return fmt.Errorf("%w: cannot jump to chain %s", ErrUnknownChain, t.Name)
		case typedTarget(t.Name):
			return fmt.Errorf("%w: target %s: options %q not supported by the Fake", ErrInvalid, t.Name, t.Spec)
		case !isReservedTarget(t.Name):
			return fmt.Errorf("%w: Couldn't load target `%s'", ErrUnknownChain, t.Name)
		}
	}
	return nil
}

func typedModule(m string) bool {
	switch m {
	case "comment", "tcp", "udp", "sctp", "statistic", "mark", "addrtype", "recent", "conntrack":
		return true
	}
	return false
}

func typedTarget(n string) bool {
	switch n {
	case "ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "MASQUERADE", "MARK":
		return true
	}
	return false
}

func (st *restoreState) deleteChain(name ChainName, c *fakeChain) *RestoreError {
	switch {
	case c == nil:
		return st.fail(ErrUnknownChain, "No chain/target/match by that name.")
	case c.policy != PolicyNone:
		return st.fail(ErrChainNameBuiltin, "cannot delete built-in chain %s", name)
	case len(c.rules) > 0:
		return st.fail(ErrChainNotEmpty, "Directory not empty: chain %s has %d rules", name, len(c.rules))
	}
	for from, fc := range st.txn.chains {
		for i := range fc.rules {
			if jumpTarget(fc.rules[i].Target) == name {
				return st.fail(ErrChainInUse, "Device or resource busy: chain %s is jumped to from %s", name, from)
			}
		}
	}
	delete(st.txn.chains, name)
	return nil
}

// checkTable is what the kernel checks when a table is committed: no loop
// reachable from a built-in chain, targets only in their tables and hooks.
func checkTable(t Table, ft *fakeTable) error {
	reach := make(map[ChainName]hookMask)
	for _, b := range t.BuiltinChains() {
		hook := hookOf(b)
		// Depth-first walk with an explicit path to find loops.
		onPath := make(map[ChainName]bool)
		var walk func(c ChainName) error
		walk = func(c ChainName) error {
			if onPath[c] {
				return fmt.Errorf("%w: through chain %s (reached from %s)", ErrLoop, c, b)
			}
			if reach[c]&hook != 0 {
				return nil // already walked from this hook
			}
			reach[c] |= hook
			onPath[c] = true
			fc := ft.chains[c]
			if fc == nil {
				return fmt.Errorf("%w: %s", ErrUnknownChain, c)
			}
			for _, r := range fc.rules {
				if to := jumpTarget(r.Target); to != "" {
					if err := walk(to); err != nil {
						return err
					}
				}
			}
			onPath[c] = false
			return nil
		}
		if err := walk(b); err != nil {
			return err
		}
	}
	names := make([]ChainName, 0, len(ft.chains))
	for name := range ft.chains {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c := ft.chains[name]
		for i := range c.rules {
			r := &c.rules[i]
			if r.Target != nil && !r.Target.tableOK(t) {
				return fmt.Errorf("%w: %s target in table %s (chain %s)", ErrHook, targetName(r.Target), t, name)
			}
			allowed := targetHooks(r.Target)
			for _, m := range r.Matches {
				if h := matchHooks(m); h != 0 {
					if allowed == 0 {
						allowed = h
					} else {
						allowed &= h
					}
				}
			}
			if allowed != 0 && reach[name]&^allowed != 0 {
				return fmt.Errorf("%w: rule %d of chain %s (%s) is reached from a hook that does not allow it",
					ErrHook, i+1, name, r.String())
			}
		}
	}
	return nil
}

func targetName(t Target) string {
	switch t := t.(type) {
	case DNAT:
		return "DNAT"
	case SNAT:
		return "SNAT"
	case Masquerade:
		return "MASQUERADE"
	case RawTarget:
		return t.Name
	}
	return fmt.Sprintf("%T", t)
}

// indexRule returns the index of the first rule of rules equal to r, -1.
func indexRule(f Family, rules []Rule, r *Rule) int {
	want, err := appendRuleSpec(nil, f, r)
	if err != nil {
		return -1
	}
	var buf []byte
	for i := range rules {
		buf, err = appendRuleSpec(buf[:0], f, &rules[i])
		if err == nil && bytes.Equal(buf, want) {
			return i
		}
	}
	return -1
}

// appendTable appends table t in iptables-save format.
func (f *Fake) appendTable(b []byte, t Table, ft *fakeTable) []byte {
	td := TableDump{Name: t}
	for _, c := range t.BuiltinChains() {
		fc := ft.chains[c]
		td.Chains = append(td.Chains, ChainDump{Name: c, Policy: fc.policy, Rules: fc.rules})
	}
	var user []ChainName
	for name, c := range ft.chains {
		if c.policy == PolicyNone {
			user = append(user, name)
		}
	}
	slices.Sort(user)
	for _, name := range user {
		td.Chains = append(td.Chains, ChainDump{Name: name, Policy: PolicyNone, Rules: ft.chains[name].rules})
	}
	out, err := td.AppendTo(b, f.family)
	if err != nil {
		// Every stored rule validated when it was added.
		panic(fmt.Sprintf("iptables: Fake holds a rule it cannot print: %v", err))
	}
	return out
}

// Dump returns every table the Fake has seen, in iptables-save format
// (tables in the order filter, mangle, nat, raw, security).
func (f *Fake) Dump() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []byte
	for _, t := range allTables() {
		if ft := f.tables[t]; ft != nil {
			b = f.appendTable(b, t, ft)
		}
	}
	return b
}

// SaveText implements Interface: iptables-save -t t output.
func (f *Fake) SaveText(ctx context.Context, t Table) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !t.Valid() {
		return nil, invalid("table", "unknown table %q", string(t))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.tables[t]
	if ft == nil {
		ft = newFakeTable(t)
	}
	return f.appendTable(nil, t, ft), nil
}

// Save implements Interface.
func (f *Fake) Save(ctx context.Context, t Table) (*TableDump, error) {
	out, err := f.SaveText(ctx, t)
	if err != nil {
		return nil, err
	}
	return tableFromSave(f.family, t, out)
}

// ListChains implements Interface.
func (f *Fake) ListChains(ctx context.Context, t Table, prefix string) ([]ChainName, error) {
	out, err := f.SaveText(ctx, t)
	if err != nil {
		return nil, err
	}
	return ListChainNames(out, prefix), nil
}

// EnsureRule implements Interface.
func (f *Fake) EnsureRule(ctx context.Context, t Table, c ChainName, pos Position, r *Rule) (bool, error) {
	if _, err := ruleOpArgs(f.family, t, c, r); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.table(t)
	fc := ft.chains[c]
	if fc == nil {
		return false, fmt.Errorf("iptables: chain %s/%s: %w", t, c, ErrUnknownChain)
	}
	if to := jumpTarget(r.Target); to != "" && ft.chains[to] == nil {
		return false, fmt.Errorf("iptables: jump to %s/%s: %w", t, to, ErrUnknownChain)
	}
	if indexRule(f.family, fc.rules, r) >= 0 {
		return false, nil
	}
	next := ft.clone()
	if pos == Append {
		next.chains[c].rules = append(next.chains[c].rules, *r)
	} else {
		next.chains[c].rules = slices.Insert(next.chains[c].rules, 0, *r)
	}
	if err := checkTable(t, next); err != nil {
		return false, fmt.Errorf("iptables: add rule to %s/%s: %w", t, c, err)
	}
	f.tables[t] = next
	return true, nil
}

// DeleteRule implements Interface.
func (f *Fake) DeleteRule(ctx context.Context, t Table, c ChainName, r *Rule) error {
	if _, err := ruleOpArgs(f.family, t, c, r); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.tables[t]
	if ft == nil || ft.chains[c] == nil {
		return nil
	}
	if i := indexRule(f.family, ft.chains[c].rules, r); i >= 0 {
		ft.chains[c].rules = slices.Delete(ft.chains[c].rules, i, i+1)
	}
	return nil
}

// EnsureJump implements Interface.
func (f *Fake) EnsureJump(ctx context.Context, t Table, from, to ChainName, pos Position, comment string) (bool, error) {
	r := jumpRule(to, comment)
	if _, err := ruleOpArgs(f.family, t, from, r); err != nil {
		return false, err
	}
	f.mu.Lock()
	ft := f.table(t)
	if ft.chains[to] == nil {
		ft.chains[to] = &fakeChain{policy: PolicyNone}
	}
	f.mu.Unlock()
	return f.EnsureRule(ctx, t, from, pos, r)
}

// DeleteJump implements Interface.
func (f *Fake) DeleteJump(ctx context.Context, t Table, from, to ChainName, comment string) error {
	return f.DeleteRule(ctx, t, from, jumpRule(to, comment))
}
