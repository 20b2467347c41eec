package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Counters are the packet and byte counters of a chain policy or a rule.
type Counters struct {
	Packets, Bytes uint64
}

// Dump is parsed iptables-save output.
type Dump struct {
	Tables []TableDump
}

// TableDump is one table of a Dump.
type TableDump struct {
	Name Table
	// Chains in the order they were declared (iptables-save prints the
	// built-in chains first, then the user-defined chains sorted by name).
	Chains []ChainDump
}

// ChainDump is one chain of a table and its rules.
type ChainDump struct {
	Name ChainName
	// Policy is ACCEPT or DROP for a built-in chain, PolicyNone ("-") for a
	// user-defined chain.
	Policy   Policy
	Counters Counters // of the declaration line
	Rules    []Rule
	// RuleCounters holds the counters of each rule when the text was made
	// by iptables-save -c ("[pkts:bytes] -A ..."), nil otherwise.
	RuleCounters []Counters
}

// Table returns the table named t, or nil.
func (d *Dump) Table(t Table) *TableDump {
	for i := range d.Tables {
		if d.Tables[i].Name == t {
			return &d.Tables[i]
		}
	}
	return nil
}

// Chain returns the chain named c, or nil.
func (t *TableDump) Chain(c ChainName) *ChainDump {
	for i := range t.Chains {
		if t.Chains[i].Name == c {
			return &t.Chains[i]
		}
	}
	return nil
}

// ChainNames returns the names of the table's chains that start with
// prefix ("" for all), in declaration order.
func (t *TableDump) ChainNames(prefix string) []ChainName {
	var out []ChainName
	for i := range t.Chains {
		if t.Chains[i].Name.HasPrefix(prefix) {
			out = append(out, t.Chains[i].Name)
		}
	}
	return out
}

// AppendTo appends d in iptables-save format (without the "# Generated"
// comments) for family f: what iptables-save prints for the same state,
// byte for byte.
func (d *Dump) AppendTo(b []byte, f Family) ([]byte, error) {
	for i := range d.Tables {
		var err error
		if b, err = d.Tables[i].AppendTo(b, f); err != nil {
			return b, inField(indexed("tables", i), err)
		}
	}
	return b, nil
}

// AppendTo appends the table in iptables-save format.
func (t *TableDump) AppendTo(b []byte, f Family) ([]byte, error) {
	b = append(b, '*')
	b = append(b, t.Name...)
	b = append(b, '\n')
	for i := range t.Chains {
		c := &t.Chains[i]
		b = append(b, ':')
		b = append(b, c.Name...)
		b = append(b, ' ')
		b = append(b, c.Policy...)
		b = appendCounters(b, ' ', c.Counters)
		b = append(b, '\n')
	}
	for i := range t.Chains {
		c := &t.Chains[i]
		for j := range c.Rules {
			if c.RuleCounters != nil {
				b = appendCounters(b, 0, c.RuleCounters[j])
				b = append(b, ' ')
			}
			b = append(b, "-A "...)
			b = append(b, c.Name...)
			var err error
			if b, err = appendRuleSpec(b, f, &c.Rules[j]); err != nil {
				return b, inField("chains["+string(c.Name)+"]."+indexed("rules", j), err)
			}
			b = append(b, '\n')
		}
	}
	return append(b, "COMMIT\n"...), nil
}

func appendCounters(b []byte, sep byte, c Counters) []byte {
	if sep != 0 {
		b = append(b, sep)
	}
	b = append(b, '[')
	b = strconv.AppendUint(b, c.Packets, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, c.Bytes, 10)
	return append(b, ']')
}

