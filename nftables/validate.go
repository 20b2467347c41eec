package nftables

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// nameRE is what the engine accepts for table, chain and set names: an nft
// identifier, which can neither break out of an nft script nor collide with
// the anonymous set names the kernel allocates (__set%d).
var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_./-]*$`)

const (
	maxNameLen    = 128
	maxCommentLen = 128
	// nft allocates registers in 16-byte units and has four of them; a
	// rule whose operands need more makes nft 1.0.6 abort, so the engine
	// refuses it to keep every rendered script loadable.
	regUnits = 4
)

func checkName(path, what, name string) error {
	if name == "" {
		return &ValidationError{path, what + " name is empty"}
	}
	if len(name) > maxNameLen {
		return &ValidationError{path, fmt.Sprintf("%s name %q is longer than %d bytes", what, name, maxNameLen)}
	}
	if !nameRE.MatchString(name) {
		return &ValidationError{path, fmt.Sprintf("%s name %q must match %s", what, name, nameRE)}
	}
	if nftKeywords[name] {
		return &ValidationError{path, fmt.Sprintf("%s name %q is an nft keyword; nft could not parse a script using it", what, name)}
	}
	return nil
}

// nftKeywords are the words nft's scanner turns into keywords wherever they
// appear, so that they cannot name a chain or set in a script: the words
// nft 1.0.6 refuses (found by trying each), plus those newer nft versions
// added.
var nftKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`eq ne le lt ge gt lshift rshift xor and or not vmap include define
		redefine undefine describe hook device devices table chain rule set element map flowtable handle
		ruleset socket tproxy accept drop continue jump goto return inet netdev add replace update create
		insert delete get list reset flush rename import export monitor destroy position index comment
		constant interval dynamic auto-merge timeout gc-interval elements expires policy size flow offload
		meter counter last log queue limit quota hour day reject snat dnat masquerade redirect random th
		bridge ether type typeof vlan 8021ad 8021q arp ip ecn time icmp icmpv6 igmp ip6 priority ah esp comp
		flags udp udplite vxlan vni geneve gre gretap tcp dccp sctp rt rt0 rt2 srh hbh frag dst mh meta mark
		iif iifname iiftype oif oifname oiftype skuid skgid nftrace rtclassid ibriport ibrname obriport
		obrname pkttype cpu iifgroup oifgroup cgroup ct numgen jhash symhash dup fwd fib osf synproxy tunnel
		notrack all exists missing exthdr ipsec secmark xt`) {
		m[w] = true
	}
	return m
}()

func checkComment(path, c string) error {
	if len(c) > maxCommentLen {
		return &ValidationError{path, fmt.Sprintf("comment is longer than %d bytes", maxCommentLen)}
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e || c[i] == '"' || c[i] == '\\' {
			return &ValidationError{path, fmt.Sprintf("comment %q holds a byte (%#x) nft cannot quote", c, c[i])}
		}
	}
	return nil
}

// ValidateTable checks a table's family and name.
func ValidateTable(t Table) error {
	if !t.Family.Valid() {
		return &ValidationError{"table.family", fmt.Sprintf("unsupported family %q", t.Family)}
	}
	return checkName("table.name", "table", t.Name)
}

// schema answers what a validator needs to know about the table: the sets
// and chains that exist (or will, in the same batch). known is false when
// the validator cannot know (a delta against an unknown kernel state), in
// which case references are not checked and the kernel is the judge.
type schema struct {
	family Family
	known  bool
	sets   map[string]*Set   // a nil value hides the parent's entry
	chains map[string]*Chain // likewise
	parent *schema
}

// set returns the set definition named n, or nil.
func (sc *schema) set(n string) *Set {
	if s, ok := sc.sets[n]; ok {
		return s
	}
	if sc.parent != nil {
		return sc.parent.set(n)
	}
	return nil
}

// chain returns the chain definition named n, or nil.
func (sc *schema) chain(n string) *Chain {
	if c, ok := sc.chains[n]; ok {
		return c
	}
	if sc.parent != nil {
		return sc.parent.chain(n)
	}
	return nil
}

// overlay returns a schema that records changes on top of sc.
func (sc *schema) overlay() *schema {
	return &schema{family: sc.family, known: sc.known, sets: map[string]*Set{}, chains: map[string]*Chain{}, parent: sc}
}

func newSchema(t Table, rs *Ruleset) *schema {
	sc := &schema{family: t.Family, known: rs != nil, sets: map[string]*Set{}, chains: map[string]*Chain{}}
	if rs != nil {
		for i := range rs.Sets {
			sc.sets[rs.Sets[i].Name] = &rs.Sets[i]
		}
		for i := range rs.Chains {
			sc.chains[rs.Chains[i].Name] = &rs.Chains[i]
		}
	}
	return sc
}

// Validate checks a whole desired ruleset for table t: names, types,
// element values, references between rules, chains and sets, and every
// statement. It returns a *ValidationError for the first problem found.
func Validate(t Table, rs *Ruleset) error {
	if err := ValidateTable(t); err != nil {
		return err
	}
	if err := checkUnique(rs); err != nil {
		return err
	}
	sc := newSchema(t, rs)
	for i := range rs.Sets {
		if err := sc.checkSet(&rs.Sets[i]); err != nil {
			return err
		}
	}
	for i := range rs.Chains {
		if err := sc.checkChain(&rs.Chains[i]); err != nil {
			return err
		}
	}
	return nil
}

// checkUnique fails when two sets or two chains of rs have the same name.
func checkUnique(rs *Ruleset) error {
	seen := make(map[string]bool, len(rs.Sets))
	for i := range rs.Sets {
		n := rs.Sets[i].Name
		if seen[n] {
			return &ValidationError{fmt.Sprintf("sets[%d]", i), fmt.Sprintf("duplicate set %q", n)}
		}
		seen[n] = true
	}
	seen = make(map[string]bool, len(rs.Chains))
	for i := range rs.Chains {
		n := rs.Chains[i].Name
		if seen[n] {
			return &ValidationError{fmt.Sprintf("chains[%d]", i), fmt.Sprintf("duplicate chain %q", n)}
		}
		seen[n] = true
	}
	return nil
}

// checkDeleted fails, as Validate would, when tx deletes a set or chain
// that rs, the ruleset tx leads to, still uses: in a rule, or (a chain) in
// a verdict map element. It walks rs only when tx deletes something.
func checkDeleted(t Table, rs *Ruleset, tx *Transaction) error {
	sets, chains := map[string]bool{}, map[string]bool{}
	for i := range tx.ops {
		switch o := &tx.ops[i]; o.kind {
		case opDelSet:
			sets[o.name] = true
		case opDelChain:
			chains[o.name] = true
		}
	}
	if len(sets) == 0 && len(chains) == 0 {
		return nil
	}
	// A set or chain deleted and added again (a changed definition) stays.
	for i := range rs.Sets {
		delete(sets, rs.Sets[i].Name)
	}
	for i := range rs.Chains {
		delete(chains, rs.Chains[i].Name)
	}
	if len(sets) == 0 && len(chains) == 0 {
		return nil
	}
	var sc *schema // built on the first hit: the validator reports it
	check := func() *schema {
		if sc == nil {
			sc = newSchema(t, rs)
		}
		return sc
	}
	for i := range rs.Chains {
		c := &rs.Chains[i]
		for j := range c.Rules {
			if usesDeleted(&c.Rules[j], sets, chains) {
				if err := check().checkRule(c, j, &c.Rules[j]); err != nil {
					return err
				}
			}
		}
	}
	if len(chains) == 0 {
		return nil
	}
	for i := range rs.Sets {
		s := &rs.Sets[i]
		for j := range s.Elements {
			if v := s.Elements[j].Verdict; v != nil && chains[v.Chain] {
				if err := check().checkElements(setPath(s.Name)+".elements", s, false); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// usesDeleted reports whether r refers to one of the named sets or chains.
func usesDeleted(r *Rule, sets, chains map[string]bool) bool {
	for _, s := range r.Stmts {
		if n := setRef(s); n != "" && sets[n] {
			return true
		}
		for _, n := range chainRefs(s) {
			if chains[n] {
				return true
			}
		}
	}
	return false
}

func chainPath(name string) string { return fmt.Sprintf("chains[%q]", name) }
func setPath(name string) string   { return fmt.Sprintf("sets[%q]", name) }

func (sc *schema) checkChain(c *Chain) error {
	path := chainPath(c.Name)
	if err := checkName(path+".name", "chain", c.Name); err != nil {
		return err
	}
	if b := c.Base; b != nil {
		switch b.Type {
		case ChainTypeFilter:
			switch b.Hook {
			case HookPrerouting, HookInput, HookForward, HookOutput, HookPostrouting:
			default:
				return &ValidationError{path + ".base.hook", fmt.Sprintf("unknown hook %q", b.Hook)}
			}
		case ChainTypeNAT:
			switch b.Hook {
			case HookPrerouting, HookInput, HookOutput, HookPostrouting:
			default:
				return &ValidationError{path + ".base.hook", fmt.Sprintf("a nat chain cannot hook %q", b.Hook)}
			}
		default:
			return &ValidationError{path + ".base.type", fmt.Sprintf("unsupported chain type %q", b.Type)}
		}
		switch b.Policy {
		case "", PolicyAccept, PolicyDrop:
		default:
			return &ValidationError{path + ".base.policy", fmt.Sprintf("unknown policy %q", b.Policy)}
		}
	}
	for i := range c.Rules {
		if err := sc.checkRule(c, i, &c.Rules[i]); err != nil {
			return err
		}
	}
	return nil
}

func (sc *schema) checkRule(c *Chain, idx int, r *Rule) error {
	path := fmt.Sprintf("%s.rules[%d]", chainPath(c.Name), idx)
	if len(r.Stmts) == 0 {
		return &ValidationError{path, "a rule needs at least one statement"}
	}
	if err := checkComment(path+".comment", r.Comment); err != nil {
		return err
	}
	rc := &ruleCheck{sc: sc, chain: c, path: path}
	for i, s := range r.Stmts {
		rc.idx = i
		rc.last = i == len(r.Stmts)-1
		if s == nil {
			return rc.fail("", "nil statement")
		}
		if terminal(s) && !rc.last {
			return rc.fail("", "%s ends evaluation and must be the last statement", s)
		}
		if err := s.check(rc); err != nil {
			return err
		}
	}
	return nil
}

func terminal(s Stmt) bool {
	switch s.(type) {
	case Verdict, Reject, DNAT, DNATMap, SNAT, Masquerade, VMap:
		return true
	}
	return false
}

// ruleCheck is the state of checking one rule, statement by statement.
type ruleCheck struct {
	sc    *schema
	chain *Chain
	path  string
	idx   int
	last  bool
	l4ok  bool  // a transport protocol match precedes (nat may map ports)
	nf    uint8 // network family the rule is known to match
	proto uint8 // transport protocol the rule is known to match
}

// setNF records that the rule matches network family nfp from here on, and
// fails on a contradiction (nft refuses "conflicting protocols" too).
func (c *ruleCheck) setNF(sub string, nfp uint8) error {
	if nfp == 0 {
		return nil
	}
	if c.nf != 0 && c.nf != nfp {
		return c.fail(sub, "conflicting network families in one rule (%s after %s)", nfFamily(nfp), nfFamily(c.nf))
	}
	c.nf = nfp
	return nil
}

// setProto is setNF for the transport protocol.
func (c *ruleCheck) setProto(sub string, p uint8) error {
	if p == 0 {
		return nil
	}
	if c.proto != 0 && c.proto != p {
		return c.fail(sub, "conflicting transport protocols in one rule (%s after %s)", Proto(p), Proto(c.proto))
	}
	c.proto, c.l4ok = p, true
	return nil
}

// fieldContext records the family and protocol a field implies.
func (c *ruleCheck) fieldContext(sub string, f Field) error {
	fi := f.info()
	if err := c.setNF(sub, fi.nfproto); err != nil {
		return err
	}
	return c.setProto(sub, fi.l4proto)
}

func (c *ruleCheck) fail(sub, format string, args ...any) error {
	return &ValidationError{fmt.Sprintf("%s.stmts[%d]%s", c.path, c.idx, sub), fmt.Sprintf(format, args...)}
}

// familyOK reports whether a network family (unix.NFPROTO_*) can appear in
// the table.
func (c *ruleCheck) familyOK(nfproto uint8) bool {
	switch c.sc.family {
	case FamilyIPv4:
		return nfproto != unix.NFPROTO_IPV6
	case FamilyIPv6:
		return nfproto != unix.NFPROTO_IPV4
	}
	return true
}

func (c *ruleCheck) checkFields(sub string, fs []Field) error {
	if len(fs) == 0 {
		return c.fail(sub, "no fields")
	}
	for i, f := range fs {
		if !f.Valid() {
			return c.fail(fmt.Sprintf("%s[%d]", sub, i), "unknown field %d", f)
		}
		if !c.familyOK(f.info().nfproto) {
			return c.fail(fmt.Sprintf("%s[%d]", sub, i), "%s in a %s table", f, c.sc.family)
		}
		if err := c.fieldContext(fmt.Sprintf("%s[%d]", sub, i), f); err != nil {
			return err
		}
	}
	return nil
}

// hookOf returns the hook of the chain when it is a base chain.
func (c *ruleCheck) hook() (Hook, ChainType, bool) {
	if c.chain == nil || c.chain.Base == nil {
		return "", "", false
	}
	return c.chain.Base.Hook, c.chain.Base.Type, true
}

func (c *ruleCheck) lookupSet(sub, name string) (*Set, error) {
	if err := checkName(fmt.Sprintf("%s.stmts[%d]%s", c.path, c.idx, sub), "set", name); err != nil {
		return nil, err
	}
	s := c.sc.set(name)
	if s == nil && c.sc.known {
		return nil, c.fail(sub, "no set or map %q", name)
	}
	return s, nil
}

func sameTypes(a, b []Type) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typesString(ts []Type) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, " . ")
}

func units(n int) int { return (n + 15) / 16 }

func (c *ruleCheck) checkValue(sub string, f Field, v Value, allowPrefix bool) error {
	if v.Type() != f.Type() {
		return c.fail(sub, "%s value %s has type %s, want %s", f, v, v.Type(), f.Type())
	}
	switch v.Type() {
	case TypeIPv4Addr, TypeIPv6Addr:
		if err := checkAddr(v.AsAddr()); err != nil {
			return c.fail(sub, "%v", err)
		}
		if v.IsPrefix() && !allowPrefix {
			return c.fail(sub, "prefix %s not allowed here", v)
		}
	case TypeInetProto:
		if v.num > 255 {
			return c.fail(sub, "protocol %d out of range", v.num)
		}
	case TypeInetService:
		if v.num > 65535 {
			return c.fail(sub, "port %d out of range", v.num)
		}
	case TypeIfname:
		if err := checkIfname(v.str); err != nil {
			return c.fail(sub, "%v", err)
		}
	}
	return nil
}

func familyNF(f Family) uint8 {
	if f == FamilyIPv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

func checkAddr(a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("invalid address")
	}
	if a.Is4In6() {
		return fmt.Errorf("IPv4-mapped IPv6 address %s is ambiguous", a)
	}
	if a.Zone() != "" {
		return fmt.Errorf("address %s has a zone", a)
	}
	return nil
}

func checkIfname(s string) error {
	name := strings.TrimSuffix(s, "*")
	if name == "" || len(name) > 15 {
		return fmt.Errorf("interface name %q must be 1-15 bytes", s)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch <= 0x20 || ch > 0x7e || ch == '"' || ch == '\\' || ch == '*' || ch == '/' {
			return fmt.Errorf("interface name %q holds a byte (%#x) that is not allowed", s, ch)
		}
	}
	return nil
}

func (m Match) check(c *ruleCheck) error {
	if !m.Field.Valid() {
		return c.fail(".field", "unknown field %d", m.Field)
	}
	fi := m.Field.info()
	if !c.familyOK(fi.nfproto) {
		return c.fail(".field", "%s in a %s table", m.Field, c.sc.family)
	}
	if len(m.Values) == 0 {
		return c.fail(".values", "no values")
	}
	seen := map[string]bool{}
	for i, v := range m.Values {
		sub := fmt.Sprintf(".values[%d]", i)
		if err := c.checkValue(sub, m.Field, v, true); err != nil {
			return err
		}
		if seen[v.String()] {
			return c.fail(sub, "duplicate value %s", v)
		}
		if v.IsPrefix() && v.bits == 0 && len(m.Values) == 1 {
			return c.fail(sub, "prefix %s matches every address; drop the match", v)
		}
		seen[v.String()] = true
		if v.Type() == TypeIfname && len(m.Values) > 1 {
			return c.fail(sub, "several interface names need a named set (Lookup): google/nftables v0.3.0 marks anonymous sets big-endian and nft would list the names as empty strings")
		}
	}
	if len(m.Values) > 1 {
		if err := checkIntervals(m.Values); err != nil {
			return c.fail(".values", "%v", err)
		}
	}
	if err := c.fieldContext(".field", m.Field); err != nil {
		return err
	}
	if m.Field == FieldL4Proto && !m.Neg {
		c.l4ok = true
		if len(m.Values) == 1 {
			return c.setProto(".values", uint8(m.Values[0].num))
		}
	}
	return nil
}

// checkIntervals refuses overlapping prefixes in one interval set, which the
// kernel would refuse too.
func checkIntervals(vs []Value) error {
	var ps []netip.Prefix
	any := false
	for _, v := range vs {
		if v.Type() == TypeIPv4Addr || v.Type() == TypeIPv6Addr {
			ps = append(ps, v.AsPrefix().Masked())
			if v.IsPrefix() {
				any = true
			}
		}
	}
	if !any {
		return nil
	}
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			if ps[i].Overlaps(ps[j]) {
				return fmt.Errorf("prefixes %s and %s overlap", ps[i], ps[j])
			}
		}
	}
	return nil
}

func (m NFProtoMatch) check(c *ruleCheck) error {
	if c.sc.family != FamilyINet {
		return c.fail(".family", "meta nfproto is only meaningful in an inet table")
	}
	if m.Family != FamilyIPv4 && m.Family != FamilyIPv6 {
		return c.fail(".family", "want ip or ip6, got %q", m.Family)
	}
	return c.setNF(".family", familyNF(m.Family))
}

func (m MarkMatch) check(c *ruleCheck) error {
	if m.Mask != 0 && m.Value&^m.Mask != 0 {
		return c.fail(".value", "value 0x%x has bits outside mask 0x%x", m.Value, m.Mask)
	}
	return nil
}

func (m FibLocal) check(c *ruleCheck) error { return nil }

func (m CtState) check(c *ruleCheck) error {
	all := CtInvalid | CtEstablished | CtRelated | CtNew | CtUntracked
	if m.States == 0 || m.States&^all != 0 {
		return c.fail(".states", "invalid state set %#x", uint32(m.States))
	}
	if m.Neg && m.States&(m.States-1) != 0 {
		return c.fail(".states", "negate one state only (nft compares `!= a,b` with the bits ORed, which matches nothing useful)")
	}
	return nil
}

func (m CtStatus) check(c *ruleCheck) error {
	if m.Bits == 0 || m.Bits&^(CtStatusSNAT|CtStatusDNAT) != 0 {
		return c.fail(".bits", "want snat and/or dnat, got %#x", uint32(m.Bits))
	}
	return nil
}

func (m Lookup) check(c *ruleCheck) error {
	if err := c.checkFields(".fields", m.Fields); err != nil {
		return err
	}
	s, err := c.lookupSet(".set", m.Set)
	if err != nil {
		return err
	}
	if s != nil {
		if s.IsMap() {
			return c.fail(".set", "%q is a map; use VMap or DNATMap", m.Set)
		}
		if !sameTypes(s.Key, fieldTypes(m.Fields)) {
			return c.fail(".fields", "key %s does not match set %q of type %s", fieldsString(m.Fields), m.Set, typesString(s.Key))
		}
	}
	if units(concatLen(fieldTypes(m.Fields))) > regUnits {
		return c.fail(".fields", "key of %d bytes does not fit the registers", concatLen(fieldTypes(m.Fields)))
	}
	return nil
}

func (Counter) check(c *ruleCheck) error { return nil }

func (s SetMark) check(c *ruleCheck) error {
	if s.Op > MarkAnd {
		return c.fail(".op", "unknown mark operation %d", s.Op)
	}
	return nil
}

func (c *ruleCheck) checkNATHook(stmt string, dst bool) error {
	hook, typ, ok := c.hook()
	if !ok {
		return nil // regular chain: the kernel checks the hooks that reach it
	}
	if typ != ChainTypeNAT {
		return c.fail("", "%s needs a nat chain, %q is a %s chain", stmt, c.chain.Name, typ)
	}
	if dst && hook != HookPrerouting && hook != HookOutput {
		return c.fail("", "%s only works in prerouting and output, not %s", stmt, hook)
	}
	if !dst && hook != HookPostrouting && hook != HookInput {
		return c.fail("", "%s only works in postrouting and input, not %s", stmt, hook)
	}
	return nil
}

func (s DNAT) check(c *ruleCheck) error {
	if err := checkAddr(s.Addr); err != nil {
		return c.fail(".addr", "%v", err)
	}
	if !c.familyOK(nfprotoOf(s.Addr)) {
		return c.fail(".addr", "%s in a %s table", s.Addr, c.sc.family)
	}
	if err := c.setNF(".addr", nfprotoOf(s.Addr)); err != nil {
		return err
	}
	if s.Port != 0 && !c.l4ok {
		return c.fail(".port", "a port needs an earlier transport protocol match (meta l4proto or tcp/udp/sctp port) in the rule")
	}
	return c.checkNATHook("dnat", true)
}

func (s SNAT) check(c *ruleCheck) error {
	if err := checkAddr(s.Addr); err != nil {
		return c.fail(".addr", "%v", err)
	}
	if !c.familyOK(nfprotoOf(s.Addr)) {
		return c.fail(".addr", "%s in a %s table", s.Addr, c.sc.family)
	}
	if err := c.setNF(".addr", nfprotoOf(s.Addr)); err != nil {
		return err
	}
	return c.checkNATHook("snat", false)
}

func (s Masquerade) check(c *ruleCheck) error {
	hook, typ, ok := c.hook()
	if ok && (typ != ChainTypeNAT || hook != HookPostrouting) {
		return c.fail("", "masquerade needs a nat postrouting chain")
	}
	return nil
}

func (v Verdict) check(c *ruleCheck) error {
	switch v.Kind {
	case VerdictAccept, VerdictDrop, VerdictReturn, VerdictContinue:
		if v.Chain != "" {
			return c.fail(".chain", "%s takes no chain", v)
		}
	case VerdictJump, VerdictGoto:
		return c.sc.checkJumpTarget(fmt.Sprintf("%s.stmts[%d].chain", c.path, c.idx), v.Chain)
	default:
		return c.fail(".kind", "unknown verdict kind %d", v.Kind)
	}
	return nil
}

// checkJumpTarget checks the chain a jump or goto (in a rule or a verdict
// map element) names: a valid name and, when the table is known, an
// existing regular chain (the kernel refuses a jump to a base chain).
func (sc *schema) checkJumpTarget(path, name string) error {
	if err := checkName(path, "chain", name); err != nil {
		return err
	}
	if !sc.known {
		return nil
	}
	t := sc.chain(name)
	if t == nil {
		return &ValidationError{path, fmt.Sprintf("no chain %q", name)}
	}
	if t.Base != nil {
		return &ValidationError{path, fmt.Sprintf("cannot jump to base chain %q", name)}
	}
	return nil
}

func (k Concat) checkKey(c *ruleCheck, path string) error {
	if err := c.checkFields(path, k); err != nil {
		return err
	}
	if units(concatLen(fieldTypes(k))) > regUnits {
		return c.fail(path, "key of %d bytes does not fit the registers", concatLen(fieldTypes(k)))
	}
	return nil
}

func (k Numgen) checkKey(c *ruleCheck, path string) error {
	if k.Mod == 0 {
		return c.fail(path+".mod", "modulus must be at least 1")
	}
	if uint64(k.Mod)+uint64(k.Offset) > 1<<32 {
		return c.fail(path, "mod + offset overflows 32 bits")
	}
	return nil
}

func (k JHash) checkKey(c *ruleCheck, path string) error {
	if k.Mod == 0 {
		return c.fail(path+".mod", "modulus must be at least 1")
	}
	if k.Seed == 0 {
		return c.fail(path+".seed", "seed must not be 0 (google/nftables v0.3.0 drops a zero seed and the kernel then picks a random one)")
	}
	if uint64(k.Mod)+uint64(k.Offset) > 1<<32 {
		return c.fail(path, "mod + offset overflows 32 bits")
	}
	if err := c.checkFields(path+".fields", k.Fields); err != nil {
		return err
	}
	if 1+units(concatLen(fieldTypes(k.Fields))) > regUnits {
		return c.fail(path+".fields", "hash input of %d bytes does not fit the registers", concatLen(fieldTypes(k.Fields)))
	}
	return nil
}

// checkMapUse checks a named or anonymous map used with key k whose data
// must satisfy wantData.
func (c *ruleCheck) checkMapUse(k Key, name string, entries []Element, dataOK func([]Type) error, verdict bool) error {
	if k == nil {
		return c.fail(".key", "no key")
	}
	if err := k.checkKey(c, ".key"); err != nil {
		return err
	}
	keyTypes := k.keyTypes()
	switch {
	case name != "" && len(entries) > 0:
		return c.fail("", "give either a named map or anonymous entries, not both")
	case name != "":
		s, err := c.lookupSet(".map", name)
		if err != nil {
			return err
		}
		if s == nil {
			return nil
		}
		if !s.IsMap() {
			return c.fail(".map", "%q is a set, not a map", name)
		}
		if !sameTypes(s.Key, keyTypes) {
			return c.fail(".key", "key %s (%s) does not match map %q of type %s", k, typesString(keyTypes), name, typesString(s.Key))
		}
		if verdict != s.IsVerdictMap() {
			return c.fail(".map", "map %q has data %s", name, typesString(s.Data))
		}
		if !verdict {
			if err := dataOK(s.Data); err != nil {
				return c.fail(".map", "map %q: %v", name, err)
			}
		}
	case len(entries) == 0:
		return c.fail(".entries", "no map and no entries")
	default:
		anon := &Set{Name: "anonymous", Key: keyTypes, Constant: true}
		if verdict {
			anon.Data = []Type{TypeVerdict}
		} else {
			anon.Data = elementDataTypes(entries[0])
			if err := dataOK(anon.Data); err != nil {
				return c.fail(".entries", "%v", err)
			}
		}
		anon.Elements = entries
		if err := c.sc.checkElements(fmt.Sprintf("%s.stmts[%d].entries", c.path, c.idx), anon, true); err != nil {
			return err
		}
	}
	return nil
}

func elementDataTypes(e Element) []Type {
	if e.Verdict != nil {
		return []Type{TypeVerdict}
	}
	ts := make([]Type, len(e.Data))
	for i, v := range e.Data {
		ts[i] = v.Type()
	}
	return ts
}

func natData(fam Family) func([]Type) error {
	addr := TypeIPv4Addr
	if fam == FamilyIPv6 {
		addr = TypeIPv6Addr
	}
	return func(ts []Type) error {
		if (len(ts) == 1 && ts[0] == addr) || (len(ts) == 2 && ts[0] == addr && ts[1] == TypeInetService) {
			return nil
		}
		return fmt.Errorf("data %s is not %s or %s . inet_service", typesString(ts), addr, addr)
	}
}

func (s DNATMap) check(c *ruleCheck) error {
	var nfp uint8 = unix.NFPROTO_IPV4
	switch s.Family {
	case FamilyIPv4:
	case FamilyIPv6:
		nfp = unix.NFPROTO_IPV6
	default:
		return c.fail(".family", "want ip or ip6, got %q", s.Family)
	}
	if !c.familyOK(nfp) {
		return c.fail(".family", "%s in a %s table", s.Family, c.sc.family)
	}
	if err := c.checkMapUse(s.Key, s.Map, s.Entries, natData(s.Family), false); err != nil {
		return err
	}
	if err := c.setNF(".family", nfp); err != nil {
		return err
	}
	if c.mapHasPort(s.Map, s.Entries) && !c.l4ok {
		return c.fail("", "a map to address . port needs an earlier transport protocol match (meta l4proto or tcp/udp/sctp port) in the rule")
	}
	return c.checkNATHook("dnat", true)
}

func (c *ruleCheck) mapHasPort(name string, entries []Element) bool {
	if name != "" {
		if s := c.sc.set(name); s != nil {
			return len(s.Data) == 2
		}
		return false
	}
	return len(entries) > 0 && len(entries[0].Data) == 2
}

func (s VMap) check(c *ruleCheck) error {
	if err := c.checkMapUse(s.Key, s.Map, s.Entries, nil, true); err != nil {
		return err
	}
	for i, e := range s.Entries {
		if e.Verdict == nil {
			return c.fail(fmt.Sprintf(".entries[%d]", i), "verdict map entry without a verdict")
		}
	}
	return nil
}

func (s Reject) check(c *ruleCheck) error {
	var names map[uint8]string
	switch s.Type {
	case RejectDefault:
		if s.Code != 0 {
			return c.fail(".code", "plain reject takes no code")
		}
	case RejectICMPX:
		names = icmpxNames
	case RejectICMP:
		names = icmpNames
		if !c.familyOK(unix.NFPROTO_IPV4) {
			return c.fail(".type", "icmp reject in an ip6 table")
		}
		if err := c.setNF(".type", unix.NFPROTO_IPV4); err != nil {
			return err
		}
	case RejectICMPv6:
		names = icmpv6Names
		if !c.familyOK(unix.NFPROTO_IPV6) {
			return c.fail(".type", "icmpv6 reject in an ip table")
		}
		if err := c.setNF(".type", unix.NFPROTO_IPV6); err != nil {
			return err
		}
	case RejectTCPReset:
		if s.Code != 0 {
			return c.fail(".code", "tcp reset takes no code")
		}
		if err := c.setProto(".type", unix.IPPROTO_TCP); err != nil {
			return err
		}
	default:
		return c.fail(".type", "unknown reject type %d", s.Type)
	}
	if names != nil {
		if _, ok := names[s.Code]; !ok {
			return c.fail(".code", "unknown code %d", s.Code)
		}
	}
	if hook, typ, ok := c.hook(); ok {
		if typ != ChainTypeFilter || (hook != HookInput && hook != HookForward && hook != HookOutput) {
			return c.fail("", "reject only works in filter chains at input, forward and output")
		}
	}
	return nil
}

func (s SetUpdate) check(c *ruleCheck) error {
	if s.Op > OpUpdate {
		return c.fail(".op", "unknown operation %d", s.Op)
	}
	if err := c.checkFields(".key", s.Key); err != nil {
		return err
	}
	if s.Timeout < 0 || s.Timeout > maxTimeout {
		return c.fail(".timeout", "timeout %v out of range", s.Timeout)
	}
	keyLen := concatLen(fieldTypes(s.Key))
	dataLen := 0
	if s.Data != nil {
		if err := s.Data.checkKey(c, ".data"); err != nil {
			return err
		}
		dataLen = concatLen(s.Data.keyTypes())
	}
	if units(keyLen)+units(dataLen) > regUnits {
		return c.fail("", "key (%d bytes) and data (%d bytes) do not fit the registers", keyLen, dataLen)
	}
	set, err := c.lookupSet(".set", s.Set)
	if err != nil || set == nil {
		return err
	}
	if !set.Dynamic {
		return c.fail(".set", "set %q is not dynamic", s.Set)
	}
	if !sameTypes(set.Key, fieldTypes(s.Key)) {
		return c.fail(".key", "key %s does not match set %q of type %s", fieldsString(s.Key), s.Set, typesString(set.Key))
	}
	if set.IsMap() != (s.Data != nil) {
		return c.fail(".data", "data given for a set, or missing for a map (%q)", s.Set)
	}
	if s.Data != nil && !sameTypes(set.Data, s.Data.keyTypes()) {
		return c.fail(".data", "data %s does not match map %q data %s", s.Data, s.Set, typesString(set.Data))
	}
	if s.Timeout > 0 && !set.Timeout {
		return c.fail(".timeout", "set %q has no timeout flag", s.Set)
	}
	return nil
}

// checkSet checks a set definition and its elements.
func (sc *schema) checkSet(s *Set) error {
	path := setPath(s.Name)
	if err := checkName(path+".name", "set", s.Name); err != nil {
		return err
	}
	if err := checkComment(path+".comment", s.Comment); err != nil {
		return err
	}
	if len(s.Key) == 0 {
		return &ValidationError{path + ".key", "no key type"}
	}
	for i, t := range s.Key {
		if !t.Valid() || t == TypeVerdict {
			return &ValidationError{fmt.Sprintf("%s.key[%d]", path, i), fmt.Sprintf("type %s cannot be a key", t)}
		}
		if t == TypeInteger && len(s.Key) > 1 {
			return &ValidationError{fmt.Sprintf("%s.key[%d]", path, i), "an integer can only be the whole key: without the typeof metadata google/nftables v0.3.0 cannot write, nft lists integers inside a concatenation wrongly"}
		}
		if (t == TypeIPv4Addr && sc.family == FamilyIPv6) || (t == TypeIPv6Addr && sc.family == FamilyIPv4) {
			return &ValidationError{fmt.Sprintf("%s.key[%d]", path, i), fmt.Sprintf("%s in a %s table", t, sc.family)}
		}
	}
	if units(concatLen(s.Key)) > regUnits {
		return &ValidationError{path + ".key", fmt.Sprintf("key of %d bytes is longer than 64", concatLen(s.Key))}
	}
	for i, t := range s.Data {
		if !t.Valid() || t == TypeIfname || (t == TypeVerdict && len(s.Data) > 1) {
			return &ValidationError{fmt.Sprintf("%s.data[%d]", path, i), fmt.Sprintf("type %s cannot be map data here", t)}
		}
		if t == TypeInteger && len(s.Data) > 1 {
			return &ValidationError{fmt.Sprintf("%s.data[%d]", path, i), "an integer can only be the whole data"}
		}
	}
	if units(concatLen(s.Data)) > regUnits {
		return &ValidationError{path + ".data", "data longer than 64 bytes"}
	}
	if s.Interval {
		if len(s.Key) != 1 || (s.Key[0] != TypeIPv4Addr && s.Key[0] != TypeIPv6Addr) {
			return &ValidationError{path + ".interval", "interval sets need a key of one address type"}
		}
		if s.Dynamic {
			return &ValidationError{path + ".interval", "an interval set cannot be dynamic here"}
		}
	}
	if s.Dynamic && s.Constant {
		return &ValidationError{path, "a set cannot be both dynamic and constant"}
	}
	if s.Dynamic && len(s.Elements) > 0 {
		return &ValidationError{path + ".elements", "the kernel owns the elements of a dynamic set; declare it empty"}
	}
	if s.DefaultTimeout != 0 && !s.Timeout {
		return &ValidationError{path + ".defaultTimeout", "a default timeout needs the timeout flag"}
	}
	if s.DefaultTimeout < 0 || s.DefaultTimeout > maxTimeout || (s.DefaultTimeout > 0 && s.DefaultTimeout < time.Millisecond) {
		return &ValidationError{path + ".defaultTimeout", fmt.Sprintf("timeout %v out of range", s.DefaultTimeout)}
	}
	return sc.checkElements(path+".elements", s, false)
}

// checkElements checks elements against their set's types.
func (sc *schema) checkElements(path string, s *Set, anonymous bool) error {
	seen := make(map[string]bool, len(s.Elements))
	for i := range s.Elements {
		if err := sc.checkElement(fmt.Sprintf("%s[%d]", path, i), s, &s.Elements[i], anonymous); err != nil {
			return err
		}
		k := s.Elements[i].keyString()
		if seen[k] {
			return &ValidationError{fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("duplicate key %s", k)}
		}
		seen[k] = true
	}
	if s.Interval || anonymous {
		keys := make([]Value, 0, len(s.Elements))
		for i := range s.Elements {
			if len(s.Elements[i].Key) == 1 {
				keys = append(keys, s.Elements[i].Key[0])
			}
		}
		if err := checkIntervals(keys); err != nil {
			return &ValidationError{path, err.Error()}
		}
	}
	return nil
}

// checkElemKey checks the key of an element against its set's key types;
// allowPrefix admits address prefixes. It is all a deletion needs.
func checkElemKey(path string, s *Set, e *Element, allowPrefix bool) error {
	if len(e.Key) != len(s.Key) {
		return &ValidationError{path + ".key", fmt.Sprintf("%d key values for a key of %d fields", len(e.Key), len(s.Key))}
	}
	for j, v := range e.Key {
		if v.Type() != s.Key[j] {
			return &ValidationError{fmt.Sprintf("%s.key[%d]", path, j), fmt.Sprintf("value %s has type %s, want %s", v, v.Type(), s.Key[j])}
		}
		if err := checkElemValue(v, allowPrefix); err != nil {
			return &ValidationError{fmt.Sprintf("%s.key[%d]", path, j), err.Error()}
		}
	}
	return nil
}

func (sc *schema) checkElement(path string, s *Set, e *Element, anonymous bool) error {
	if err := checkElemKey(path, s, e, s.Interval || (anonymous && len(s.Key) == 1 && !s.IsMap())); err != nil {
		return err
	}
	switch {
	case s.IsVerdictMap():
		if e.Verdict == nil || len(e.Data) > 0 {
			return &ValidationError{path + ".verdict", "a verdict map element needs a verdict and no data"}
		}
		switch e.Verdict.Kind {
		case VerdictAccept, VerdictDrop, VerdictReturn, VerdictContinue:
		case VerdictJump, VerdictGoto:
			if err := sc.checkJumpTarget(path+".verdict.chain", e.Verdict.Chain); err != nil {
				return err
			}
		default:
			return &ValidationError{path + ".verdict", "unknown verdict kind"}
		}
	case s.IsMap():
		if e.Verdict != nil || len(e.Data) != len(s.Data) {
			return &ValidationError{path + ".data", fmt.Sprintf("want %d data values of %s", len(s.Data), typesString(s.Data))}
		}
		for j, v := range e.Data {
			if v.Type() != s.Data[j] {
				return &ValidationError{fmt.Sprintf("%s.data[%d]", path, j), fmt.Sprintf("value %s has type %s, want %s", v, v.Type(), s.Data[j])}
			}
			if err := checkElemValue(v, false); err != nil {
				return &ValidationError{fmt.Sprintf("%s.data[%d]", path, j), err.Error()}
			}
		}
	default:
		if e.Verdict != nil || len(e.Data) > 0 {
			return &ValidationError{path + ".data", "a set element has no data"}
		}
	}
	if e.Timeout != 0 {
		if !s.Timeout {
			return &ValidationError{path + ".timeout", "the set has no timeout flag"}
		}
		if e.Timeout < time.Millisecond || e.Timeout > maxTimeout {
			return &ValidationError{path + ".timeout", fmt.Sprintf("timeout %v out of range", e.Timeout)}
		}
	}
	return checkComment(path+".comment", e.Comment)
}

func checkElemValue(v Value, allowPrefix bool) error {
	switch v.Type() {
	case TypeIPv4Addr, TypeIPv6Addr:
		if err := checkAddr(v.AsAddr()); err != nil {
			return err
		}
		if v.IsPrefix() && !allowPrefix {
			return fmt.Errorf("prefix %s in a set without the interval flag", v)
		}
	case TypeInetProto:
		if v.num > 255 {
			return fmt.Errorf("protocol %d out of range", v.num)
		}
	case TypeInetService:
		if v.num > 65535 {
			return fmt.Errorf("port %d out of range", v.num)
		}
	case TypeIfname:
		if strings.HasSuffix(v.str, "*") {
			return fmt.Errorf("wildcard %q in a set", v.str)
		}
		return checkIfname(v.str)
	case 0:
		return fmt.Errorf("zero Value")
	}
	return nil
}
