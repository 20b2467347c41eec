package nftables

import (
	"fmt"
	"strings"
)

type opKind uint8

const (
	opAddTable opKind = iota + 1
	opDelTable
	opAddChain // chain definition only; rules are separate opAddRule
	opDelChain
	opFlushChain
	opAddRule
	opAddSet // definition and initial elements
	opDelSet
	opFlushSet
	opAddElems
	opDelElems
)

type op struct {
	kind  opKind
	name  string // chain or set name
	chain *Chain // opAddChain: definition (Rules ignored)
	rule  *Rule  // opAddRule
	set   *Set   // opAddSet
	elems []Element
}

// Transaction is an ordered list of changes to the owned table that Apply
// sends as one atomic netlink batch: either all of it takes effect or none.
// Build it with the methods below (or with Diff, or Full) and render it with
// Render for a dry run. The zero Transaction is empty and ready to use.
type Transaction struct {
	ops []op
}

// Len returns the number of operations.
func (tx *Transaction) Len() int { return len(tx.ops) }

// Empty reports whether the transaction holds no operation.
func (tx *Transaction) Empty() bool { return len(tx.ops) == 0 }

// AddTable creates the table if it does not exist (nft `add table`).
func (tx *Transaction) AddTable() { tx.ops = append(tx.ops, op{kind: opAddTable}) }

// DeleteTable deletes the table and everything in it. It fails the batch
// when the table does not exist.
func (tx *Transaction) DeleteTable() { tx.ops = append(tx.ops, op{kind: opDelTable}) }

// AddChain creates the chain if it does not exist, then appends c.Rules to
// it.
func (tx *Transaction) AddChain(c Chain) {
	def := Chain{Name: c.Name, Base: c.Base}
	tx.ops = append(tx.ops, op{kind: opAddChain, name: c.Name, chain: &def})
	for i := range c.Rules {
		tx.AddRule(c.Name, c.Rules[i])
	}
}

// ReplaceChain creates the chain if needed and replaces all its rules with
// c.Rules (flush and rewrite), in this transaction.
func (tx *Transaction) ReplaceChain(c Chain) {
	def := Chain{Name: c.Name, Base: c.Base}
	tx.ops = append(tx.ops, op{kind: opAddChain, name: c.Name, chain: &def})
	tx.FlushChain(c.Name)
	for i := range c.Rules {
		tx.AddRule(c.Name, c.Rules[i])
	}
}

// FlushChain deletes every rule of the chain.
func (tx *Transaction) FlushChain(name string) {
	tx.ops = append(tx.ops, op{kind: opFlushChain, name: name})
}

// DeleteChain deletes the chain and the rules it holds. No rule of
// another chain and no verdict map element may still refer to it (jump or
// goto) at that point of the batch.
func (tx *Transaction) DeleteChain(name string) {
	tx.ops = append(tx.ops, op{kind: opDelChain, name: name})
}

// AddRule appends a rule to the end of a chain.
func (tx *Transaction) AddRule(chain string, r Rule) {
	rr := r
	tx.ops = append(tx.ops, op{kind: opAddRule, name: chain, rule: &rr})
}

// AddSet creates the set or map (nothing happens to an existing one with
// the same definition) and adds s.Elements to it.
func (tx *Transaction) AddSet(s Set) {
	ss := s
	tx.ops = append(tx.ops, op{kind: opAddSet, name: s.Name, set: &ss})
}

// DeleteSet deletes a set or map, which no rule may use any more.
func (tx *Transaction) DeleteSet(name string) {
	tx.ops = append(tx.ops, op{kind: opDelSet, name: name})
}

// FlushSet deletes every element of a set or map.
func (tx *Transaction) FlushSet(name string) {
	tx.ops = append(tx.ops, op{kind: opFlushSet, name: name})
}

// AddElements adds elements to a set or map. Adding an element whose key
// exists with different data fails the batch; delete it first in the same
// transaction.
func (tx *Transaction) AddElements(set string, elems ...Element) {
	if len(elems) == 0 {
		return
	}
	tx.ops = append(tx.ops, op{kind: opAddElems, name: set, elems: append([]Element(nil), elems...)})
}

// DeleteElements deletes elements (by key) from a set or map. Deleting a
// missing element fails the batch.
func (tx *Transaction) DeleteElements(set string, elems ...Element) {
	if len(elems) == 0 {
		return
	}
	tx.ops = append(tx.ops, op{kind: opDelElems, name: set, elems: append([]Element(nil), elems...)})
}