// ParseDump parses the output of iptables-save (or ip6tables-save for
// IPv6): tables, chain declarations with policies and counters, and rules,
// with or without -c counters. Comment lines and blank lines are skipped.
// Matches and targets the typed values do not cover come back as RawMatch
// and RawTarget, so any table parses. Errors are *ParseError with the
// line number.
func ParseDump(f Family, data []byte) (*Dump, error) {
	p := parser{family: f}
	d := &Dump{}
	var cur *TableDump
	var chains map[ChainName]int // index into cur.Chains
	isChain := func(name string) bool { _, ok := chains[ChainName(name)]; return ok }
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		text := string(line)
		fail := func(format string, args ...any) error {
			return &ParseError{Line: lineNo, Text: text, Reason: fmt.Sprintf(format, args...)}
		}
		switch {
		case line[0] == '*':
			if cur != nil {
				return nil, fail("table %s not committed", cur.Name)
			}
			t := Table(text[1:])
			if !t.Valid() {
				return nil, fail("unknown table")
			}
			if d.Table(t) != nil {
				return nil, fail("table %s appears twice", t)
			}
			d.Tables = append(d.Tables, TableDump{Name: t})
			cur = &d.Tables[len(d.Tables)-1]
			chains = make(map[ChainName]int)
		case text == "COMMIT":
			if cur == nil {
				return nil, fail("COMMIT outside a table")
			}
			cur, chains = nil, nil
		case line[0] == ':':
			if cur == nil {
				return nil, fail("chain declaration outside a table")
			}
			c, err := parseChainDecl(cur.Name, text)
			if err != nil {
				return nil, fail("%v", err)
			}
			if _, dup := chains[c.Name]; dup {
				return nil, fail("chain %s declared twice", c.Name)
			}
			chains[c.Name] = len(cur.Chains)
			cur.Chains = append(cur.Chains, c)
		default:
			if cur == nil {
				return nil, fail("rule outside a table")
			}
			var ctr *Counters
			if line[0] == '[' {
				c, rest, err := parseCounterPrefix(text)
				if err != nil {
					return nil, fail("%v", err)
				}
				ctr, text = &c, rest
			}
			chain, r, err := p.parseRule(text, isChain)
			if err != nil {
				return nil, fail("%v", err)
			}
			idx, ok := chains[chain]
			if !ok {
				return nil, fail("rule for undeclared chain %s", chain)
			}
			cd := &cur.Chains[idx]
			if ctr != nil {
				if len(cd.RuleCounters) != len(cd.Rules) {
					return nil, fail("rules of chain %s mix lines with and without counters", chain)
				}
				cd.RuleCounters = append(cd.RuleCounters, *ctr)
			} else if cd.RuleCounters != nil {
				return nil, fail("rules of chain %s mix lines with and without counters", chain)
			}
			cd.Rules = append(cd.Rules, r)
		}
	}
	if cur != nil {
		return nil, &ParseError{Line: lineNo, Text: "", Reason: fmt.Sprintf("table %s has no COMMIT", cur.Name)}
	}
	return d, nil
}

// parseChainDecl parses ":NAME POLICY [pkts:bytes]".
func parseChainDecl(t Table, line string) (ChainDump, error) {
	fields := strings.Fields(line[1:])
	if len(fields) != 3 && len(fields) != 2 {
		return ChainDump{}, errors.New("want :NAME POLICY [packets:bytes]")
	}
	c := ChainDump{Name: ChainName(fields[0]), Policy: Policy(fields[1])}
	if err := checkSavedName(fields[0]); err != nil {
		return c, err
	}
	if len(fields) == 3 {
		ctr, rest, err := parseCounterPrefix(fields[2])
		if err != nil || rest != "" {
			return c, fmt.Errorf("bad counters %q", fields[2])
		}
		c.Counters = ctr
	}
	builtin := t.HasBuiltin(c.Name)
	switch {
	case builtin && c.Policy != PolicyAccept && c.Policy != PolicyDrop:
		return c, fmt.Errorf("built-in chain %s with policy %q", c.Name, c.Policy)
	case !builtin && c.Policy != PolicyNone:
		return c, fmt.Errorf("user-defined chain %s with policy %q (want \"-\")", c.Name, c.Policy)
	}
	return c, nil
}

