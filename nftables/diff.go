package nftables

import (
	"sort"
)

// Diff returns the transaction that turns a table holding old into one
// holding new, touching only what differs: elements added or deleted one
// by one (a changed element is deleted and added again), chains whose rules
// differ flushed and rewritten, chains and sets created or deleted, a set
// whose definition changed deleted and created again (with the chains that
// use it rewritten in the same batch). Elements of dynamic sets belong to
// the kernel and are never touched. A nil old means an empty table.
//
// Rules are compared by their nft text, so old should come from the same
// source as new (the ruleset last applied) or from Read, which returns
// rules in the canonical form Canonical also produces.
func Diff(old, new *Ruleset) *Transaction {
	if old == nil {
		old = &Ruleset{}
	}
	tx := &Transaction{}
	tx.AddTable()

	oldC, newC := chainIndex(old), chainIndex(new)
	oldS, newS := setIndex(old), setIndex(new)
	oldCN, newCN := sortedKeys(oldC), sortedKeys(newC)
	oldSN, newSN := sortedKeys(oldS), sortedKeys(newS)

	recreate := map[string]bool{}
	for name, ns := range newS {
		if os, ok := oldS[name]; ok && !sameSetDef(os, ns) {
			recreate[name] = true
		}
	}
	// Chains that must be rewritten: their rules changed, or they use a
	// set that is recreated (a set cannot be deleted while rules use it).
	rewrite := map[string]bool{}
	rebase := map[string]bool{} // base definition changed: delete and add
	for name, nc := range newC {
		oc, ok := oldC[name]
		if !ok {
			continue
		}
		if !sameBase(oc.Base, nc.Base) {
			rebase[name] = true
			continue
		}
		if !sameRules(oc.Rules, nc.Rules) || usesAny(oc, recreate) {
			rewrite[name] = true
		}
	}

	// 1. Chains that change their base definition go away first (flushed,
	// so that they hold no reference), and come back below.
	for _, name := range sortedKeys(rebase) {
		tx.FlushChain(name)
		tx.DeleteChain(name)
	}
	// 2. New chains, so that jumps and verdict map elements can target them.
	for _, name := range newCN {
		if _, ok := oldC[name]; !ok || rebase[name] {
			def := Chain{Name: name, Base: newC[name].Base}
			tx.ops = append(tx.ops, op{kind: opAddChain, name: name, chain: &def})
		}
	}
	// 3. New sets, empty: their elements come after the rules (binding a
	// map to a rule walks the elements it holds).
	adds := map[string][]Element{}
	for _, name := range newSN {
		if _, ok := oldS[name]; !ok {
			def := *newS[name]
			def.Elements = nil
			tx.AddSet(def)
			adds[name] = sortedElements(newS[name].Elements)
		}
	}
	// 4. Flush chains to rewrite and chains to delete: drops their
	// references to sets and chains.
	for _, name := range oldCN {
		if rewrite[name] {
			tx.FlushChain(name)
		} else if _, ok := newC[name]; !ok && len(oldC[name].Rules) > 0 {
			tx.FlushChain(name)
		}
	}
	// 5. Element deletions (before chain deletions: a verdict map element
	// may be the last reference to a chain).
	for _, name := range newSN {
		ns := newS[name]
		os, ok := oldS[name]
		if !ok || recreate[name] || ns.Dynamic {
			continue
		}
		del, add := diffElements(os.Elements, ns.Elements)
		tx.DeleteElements(name, del...)
		adds[name] = add
	}
	// 6. Sets that go away or are recreated.
	for _, name := range oldSN {
		if _, ok := newS[name]; !ok || recreate[name] {
			tx.DeleteSet(name)
		}
		if recreate[name] {
			def := *newS[name]
			def.Elements = nil
			tx.AddSet(def)
			adds[name] = sortedElements(newS[name].Elements)
		}
	}
	// 7. Rules of new, rebased and rewritten chains.
	for _, name := range newCN {
		_, existed := oldC[name]
		if !existed || rewrite[name] || rebase[name] {
			c := newC[name]
			for i := range c.Rules {
				tx.AddRule(name, c.Rules[i])
			}
		}
	}
	// 8. Element additions.
	for _, name := range sortedKeys(adds) {
		tx.AddElements(name, adds[name]...)
	}
	// 9. Chains that go away.
	for _, name := range oldCN {
		if _, ok := newC[name]; !ok {
			tx.DeleteChain(name)
		}
	}
	if len(tx.ops) == 1 {
		// Only the idempotent `add table`: nothing to do.
		tx.ops = nil
	}
	return tx
}

func chainIndex(rs *Ruleset) map[string]*Chain {
	m := make(map[string]*Chain, len(rs.Chains))
	for i := range rs.Chains {
		m[rs.Chains[i].Name] = &rs.Chains[i]
	}
	return m
}

func setIndex(rs *Ruleset) map[string]*Set {
	m := make(map[string]*Set, len(rs.Sets))
	for i := range rs.Sets {
		m[rs.Sets[i].Name] = &rs.Sets[i]
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sameBase(a, b *BaseChain) bool {
	if a == nil || b == nil {
		return a == b
	}
	pa, pb := a.Policy, b.Policy
	if pa == "" {
		pa = PolicyAccept
	}
	if pb == "" {
		pb = PolicyAccept
	}
	return a.Type == b.Type && a.Hook == b.Hook && a.Priority == b.Priority && pa == pb
}

func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true // the same slice: a caller that reuses unchanged parts pays nothing
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

func sameSetDef(a, b *Set) bool {
	return sameTypes(a.Key, b.Key) && sameTypes(a.Data, b.Data) &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && a.Dynamic == b.Dynamic &&
		a.Constant == b.Constant && a.DefaultTimeout == b.DefaultTimeout &&
		a.effectiveSize() == b.effectiveSize() && a.Comment == b.Comment
}

// usesAny reports whether a chain's rules refer to one of the named sets.
func usesAny(c *Chain, sets map[string]bool) bool {
	if len(sets) == 0 {
		return false
	}
	for _, r := range c.Rules {
		for _, s := range r.Stmts {
			if name := setRef(s); name != "" && sets[name] {
				return true
			}
		}
	}
	return false
}

// setRef returns the named set a statement uses, or "".
func setRef(s Stmt) string {
	switch s := s.(type) {
	case Lookup:
		return s.Set
	case DNATMap:
		return s.Map
	case VMap:
		return s.Map
	case SetUpdate:
		return s.Set
	}
	return ""
}

// diffElements returns the elements of old to delete and of new to add.
// An element whose key stays but whose data, timeout or comment changes is
// in both lists.
func diffElements(old, new []Element) (del, add []Element) {
	if len(old) == len(new) && (len(old) == 0 || &old[0] == &new[0]) {
		return nil, nil // the same slice
	}
	oldByKey := make(map[string]*Element, len(old))
	for i := range old {
		oldByKey[old[i].keyString()] = &old[i]
	}
	newKeys := make(map[string]bool, len(new))
	for i := range new {
		k := new[i].keyString()
		newKeys[k] = true
		o, ok := oldByKey[k]
		if !ok {
			add = append(add, new[i])
			continue
		}
		if o.String() != new[i].String() {
			del = append(del, *o)
			add = append(add, new[i])
		}
	}
	for i := range old {
		if !newKeys[old[i].keyString()] {
			del = append(del, old[i])
		}
	}
	return sortedElements(del), sortedElements(add)
}
