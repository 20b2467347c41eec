package nftables

import (
	"fmt"
	"sort"
	"syscall"
)

// model is an in-memory table: what the Fake holds, with the semantics of
// the kernel for the operations the engine sends (which errno a bad batch
// gets, and that a failing batch changes nothing).
type model struct {
	t      Table
	exists bool
	chains map[string]*mchain
	sets   map[string]*mset
}

type mchain struct {
	def   Chain // Name and Base only
	rules []Rule
}

type mset struct {
	def   Set // without elements
	elems map[string]Element
}

func newModel(t Table) *model {
	return &model{t: t, chains: map[string]*mchain{}, sets: map[string]*mset{}}
}

// errnoError is a kernel-like failure of one operation.
type errnoError struct {
	errno syscall.Errno
	what  string
}

func (e *errnoError) Error() string { return e.what + ": " + e.errno.Error() }
func (e *errnoError) Unwrap() error { return e.errno }

func fail(errno syscall.Errno, format string, args ...any) error {
	return &errnoError{errno: errno, what: fmt.Sprintf(format, args...)}
}

// ruleset returns the model's content as a Ruleset (nil if no table).
func (m *model) ruleset() *Ruleset {
	if !m.exists {
		return nil
	}
	rs := &Ruleset{}
	for _, name := range sortedKeys(m.chains) {
		c := m.chains[name]
		ch := c.def
		ch.Rules = append([]Rule(nil), c.rules...)
		rs.Chains = append(rs.Chains, ch)
	}
	for _, name := range sortedKeys(m.sets) {
		s := m.sets[name]
		set := s.def
		set.Elements = make([]Element, 0, len(s.elems))
		for _, e := range s.elems {
			set.Elements = append(set.Elements, e)
		}
		set.Elements = sortedElements(set.Elements)
		rs.Sets = append(rs.Sets, set)
	}
	return rs
}

// schema returns what validation needs to know of the model.
func (m *model) schema() *schema {
	sc := &schema{family: m.t.Family, known: true, sets: map[string]*Set{}, chains: map[string]*Chain{}}
	for n, s := range m.sets {
		def := s.def
		sc.sets[n] = &def
	}
	for n, c := range m.chains {
		def := c.def
		sc.chains[n] = &def
	}
	return sc
}

// apply applies tx atomically: on error the model is unchanged.
func (m *model) apply(tx *Transaction) error {
	var undo []func()
	for i := range tx.ops {
		if err := m.applyOp(&tx.ops[i], &undo); err != nil {
			for j := len(undo) - 1; j >= 0; j-- {
				undo[j]()
			}
			return fmt.Errorf("operation %d: %w", i, err)
		}
	}
	return nil
}

func (m *model) applyOp(o *op, undo *[]func()) error {
	if o.kind != opAddTable && !m.exists {
		return fail(syscall.ENOENT, "table %s", m.t)
	}
	switch o.kind {
	case opAddTable:
		if !m.exists {
			m.exists = true
			*undo = append(*undo, func() { m.exists = false })
		}
	case opDelTable:
		old := *m
		m.exists, m.chains, m.sets = false, map[string]*mchain{}, map[string]*mset{}
		*undo = append(*undo, func() { *m = old })
	case opAddChain:
		if c, ok := m.chains[o.name]; ok {
			if !sameBase(c.def.Base, o.chain.Base) {
				return fail(syscall.EEXIST, "chain %q exists with another definition", o.name)
			}
			return nil
		}
		m.chains[o.name] = &mchain{def: Chain{Name: o.name, Base: o.chain.Base}}
		*undo = append(*undo, func() { delete(m.chains, o.name) })
	case opDelChain:
		c, ok := m.chains[o.name]
		if !ok {
			return fail(syscall.ENOENT, "chain %q", o.name)
		}
		// The kernel deletes the chain's rules with it (and their
		// references); it refuses only a chain something else refers to.
		if m.chainReferenced(o.name) {
			return fail(syscall.EBUSY, "chain %q is referenced", o.name)
		}
		delete(m.chains, o.name)
		*undo = append(*undo, func() { m.chains[o.name] = c })
	case opFlushChain:
		c, ok := m.chains[o.name]
		if !ok {
			return fail(syscall.ENOENT, "chain %q", o.name)
		}
		old := c.rules
		c.rules = nil
		*undo = append(*undo, func() { c.rules = old })
	case opAddRule:
		c, ok := m.chains[o.name]
		if !ok {
			return fail(syscall.ENOENT, "chain %q", o.name)
		}
		if err := m.checkRefs(o.rule); err != nil {
			return err
		}
		old := c.rules
		c.rules = append(append([]Rule(nil), c.rules...), *o.rule)
		*undo = append(*undo, func() { c.rules = old })
	case opAddSet:
		def := *o.set
		def.Elements = nil
		s, ok := m.sets[o.name]
		if ok {
			if !sameSetDef(&s.def, &def) {
				return fail(syscall.EEXIST, "set %q exists with another definition", o.name)
			}
		} else {
			s = &mset{def: def, elems: map[string]Element{}}
			m.sets[o.name] = s
			*undo = append(*undo, func() { delete(m.sets, o.name) })
		}
		return m.addElems(s, o.set.Elements, undo)
	case opDelSet:
		s, ok := m.sets[o.name]
		if !ok {
			return fail(syscall.ENOENT, "set %q", o.name)
		}
		if m.setReferenced(o.name) {
			return fail(syscall.EBUSY, "set %q is used by a rule", o.name)
		}
		delete(m.sets, o.name)
		*undo = append(*undo, func() { m.sets[o.name] = s })
	case opFlushSet:
		s, ok := m.sets[o.name]
		if !ok {
			return fail(syscall.ENOENT, "set %q", o.name)
		}
		old := s.elems
		s.elems = map[string]Element{}
		*undo = append(*undo, func() { s.elems = old })
	case opAddElems:
		s, ok := m.sets[o.name]
		if !ok {
			return fail(syscall.ENOENT, "set %q", o.name)
		}
		return m.addElems(s, o.elems, undo)
	case opDelElems:
		s, ok := m.sets[o.name]
		if !ok {
			return fail(syscall.ENOENT, "set %q", o.name)
		}
		for _, e := range o.elems {
			k := e.keyString()
			old, ok := s.elems[k]
			if !ok {
				return fail(syscall.ENOENT, "element %s of set %q", k, o.name)
			}
			delete(s.elems, k)
			*undo = append(*undo, func() { s.elems[k] = old })
		}
	}
	return nil
}