// checkSavedName accepts any chain name iptables could have printed: 1 to
// 28 bytes without whitespace, quotes or control characters.
func checkSavedName(s string) error {
	if s == "" || len(s) > MaxChainNameLen {
		return fmt.Errorf("chain name %q must be 1 to %d bytes", s, MaxChainNameLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '"' {
			return fmt.Errorf("chain name %q has byte %q", s, c)
		}
	}
	return nil
}

// parseCounterPrefix parses "[pkts:bytes]" at the start of s and returns
// the rest after one space.
func parseCounterPrefix(s string) (Counters, string, error) {
	end := strings.IndexByte(s, ']')
	if s == "" || s[0] != '[' || end < 0 {
		return Counters{}, s, errors.New("bad counters")
	}
	pk, by, ok := strings.Cut(s[1:end], ":")
	if !ok {
		return Counters{}, s, errors.New("bad counters")
	}
	p, err1 := strconv.ParseUint(pk, 10, 64)
	b, err2 := strconv.ParseUint(by, 10, 64)
	if err1 != nil || err2 != nil {
		return Counters{}, s, errors.New("bad counters")
	}
	return Counters{Packets: p, Bytes: b}, strings.TrimPrefix(s[end+1:], " "), nil
}

// ParseRule parses one rule line "-A CHAIN ..." as iptables-save prints it
// and returns the chain and the rule. A -j naming something that is not a
// known target is read as a Jump to a chain of that name.
func ParseRule(f Family, line string) (ChainName, Rule, error) {
	p := parser{family: f}
	c, r, err := p.parseRule(line, nil)
	if err != nil {
		return "", Rule{}, &ParseError{Line: 1, Text: line, Reason: err.Error()}
	}
	return c, r, nil
}

type parser struct {
	family  Family
	toks    []token
	scratch []byte // reused output of the validating renders
}

// validMatch reports whether m validates in rule r, rendering into scratch.
func (p *parser) validMatch(m Match, r *Rule) error {
	var err error
	p.scratch, err = m.appendMatch(p.scratch[:0], p.family, r)
	return err
}

// validTarget reports whether t validates in rule r.
func (p *parser) validTarget(t Target, r *Rule) error {
	var err error
	p.scratch, err = t.appendTarget(p.scratch[:0], p.family, r)
	return err
}

// parseRule parses "-A CHAIN spec". isChain tells whether a name is a
// chain of the table (nil: anything that is not a well-known target).
func (p *parser) parseRule(line string, isChain func(string) bool) (ChainName, Rule, error) {
	var err error
	p.toks, err = tokenize(line, p.toks)
	if err != nil {
		return "", Rule{}, err
	}
	toks := p.toks
	if len(toks) < 2 || toks[0].s != "-A" || toks[0].quoted {
		return "", Rule{}, errors.New("want \"-A CHAIN\" and the rule")
	}
	if err := checkSavedName(toks[1].s); err != nil {
		return "", Rule{}, err
	}
	chain := ChainName(toks[1].s)
	r, err := p.parseSpec(line, toks[2:], isChain)
	return chain, r, err
}

// isKeyword reports whether t is an unquoted rule-level option that ends a
// match's options.
func isKeyword(t token) bool {
	return !t.quoted && (t.s == "-m" || t.s == "--match" || t.s == "-j" || t.s == "--jump" || t.s == "-g" || t.s == "--goto")
}

// takesValue reports whether t is an option of the typed match modules
// that takes an argument. Like getopt in iptables-restore, the parser then
// reads the next argument as its value even when it looks like an option:
// iptables-save prints the comment "-j" bare, as `--comment -j`.
func takesValue(t token) bool {
	if t.quoted {
		return false
	}
	switch t.s {
	case "--comment", "--sport", "--dport", "--source-port", "--destination-port",
		"--mode", "--probability", "--mark", "--src-type", "--dst-type",
		"--seconds", "--hitcount", "--name", "--mask", "--ctstate":
		return true
	}
	return false
}

func (p *parser) parseSpec(line string, toks []token, isChain func(string) bool) (Rule, error) {
	var r Rule
	i := 0
	invert := false
	// Basic matches.
basic:
	for i < len(toks) {
		t := toks[i]
		if t.quoted {
			return r, fmt.Errorf("unexpected quoted argument %q", t.s)
		}
		switch t.s {
		case "!":
			if invert {
				return r, errors.New("double '!'")
			}
			invert = true
			i++
			continue
		case "-m", "--match", "-j", "--jump", "-g", "--goto":
			break basic
		case "--dport", "--sport", "--destination-port", "--source-port":
			// iptables loads the protocol's port match implicitly.
			if r.Proto.Proto.hasPorts() {
				if invert {
					i-- // the "!" belongs to the port option
					invert = false
				}
				break basic
			}
		case "-f", "--fragment":
			if r.Fragment != FragmentAny {
				return r, errors.New("-f given twice")
			}
			r.Fragment = FragmentOnly
			if invert {
				r.Fragment = FragmentNot
			}
			invert = false
			i++
			continue
		}
		if i+1 >= len(toks) {
			return r, fmt.Errorf("option %s without a value", t.s)
		}
		v := toks[i+1].s
		switch t.s {
		case "-s", "--source", "-d", "--destination":
			pfx, err := parsePrefix(p.family, v)
			if err != nil {
				return r, err
			}
			a := &r.Src
			if t.s == "-d" || t.s == "--destination" {
				a = &r.Dst
			}
			if a.Prefix.IsValid() || a.Invert {
				return r, fmt.Errorf("%s given twice", t.s)
			}
			*a = Addr{Prefix: pfx, Invert: invert}
		case "-i", "--in-interface", "-o", "--out-interface":
			ifc := &r.In
			if t.s == "-o" || t.s == "--out-interface" {
				ifc = &r.Out
			}
			if ifc.Name != "" {
				return r, fmt.Errorf("%s given twice", t.s)
			}
			*ifc = Iface{Name: v, Invert: invert}
		case "-p", "--protocol":
			if r.Proto.Proto != "" {
				return r, errors.New("-p given twice")
			}
			r.Proto = ProtoMatch{Proto: canonicalProtocol(v), Invert: invert}
		default:
			return r, fmt.Errorf("unknown option %q", t.s)
		}
		invert = false
		i += 2
	}
	if invert {
		return r, errors.New("'!' before -m, -j or -g")
	}
	// Normalize what iptables stores as "anything" and refuse what the
	// typed basic matches cannot hold.
	r.Src, r.Dst = anyAddr(r.Src), anyAddr(r.Dst)
	r.In, r.Out = anyIface(r.In), anyIface(r.Out)
	if r.Proto.Proto == "all" && !r.Proto.Invert {
		r.Proto = ProtoMatch{}
	}
	var err error
	p.scratch, err = appendRuleSpec(p.scratch[:0], p.family, &r)
	if err != nil {
		return r, err
	}
	// Extension matches; size the slice once.
	if n := countMatches(toks[i:]); n > 0 {
		r.Matches = make([]Match, 0, n)
	}
	for i < len(toks) && !toks[i].quoted && (toks[i].s == "-m" || toks[i].s == "--match" || strings.HasPrefix(toks[i].s, "-") && !isKeyword(toks[i]) || toks[i].s == "!") {
		var module string
		first := i + 2
		if toks[i].s == "-m" || toks[i].s == "--match" {
			if i+1 >= len(toks) {
				return r, errors.New("-m without a module")
			}
			module = toks[i+1].s
		} else {
			// Options of the implicit port match (see above).
			if !r.Proto.Proto.hasPorts() || r.Proto.Invert {
				return r, fmt.Errorf("unexpected %q", toks[i].s)
			}
			module, first = string(r.Proto.Proto), i
		}
		j := first
		for j < len(toks) && !isKeyword(toks[j]) {
			if takesValue(toks[j]) && j+1 < len(toks) {
				j++ // the value, whatever it looks like
			}
			j++
		}
		opts := toks[first:j]
		spec := ""
		if len(opts) > 0 {
			spec = line[opts[0].start:opts[len(opts)-1].end]
		}
		m := p.parseMatch(&r, module, opts, spec)
		if _, raw := m.(RawMatch); raw {
			if err := p.validMatch(m, &r); err != nil {
				return r, fmt.Errorf("match %s: %w", module, err)
			}
		}
		r.Matches = append(r.Matches, m)
		i = j
	}
	// Target.
	if i < len(toks) {
		t := toks[i]
		if i+1 >= len(toks) {
			return r, fmt.Errorf("%s without a target", t.s)
		}
		name := toks[i+1].s
		opts := toks[i+2:]
		if t.s == "-g" || t.s == "--goto" {
			if len(opts) > 0 {
				return r, errors.New("arguments after -g CHAIN")
			}
			r.Target = Goto{Chain: ChainName(name)}
			if err := p.validTarget(r.Target, &r); err != nil {
				return r, err
			}
			return r, nil
		}
		spec := ""
		if len(opts) > 0 {
			spec = line[opts[0].start:opts[len(opts)-1].end]
		}
		r.Target = p.parseTarget(&r, name, opts, spec, isChain)
		if _, raw := r.Target.(RawTarget); raw {
			if err := p.validTarget(r.Target, &r); err != nil {
				return r, fmt.Errorf("target %s: %w", name, err)
			}
		}
	}
	return r, nil
}

// countMatches counts the -m options of a rule, plus one for an implicit
// port match.
func countMatches(toks []token) int {
	n := 0
	for i, t := range toks {
		if !t.quoted && (t.s == "-m" || t.s == "--match" || i == 0 && t.s != "-j" && t.s != "-g") {
			n++
		}
	}
	return n
}

// anyAddr returns the zero Addr for a /0 prefix that is not inverted:
// iptables stores that as "any address".
func anyAddr(a Addr) Addr {
	if a.Prefix.IsValid() && a.Prefix.Bits() == 0 && !a.Invert {
		return Addr{}
	}
	return a
}

// anyIface returns the zero Iface for a "+" that is not inverted.
func anyIface(i Iface) Iface {
	if i.Name == "+" && !i.Invert {
		return Iface{}
	}
	return i
}

// canonicalProtocol maps the aliases iptables accepts to the name
// iptables-save prints.
func canonicalProtocol(s string) Protocol {
	switch strings.ToLower(s) {
	case "icmpv6", "ipv6-icmp", "58":
		return ProtoICMPv6
	case "tcp", "6":
		return ProtoTCP
	case "udp", "17":
		return ProtoUDP
	case "sctp", "132":
		return ProtoSCTP
	case "icmp", "1":
		return ProtoICMP
	case "mh", "ipv6-mh", "135":
		return "mobility-header"
	case "all", "0":
		return "all"
	}
	return Protocol(s)
}

// parsePrefix parses an address with an optional /bits or dotted mask and
// masks it, as iptables does.
func parsePrefix(f Family, s string) (netip.Prefix, error) {
	addrPart, maskPart, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q", s)
	}
	if err := checkAddr(f, a); err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: %v", s, err)
	}
	bits := a.BitLen()
	if hasMask {
		if n, err := strconv.Atoi(maskPart); err == nil && n >= 0 && n <= a.BitLen() && maskPart[0] != '+' {
			bits = n
		} else if m, err := netip.ParseAddr(maskPart); err == nil && m.BitLen() == a.BitLen() {
			ones, ok := contiguousMask(m)
			if !ok {
				return netip.Prefix{}, fmt.Errorf("non-contiguous mask in %q", s)
			}
			bits = ones
		} else {
			return netip.Prefix{}, fmt.Errorf("bad mask in %q", s)
		}
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

func contiguousMask(m netip.Addr) (int, bool) {
	b := m.AsSlice()
	ones := 0
	seenZero := false
	for _, x := range b {
		for k := 7; k >= 0; k-- {
			if x&(1<<k) != 0 {
				if seenZero {
					return 0, false
				}
				ones++
			} else {
				seenZero = true
			}
		}
	}
	return ones, true
}

// parseMatch returns the typed match for module and its options, or a
// RawMatch when the typed matches cannot represent them exactly.
func (p *parser) parseMatch(r *Rule, module string, opts []token, spec string) Match {
	var m Match
	var ok bool
	switch module {
	case "comment":
		m, ok = parseComment(opts)
	case "tcp", "udp", "sctp":
		if Protocol(module) == r.Proto.Proto {
			m, ok = parsePorts(opts)
		}
	case "statistic":
		m, ok = parseStatistic(opts)
	case "mark":
		m, ok = parseMarkMatch(opts)
	case "addrtype":
		m, ok = parseAddrType(opts)
	case "recent":
		m, ok = parseRecent(p.family, opts)
	case "conntrack":
		m, ok = parseConntrack(opts)
	}
	if ok {
		// Only typed values that validate in this rule are returned, so a
		// parsed rule always renders.
		if err := p.validMatch(m, r); err == nil {
			return m
		}
	}
	return RawMatch{Module: module, Spec: spec}
}

// optReader walks the options of one match or target.
type optReader struct {
	opts []token
	i    int
	bad  bool
}

func (o *optReader) more() bool { return !o.bad && o.i < len(o.opts) }

// next returns the next option name and whether a "!" preceded it.
func (o *optReader) next() (string, bool) {
	inv := false
	if o.i < len(o.opts) && o.opts[o.i].s == "!" && !o.opts[o.i].quoted {
		inv = true
		o.i++
	}
	if o.i >= len(o.opts) || o.opts[o.i].quoted {
		o.bad = true
		return "", false
	}
	s := o.opts[o.i].s
	o.i++
	return s, inv
}

// value returns the argument of the option just read.
func (o *optReader) value() string {
	if o.i >= len(o.opts) {
		o.bad = true
		return ""
	}
	s := o.opts[o.i].s
	o.i++
	return s
}

func parseComment(opts []token) (Match, bool) {
	if len(opts) != 2 || opts[0].s != "--comment" || opts[0].quoted {
		return nil, false
	}
	return Comment(opts[1].s), true
}

func parsePortRange(s string) (PortRange, bool) {
	lo, hi, isRange := strings.Cut(s, ":")
	if !isRange {
		p, ok := parseU16(s)
		return PortRange{p, p}, ok
	}
	var r PortRange
	var ok1, ok2 = true, true
	if lo != "" {
		r.First, ok1 = parseU16(lo)
	}
	r.Last = math.MaxUint16
	if hi != "" {
		r.Last, ok2 = parseU16(hi)
	}
	return r, ok1 && ok2
}

func parseU16(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil && s != "" && s[0] != '+'
}

func parsePorts(opts []token) (Match, bool) {
	var p Ports
	o := optReader{opts: opts}
	for o.more() {
		name, inv := o.next()
		switch name {
		case "--sport", "--source-port":
			if !p.Src.IsZero() {
				return nil, false
			}
			var ok bool
			if p.Src, ok = parsePortRange(o.value()); !ok {
				return nil, false
			}
			p.SrcInvert = inv
		case "--dport", "--destination-port":
			if !p.Dst.IsZero() {
				return nil, false
			}
			var ok bool
			if p.Dst, ok = parsePortRange(o.value()); !ok {
				return nil, false
			}
			p.DstInvert = inv
		default:
			return nil, false
		}
	}
	return p, !o.bad
}

func parseStatistic(opts []token) (Match, bool) {
	if len(opts) != 4 || opts[0].s != "--mode" || opts[1].s != "random" || opts[2].s != "--probability" {
		return nil, false
	}
	v, err := strconv.ParseFloat(opts[3].s, 64)
	if err != nil || v < 0 || v > 1 || math.IsNaN(v) {
		return nil, false
	}
	return Statistic{Probability: ProbabilityOf(v)}, true
}

// parseUint32 parses a number the way strtoul(s, NULL, 0) does: 0x for
// hex, a leading 0 for octal, decimal otherwise.
func parseUint32(s string) (uint32, bool) {
	base := 10
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		s, base = s[2:], 16
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	if s == "" || s[0] == '+' || s[0] == '-' || strings.IndexByte(s, '_') >= 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, base, 32)
	return uint32(n), err == nil
}

