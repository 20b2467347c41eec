package nftables

import (
	"fmt"
	"sort"
	"strings"
)

// Render returns the ruleset as one `nft -f` script that declares table t
// with all its sets, maps and chains: the dry-run view of what Apply would
// program. Output is deterministic: sets and chains are sorted by name,
// elements by key. Render does not validate; call Validate first.
func Render(t Table, rs *Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s {\n", t)
	sets := sortedSets(rs.Sets)
	for i, s := range sets {
		if i > 0 {
			b.WriteByte('\n')
		}
		writeSetBlock(&b, s, "\t")
	}
	chains := sortedChains(rs.Chains)
	for i, c := range chains {
		if i > 0 || len(sets) > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Base != nil {
			fmt.Fprintf(&b, "\t\t%s\n", baseSpec(c.Base))
		}
		for _, r := range c.Rules {
			b.WriteString("\t\t")
			b.WriteString(r.String())
			b.WriteByte('\n')
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String returns the rule as nft writes it: its statements and comment.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Stmts)+1)
	for _, s := range r.Stmts {
		if s == nil {
			parts = append(parts, "<nil>")
			continue
		}
		parts = append(parts, s.String())
	}
	if r.Comment != "" {
		parts = append(parts, `comment "`+r.Comment+`"`)
	}
	return strings.Join(parts, " ")
}

func baseSpec(b *BaseChain) string {
	pol := b.Policy
	if pol == "" {
		pol = PolicyAccept
	}
	return fmt.Sprintf("type %s hook %s priority %d; policy %s;", b.Type, b.Hook, b.Priority, pol)
}

func sortedSets(in []Set) []*Set {
	out := make([]*Set, len(in))
	for i := range in {
		out[i] = &in[i]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortedChains(in []Chain) []*Chain {
	out := make([]*Chain, len(in))
	for i := range in {
		out[i] = &in[i]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Set) kind() string {
	if s.IsMap() {
		return "map"
	}
	return "set"
}

// typeLine returns the `type ...` or `typeof ...` declaration of a set.
func (s *Set) typeLine() string {
	if s.usesTypeof() {
		key := make([]string, len(s.Key))
		for i, t := range s.Key {
			key[i] = typeofExpr[t][0]
		}
		line := "typeof " + strings.Join(key, " . ")
		if s.IsMap() {
			data := make([]string, len(s.Data))
			for i, t := range s.Data {
				data[i] = typeofExpr[t][1]
			}
			line += " : " + strings.Join(data, " . ")
		}
		return line
	}
	line := "type " + typesString(s.Key)
	if s.IsMap() {
		line += " : " + typesString(s.Data)
	}
	return line
}

func (s *Set) flagList() []string {
	var fl []string
	if s.Constant {
		fl = append(fl, "constant")
	}
	if s.Interval {
		fl = append(fl, "interval")
	}
	if s.Dynamic {
		fl = append(fl, "dynamic")
	}
	if s.Timeout {
		fl = append(fl, "timeout")
	}
	return fl
}

// writeSetBlock writes `set name { ... }` at the given indent.
func writeSetBlock(b *strings.Builder, s *Set, ind string) {
	fmt.Fprintf(b, "%s%s %s {\n", ind, s.kind(), s.Name)
	in := ind + "\t"
	fmt.Fprintf(b, "%s%s\n", in, s.typeLine())
	if fl := s.flagList(); len(fl) > 0 {
		fmt.Fprintf(b, "%sflags %s\n", in, strings.Join(fl, ","))
	}
	if s.DefaultTimeout > 0 {
		fmt.Fprintf(b, "%stimeout %s\n", in, formatDuration(s.DefaultTimeout))
	}
	if sz := s.effectiveSize(); sz > 0 {
		fmt.Fprintf(b, "%ssize %d\n", in, sz)
	}
	if s.Comment != "" {
		fmt.Fprintf(b, "%scomment \"%s\"\n", in, s.Comment)
	}
	if len(s.Elements) > 0 {
		fmt.Fprintf(b, "%selements = { ", in)
		writeElements(b, sortedElements(s.Elements), in+"\t     ", true)
		b.WriteString(" }\n")
	}
	fmt.Fprintf(b, "%s}\n", ind)
}

// writeElements writes elements separated by commas, one per line after
// the first when multiline is set.
func writeElements(b *strings.Builder, es []Element, cont string, multiline bool) {
	for i := range es {
		if i > 0 {
			b.WriteString(",")
			if multiline {
				b.WriteString("\n")
				b.WriteString(cont)
			} else {
				b.WriteString(" ")
			}
		}
		b.WriteString(es[i].String())
	}
}

// String returns the element as nft writes it inside `elements = { }`.
func (e Element) String() string {
	var b strings.Builder
	b.WriteString(e.keyString())
	if e.Timeout > 0 {
		b.WriteString(" timeout ")
		b.WriteString(formatDuration(e.Timeout))
	}
	if e.Comment != "" {
		b.WriteString(` comment "`)
		b.WriteString(e.Comment)
		b.WriteString(`"`)
	}
	if e.Verdict != nil || len(e.Data) > 0 {
		b.WriteString(" : ")
		b.WriteString(e.dataString())
	}
	return b.String()
}

// sortedElements returns the elements ordered by key, numerically per
// field, so that renders are deterministic and readable.
func sortedElements(es []Element) []Element {
	out := append([]Element(nil), es...)
	sort.SliceStable(out, func(i, j int) bool { return lessKey(out[i].Key, out[j].Key) })
	return out
}

func lessKey(a, b []Value) bool {
	for k := 0; k < len(a) && k < len(b); k++ {
		if c := compareValue(a[k], b[k]); c != 0 {
			return c < 0
		}
	}
	return len(a) < len(b)
}

func compareValue(a, b Value) int {
	if a.typ != b.typ {
		return int(a.typ) - int(b.typ)
	}
	switch a.typ {
	case TypeIPv4Addr, TypeIPv6Addr:
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		return a.bits - b.bits
	case TypeIfname:
		return strings.Compare(a.str, b.str)
	}
	switch {
	case a.num < b.num:
		return -1
	case a.num > b.num:
		return 1
	}
	return 0
}
