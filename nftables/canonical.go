package nftables

import (
	"fmt"

	"github.com/google/nftables/expr"
)

// ValidateTransaction checks every operation of tx for table t against what
// is known of the table: known is the ruleset the table holds (definitions
// are enough; elements and rules are not needed), or nil when unknown, in
// which case references to objects the transaction does not create are
// left to the kernel to judge.
func ValidateTransaction(t Table, known *Ruleset, tx *Transaction) error {
	if err := ValidateTable(t); err != nil {
		return err
	}
	return validateTx(newSchema(t, known), tx)
}

func validateTx(base *schema, tx *Transaction) error {
	sc := base.overlay()
	for i := range tx.ops {
		o := &tx.ops[i]
		path := fmt.Sprintf("ops[%d]", i)
		switch o.kind {
		case opAddTable:
		case opDelTable:
			// Everything goes; later operations start from an empty table.
			sc = &schema{family: base.family, known: true, sets: map[string]*Set{}, chains: map[string]*Chain{}}
		case opAddChain:
			def := &Chain{Name: o.name, Base: o.chain.Base}
			if err := sc.checkChain(def); err != nil {
				return prefixPath(path, err)
			}
			if old := sc.chain(o.name); old != nil && !sameBase(old.Base, def.Base) {
				return &ValidationError{path, fmt.Sprintf("chain %q exists with another definition", o.name)}
			}
			if sc.chain(o.name) == nil {
				sc.chains[o.name] = def
			}
		case opDelChain, opFlushChain:
			if err := checkName(path+".name", "chain", o.name); err != nil {
				return err
			}
			if sc.known && sc.chain(o.name) == nil {
				return &ValidationError{path, fmt.Sprintf("no chain %q", o.name)}
			}
			if o.kind == opDelChain {
				sc.chains[o.name] = nil
			}
		case opAddRule:
			c := sc.chain(o.name)
			if c == nil {
				if err := checkName(path+".chain", "chain", o.name); err != nil {
					return err
				}
				if sc.known {
					return &ValidationError{path, fmt.Sprintf("no chain %q", o.name)}
				}
				c = &Chain{Name: o.name}
			}
			if err := sc.checkRule(c, 0, o.rule); err != nil {
				return prefixPath(path, err)
			}
		case opAddSet:
			if err := sc.checkSet(o.set); err != nil {
				return prefixPath(path, err)
			}
			def := *o.set
			def.Elements = nil
			if old := sc.set(o.name); old != nil && !sameSetDef(old, &def) {
				return &ValidationError{path, fmt.Sprintf("set %q exists with another definition", o.name)}
			}
			sc.sets[o.name] = &def
		case opDelSet, opFlushSet:
			if err := checkName(path+".name", "set", o.name); err != nil {
				return err
			}
			if sc.known && sc.set(o.name) == nil {
				return &ValidationError{path, fmt.Sprintf("no set %q", o.name)}
			}
			if o.kind == opDelSet {
				sc.sets[o.name] = nil
			}
		case opAddElems, opDelElems:
			s := sc.set(o.name)
			if s == nil {
				if err := checkName(path+".set", "set", o.name); err != nil {
					return err
				}
				return &ValidationError{path, fmt.Sprintf("set %q is unknown, its elements cannot be encoded", o.name)}
			}
			if s.Dynamic {
				return &ValidationError{path, fmt.Sprintf("set %q is dynamic; the kernel owns its elements", o.name)}
			}
			if o.kind == opDelElems {
				// Only keys matter for a deletion.
				for j := range o.elems {
					if err := checkElemKey(fmt.Sprintf("%s.elements[%d]", path, j), s, &o.elems[j], s.Interval); err != nil {
						return err
					}
				}
				continue
			}
			tmp := *s
			tmp.Elements = o.elems
			if err := sc.checkElements(path+".elements", &tmp, false); err != nil {
				return err
			}
		default:
			return &ValidationError{path, fmt.Sprintf("unknown operation %d", o.kind)}
		}
	}
	return nil
}

func prefixPath(p string, err error) error {
	if ve, ok := err.(*ValidationError); ok {
		return &ValidationError{Path: p + "." + ve.Path, Reason: ve.Reason}
	}
	return err
}

// Canonical returns rs the way Read returns it after Apply: every rule is
// compiled to kernel expressions and decoded back (so a `meta l4proto tcp`
// followed by `th dport 80` reads `tcp dport 80`, an explicit
// `meta nfproto ipv4` before an ip match disappears, a mark compare is a
// MarkMatch), elements are normalised and sorted, set sizes and chain
// policies are explicit. Comparing Canonical(desired) with Read detects
// drift. It returns a *ValidationError when rs is invalid.
func Canonical(t Table, rs *Ruleset) (*Ruleset, error) {
	if err := Validate(t, rs); err != nil {
		return nil, err
	}
	return canonical(t, rs)
}

// canonical is Canonical for a ruleset Validate accepted.
func canonical(t Table, rs *Ruleset) (*Ruleset, error) {
	known := map[string]*Set{}
	for i := range rs.Sets {
		def := rs.Sets[i]
		def.Elements = nil
		known[def.Name] = &def
	}
	comp := newCompiler(t, known, nil)
	out := &Ruleset{}
	for i := range rs.Sets {
		s := rs.Sets[i]
		def := s
		def.Elements = nil
		def.Size = s.effectiveSize()
		if len(s.Elements) > 0 {
			ge, err := encodeElements(&s, s.Elements)
			if err != nil {
				return nil, err
			}
			es, err := decodeElems(&def, rawFromG(ge))
			if err != nil {
				return nil, err
			}
			def.Elements = es
		}
		out.Sets = append(out.Sets, def)
	}
	for i := range rs.Chains {
		c := rs.Chains[i]
		cc := Chain{Name: c.Name, Base: canonicalBase(c.Base)}
		for j := range c.Rules {
			r, err := canonicalRule(comp, known, &c.Rules[j])
			if err != nil {
				return nil, fmt.Errorf("nftables: chain %q rule %d: %w", c.Name, j, err)
			}
			cc.Rules = append(cc.Rules, r)
		}
		out.Chains = append(out.Chains, cc)
	}
	return sortedRuleset(out), nil
}

func canonicalBase(b *BaseChain) *BaseChain {
	if b == nil {
		return nil
	}
	nb := *b
	if nb.Policy == "" {
		nb.Policy = PolicyAccept
	}
	return &nb
}

func canonicalRule(comp *compiler, known map[string]*Set, r *Rule) (Rule, error) {
	exprs, anon, err := comp.compileRule(r)
	if err != nil {
		return Rule{}, err
	}
	anonSets := map[string]*Set{}
	for _, a := range anon {
		name := fmt.Sprintf("__set%d", a.set.ID)
		def := *a.def
		def.Elements = nil
		es, err := decodeElems(&def, rawFromG(a.elems))
		if err != nil {
			return Rule{}, err
		}
		def.Elements = es
		anonSets[name] = &def
		for _, e := range exprs {
			if l, ok := e.(*expr.Lookup); ok && l.SetID == a.set.ID && l.SetName == a.set.Name {
				l.SetName = name
			}
		}
	}
	d := &decoder{family: comp.t.Family, sets: func(n string) (*Set, bool) {
		if s, ok := anonSets[n]; ok {
			return s, true
		}
		s, ok := known[n]
		return s, ok
	}}
	var udata []byte
	if r.Comment != "" {
		udata = commentUserdata(r.Comment)
	}
	return d.decodeRule(exprs, nil, udata), nil
}