// parseValueMask parses "V" or "V/M"; a missing mask is def.
func parseValueMask(s string, def uint32) (uint32, uint32, bool) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, ok := parseUint32(vs)
	if !ok {
		return 0, 0, false
	}
	m := def
	if hasMask {
		if m, ok = parseUint32(ms); !ok {
			return 0, 0, false
		}
	}
	return v, m, true
}

func parseMarkMatch(opts []token) (Match, bool) {
	o := optReader{opts: opts}
	name, inv := o.next()
	if name != "--mark" {
		return nil, false
	}
	v, m, ok := parseValueMask(o.value(), math.MaxUint32)
	if !ok || o.more() || o.bad {
		return nil, false
	}
	return MarkMatch{Value: v, Mask: m, Invert: inv}, true
}

func parseAddrTypes(s string) (AddrTypes, bool) {
	var t AddrTypes
	for _, name := range strings.Split(s, ",") {
		found := false
		for i := 0; i < numAddrTypes; i++ {
			if strings.EqualFold(addrTypeName(i), name) {
				t |= 1 << i
				found = true
				break
			}
		}
		if !found {
			return 0, false
		}
	}
	return t, true
}

func parseAddrType(opts []token) (Match, bool) {
	var a AddrType
	o := optReader{opts: opts}
	for o.more() {
		name, inv := o.next()
		var ok bool
		switch name {
		case "--src-type":
			if a.Src != 0 {
				return nil, false
			}
			a.Src, ok = parseAddrTypes(o.value())
			a.SrcInvert = inv
		case "--dst-type":
			if a.Dst != 0 {
				return nil, false
			}
			a.Dst, ok = parseAddrTypes(o.value())
			a.DstInvert = inv
		case "--limit-iface-in":
			a.LimitIfaceIn, ok = true, !inv
		case "--limit-iface-out":
			a.LimitIfaceOut, ok = true, !inv
		}
		if !ok {
			return nil, false
		}
	}
	return a, !o.bad
}