// Full returns a transaction that makes table t hold exactly rs, whatever
// it held before: it creates the table, deletes it with all its content,
// and declares it again, in one batch. Dynamic sets start empty and
// counters at zero. Use Diff to change only what differs.
func Full(rs *Ruleset) *Transaction {
	tx := &Transaction{}
	tx.AddTable()
	tx.DeleteTable()
	tx.AddTable()
	tx.addAll(rs)
	return tx
}

// Create returns a transaction that creates table t holding rs; it fails if
// objects with the same names exist with other definitions.
func Create(rs *Ruleset) *Transaction {
	tx := &Transaction{}
	tx.AddTable()
	tx.addAll(rs)
	return tx
}

func (tx *Transaction) addAll(rs *Ruleset) {
	chains := sortedChains(rs.Chains)
	sets := sortedSets(rs.Sets)
	// Chains first, so that verdict map elements and jumps can refer to
	// them; then empty sets; then rules; then elements. The order matters
	// for the kernel's cost: binding a map to a rule walks every element
	// the map already holds (nf_tables_bind_set), so rules bound before
	// the elements arrive make a cold batch linear instead of quadratic.
	for _, c := range chains {
		def := Chain{Name: c.Name, Base: c.Base}
		tx.ops = append(tx.ops, op{kind: opAddChain, name: c.Name, chain: &def})
	}
	for _, s := range sets {
		def := *s
		def.Elements = nil
		tx.AddSet(def)
	}
	for _, c := range chains {
		for i := range c.Rules {
			tx.AddRule(c.Name, c.Rules[i])
		}
	}
	for _, s := range sets {
		tx.AddElements(s.Name, sortedElements(s.Elements)...)
	}
}

// Render returns the transaction as an `nft -f` script of commands (add,
// delete, flush) for table t, in order: the dry-run view of Apply.
func (tx *Transaction) Render(t Table) string {
	var b strings.Builder
	for i := range tx.ops {
		o := &tx.ops[i]
		switch o.kind {
		case opAddTable:
			fmt.Fprintf(&b, "add table %s\n", t)
		case opDelTable:
			fmt.Fprintf(&b, "delete table %s\n", t)
		case opAddChain:
			if o.chain.Base != nil {
				fmt.Fprintf(&b, "add chain %s %s { %s }\n", t, o.name, baseSpec(o.chain.Base))
			} else {
				fmt.Fprintf(&b, "add chain %s %s\n", t, o.name)
			}
		case opDelChain:
			fmt.Fprintf(&b, "delete chain %s %s\n", t, o.name)
		case opFlushChain:
			fmt.Fprintf(&b, "flush chain %s %s\n", t, o.name)
		case opAddRule:
			fmt.Fprintf(&b, "add rule %s %s %s\n", t, o.name, o.rule)
		case opAddSet:
			s := *o.set
			s.Elements = nil
			fmt.Fprintf(&b, "add %s %s %s { %s; ", s.kind(), t, s.Name, s.typeLine())
			if fl := s.flagList(); len(fl) > 0 {
				fmt.Fprintf(&b, "flags %s; ", strings.Join(fl, ","))
			}
			if s.DefaultTimeout > 0 {
				fmt.Fprintf(&b, "timeout %s; ", formatDuration(s.DefaultTimeout))
			}
			if sz := s.effectiveSize(); sz > 0 {
				fmt.Fprintf(&b, "size %d; ", sz)
			}
			if s.Comment != "" {
				fmt.Fprintf(&b, "comment \"%s\"; ", s.Comment)
			}
			b.WriteString("}\n")
			if len(o.set.Elements) > 0 {
				writeElemCmd(&b, "add", t, o.name, sortedElements(o.set.Elements), false)
			}
		case opDelSet:
			fmt.Fprintf(&b, "delete set %s %s\n", t, o.name)
		case opFlushSet:
			fmt.Fprintf(&b, "flush set %s %s\n", t, o.name)
		case opAddElems:
			writeElemCmd(&b, "add", t, o.name, o.elems, false)
		case opDelElems:
			writeElemCmd(&b, "delete", t, o.name, o.elems, true)
		}
	}
	return b.String()
}

func writeElemCmd(b *strings.Builder, verb string, t Table, set string, es []Element, keysOnly bool) {
	fmt.Fprintf(b, "%s element %s %s { ", verb, t, set)
	if keysOnly {
		for i := range es {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(es[i].keyString())
		}
	} else {
		writeElements(b, es, "", false)
	}
	b.WriteString(" }\n")
}