func (m *model) addElems(s *mset, es []Element, undo *[]func()) error {
	for _, e := range es {
		k := e.keyString()
		if old, ok := s.elems[k]; ok {
			if old.String() == e.String() {
				continue
			}
			return fail(syscall.EEXIST, "element %s of set %q exists with other data", k, s.def.Name)
		}
		if s.def.Interval {
			p := e.Key[0].AsPrefix().Masked()
			for _, o := range s.elems {
				if o.Key[0].AsPrefix().Masked().Overlaps(p) {
					return fail(syscall.EEXIST, "element %s overlaps %s in set %q", k, o.keyString(), s.def.Name)
				}
			}
		}
		if e.Verdict != nil && (e.Verdict.Kind == VerdictJump || e.Verdict.Kind == VerdictGoto) {
			if _, ok := m.chains[e.Verdict.Chain]; !ok {
				return fail(syscall.ENOENT, "chain %q of element %s", e.Verdict.Chain, k)
			}
		}
		s.elems[k] = e
		*undo = append(*undo, func() { delete(s.elems, k) })
	}
	return nil
}

// checkRefs fails like the kernel when a rule names a missing set or chain.
func (m *model) checkRefs(r *Rule) error {
	for _, s := range r.Stmts {
		if name := setRef(s); name != "" {
			if _, ok := m.sets[name]; !ok {
				return fail(syscall.ENOENT, "set %q", name)
			}
		}
		for _, c := range chainRefs(s) {
			if _, ok := m.chains[c]; !ok {
				return fail(syscall.ENOENT, "chain %q", c)
			}
		}
	}
	return nil
}

// chainRefs returns the chains a statement jumps to.
func chainRefs(s Stmt) []string {
	var out []string
	add := func(v *Verdict) {
		if v != nil && (v.Kind == VerdictJump || v.Kind == VerdictGoto) {
			out = append(out, v.Chain)
		}
	}
	switch s := s.(type) {
	case Verdict:
		add(&s)
	case VMap:
		for i := range s.Entries {
			add(s.Entries[i].Verdict)
		}
	}
	return out
}

func (m *model) chainReferenced(name string) bool {
	for _, c := range m.chains {
		for _, r := range c.rules {
			for _, s := range r.Stmts {
				for _, t := range chainRefs(s) {
					if t == name {
						return true
					}
				}
			}
		}
	}
	for _, s := range m.sets {
		for _, e := range s.elems {
			if e.Verdict != nil && e.Verdict.Chain == name {
				return true
			}
		}
	}
	return false
}

func (m *model) setReferenced(name string) bool {
	for _, c := range m.chains {
		for _, r := range c.rules {
			for _, s := range r.Stmts {
				if setRef(s) == name {
					return true
				}
			}
		}
	}
	return false
}

// sortedRuleset is a helper for tests: the Ruleset with chains and sets
// sorted by name.
func sortedRuleset(rs *Ruleset) *Ruleset {
	if rs == nil {
		return nil
	}
	out := *rs
	out.Chains = append([]Chain(nil), rs.Chains...)
	out.Sets = append([]Set(nil), rs.Sets...)
	sort.Slice(out.Chains, func(i, j int) bool { return out.Chains[i].Name < out.Chains[j].Name })
	sort.Slice(out.Sets, func(i, j int) bool { return out.Sets[i].Name < out.Sets[j].Name })
	return &out
}