func parseRecent(f Family, opts []token) (Match, bool) {
	m := Recent{Name: "DEFAULT"}
	o := optReader{opts: opts}
	if len(opts) > 0 && opts[0].s == "!" {
		m.Invert = true
		o.i++
	}
	side := 0
	for o.more() {
		name, inv := o.next()
		if inv {
			return nil, false
		}
		setMode := func(md RecentMode) bool {
			if m.Mode != 0 {
				return false
			}
			m.Mode = md
			return true
		}
		ok := true
		switch name {
		case "--set":
			ok = setMode(RecentSet)
		case "--rcheck":
			ok = setMode(RecentCheck)
		case "--update":
			ok = setMode(RecentUpdate)
		case "--remove":
			ok = setMode(RecentRemove)
		case "--seconds":
			m.Seconds, ok = parseUint32(o.value())
		case "--hitcount":
			m.HitCount, ok = parseUint32(o.value())
		case "--reap":
			m.Reap = true
		case "--rttl":
			m.RTTL = true
		case "--name":
			m.Name = o.value()
		case "--mask":
			a, err := netip.ParseAddr(o.value())
			ok = err == nil
			if a != fullMask(f) {
				m.Mask = a
			}
		case "--rsource":
			ok = side == 0
			side = 1
		case "--rdest":
			ok = side == 0
			side = 2
			m.Dest = true
		default:
			ok = false
		}
		if !ok {
			return nil, false
		}
	}
	return m, !o.bad
}

func parseCTStates(s string) (CTState, bool) {
	var st CTState
	for _, name := range strings.Split(s, ",") {
		found := false
		for i := 0; i < numCTStates; i++ {
			if strings.EqualFold(ctStateName(i), name) {
				st |= 1 << i
				found = true
				break
			}
		}
		if !found {
			return 0, false
		}
	}
	return st, true
}

func parseConntrack(opts []token) (Match, bool) {
	o := optReader{opts: opts}
	name, inv := o.next()
	if name != "--ctstate" {
		return nil, false
	}
	st, ok := parseCTStates(o.value())
	if !ok || o.more() || o.bad {
		return nil, false
	}
	return Conntrack{States: st, Invert: inv}, true
}

// parseTarget returns the typed target for -j name opts, or a RawTarget.
func (p *parser) parseTarget(r *Rule, name string, opts []token, spec string, isChain func(string) bool) Target {
	var t Target
	ok := false
	switch name {
	case "ACCEPT", "DROP", "RETURN":
		t, ok = Verdict(name), len(opts) == 0
	case "REJECT":
		t, ok = parseReject(p.family, opts)
	case "DNAT":
		t, ok = parseDNAT(p.family, opts)
	case "SNAT":
		t, ok = parseSNAT(p.family, opts)
	case "MASQUERADE":
		t, ok = parseMasquerade(opts)
	case "MARK":
		t, ok = parseMark(opts)
	default:
		if len(opts) == 0 {
			var chain bool
			if isChain != nil {
				chain = isChain(name)
			} else {
				chain = !isReservedTarget(name)
			}
			if chain {
				t, ok = Jump{Chain: ChainName(name)}, true
			}
		}
	}
	if ok {
		if err := p.validTarget(t, r); err == nil {
			return t
		}
		if j, isJump := t.(Jump); isJump {
			// A jump to a name the typed Jump refuses (a built-in chain, an
			// odd foreign name): keep it as written.
			return RawTarget{Name: string(j.Chain)}
		}
	}
	return RawTarget{Name: name, Spec: spec}
}

func rejectFromName(f Family, s string) (RejectWith, bool) {
	for w := RejectWith(0); w < rejectEnd; w++ {
		if w.name(f) == s && s != "" {
			return w, true
		}
	}
	// Short spellings iptables accepts on input.
	if f == IPv6 {
		switch s {
		case "no-route":
			return RejectNoRoute, true
		case "adm-prohibited":
			return RejectAdminProhibited, true
		case "addr-unreach":
			return RejectAddrUnreachable, true
		case "port-unreach":
			return RejectPortUnreachable, true
		}
		return 0, false
	}
	switch s {
	case "net-unreach":
		return RejectNetUnreachable, true
	case "host-unreach":
		return RejectHostUnreachable, true
	case "port-unreach":
		return RejectPortUnreachable, true
	case "proto-unreach":
		return RejectProtoUnreachable, true
	case "net-prohib":
		return RejectNetProhibited, true
	case "host-prohib":
		return RejectHostProhibited, true
	case "admin-prohib":
		return RejectAdminProhibited, true
	}
	return 0, false
}

func parseReject(f Family, opts []token) (Target, bool) {
	switch {
	case len(opts) == 0:
		return Reject{}, true
	case len(opts) == 2 && opts[0].s == "--reject-with":
		w, ok := rejectFromName(f, opts[1].s)
		return Reject{With: w}, ok
	}
	return nil, false
}

// parseNATRange parses ADDR[-LAST][:PORTS] (IPv6: [ADDR[-LAST]]:PORTS or
// ADDR[-LAST]).
func parseNATRange(f Family, s string) (addr, last netip.Addr, ports PortRange, ok bool) {
	addrs, portStr := s, ""
	if f == IPv6 {
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 || len(s) < end+2 || s[end+1] != ':' {
				return addr, last, ports, false
			}
			addrs, portStr = s[1:end], s[end+2:]
			if portStr == "" {
				return addr, last, ports, false
			}
		}
	} else if a, p, has := strings.Cut(s, ":"); has {
		addrs, portStr = a, p
		if portStr == "" {
			return addr, last, ports, false
		}
	}
	first, second, isRange := strings.Cut(addrs, "-")
	var err error
	if addr, err = netip.ParseAddr(first); err != nil {
		return addr, last, ports, false
	}
	if isRange {
		if last, err = netip.ParseAddr(second); err != nil {
			return addr, last, ports, false
		}
		if last == addr {
			last = netip.Addr{}
		}
	}
	if portStr != "" {
		lo, hi, isPortRange := strings.Cut(portStr, "-")
		var ok1, ok2 bool
		ports.First, ok1 = parseU16(lo)
		ports.Last, ok2 = ports.First, true
		if isPortRange {
			ports.Last, ok2 = parseU16(hi)
		}
		if !ok1 || !ok2 {
			return addr, last, ports, false
		}
	}
	return addr, last, ports, true
}

// natOpts are the options of DNAT, SNAT and MASQUERADE.
type natOpts struct {
	addr, last                      netip.Addr
	ports                           PortRange
	hasTo                           bool
	random, randomFully, persistent bool
}

// parseNATOpts parses the options of a NAT target: to is the option
// naming the destination ("--to-destination", "--to-source") or the ports
// ("--to-ports" of MASQUERADE); flags lists the flag options allowed.
func parseNATOpts(f Family, opts []token, to string, flags ...string) (natOpts, bool) {
	var n natOpts
	o := optReader{opts: opts}
	for o.more() {
		name, inv := o.next()
		if inv {
			return n, false
		}
		if name == to || name == "--to" && to != "--to-ports" {
			if n.hasTo {
				return n, false
			}
			n.hasTo = true
			var ok bool
			if to == "--to-ports" {
				lo, hi, isRange := strings.Cut(o.value(), "-")
				var ok2 bool
				n.ports.First, ok = parseU16(lo)
				n.ports.Last, ok2 = n.ports.First, true
				if isRange {
					n.ports.Last, ok2 = parseU16(hi)
				}
				ok = ok && ok2
			} else {
				n.addr, n.last, n.ports, ok = parseNATRange(f, o.value())
			}
			if !ok {
				return n, false
			}
			continue
		}
		if !slices.Contains(flags, name) {
			return n, false
		}
		switch name {
		case "--random":
			n.random = true
		case "--random-fully":
			n.randomFully = true
		case "--persistent":
			n.persistent = true
		}
	}
	return n, !o.bad
}

func parseDNAT(f Family, opts []token) (Target, bool) {
	n, ok := parseNATOpts(f, opts, "--to-destination", "--random", "--persistent")
	return DNAT{Addr: n.addr, AddrLast: n.last, Ports: n.ports, Random: n.random, Persistent: n.persistent}, ok && n.hasTo
}

func parseSNAT(f Family, opts []token) (Target, bool) {
	n, ok := parseNATOpts(f, opts, "--to-source", "--random", "--random-fully", "--persistent")
	return SNAT{Addr: n.addr, AddrLast: n.last, Ports: n.ports, Random: n.random, RandomFully: n.randomFully,
		Persistent: n.persistent}, ok && n.hasTo
}

func parseMasquerade(opts []token) (Target, bool) {
	n, ok := parseNATOpts(IPv4, opts, "--to-ports", "--random", "--random-fully")
	return Masquerade{Ports: n.ports, Random: n.random, RandomFully: n.randomFully}, ok
}

func parseMark(opts []token) (Target, bool) {
	if len(opts) != 2 {
		return nil, false
	}
	switch opts[0].s {
	case "--set-xmark", "--set-mark":
		v, m, ok := parseValueMask(opts[1].s, math.MaxUint32)
		return Mark{Value: v, Mask: m}, ok
	case "--or-mark", "--and-mark", "--xor-mark":
		v, ok := parseUint32(opts[1].s)
		switch opts[0].s {
		case "--or-mark":
			return OrMark(v), ok
		case "--and-mark":
			return AndMark(v), ok
		}
		return XorMark(v), ok
	}
	return nil, false
}

// ListChainNames returns the chain names declared in iptables-save output
// for one table, without parsing the rules: the fast way to learn which
// chains exist. Only lines starting with ':' are read.
func ListChainNames(data []byte, prefix string) []ChainName {
	var out []ChainName
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) < 2 || line[0] != ':' {
			continue
		}
		name := line[1:]
		if i := bytes.IndexByte(name, ' '); i >= 0 {
			name = name[:i]
		}
		if bytes.HasPrefix(name, []byte(prefix)) {
			out = append(out, ChainName(name))
		}
	}
	return out
}
