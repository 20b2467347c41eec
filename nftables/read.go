package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Dumper sends one netlink request and returns its (multi-part) answer.
// *netlink.Conn from github.com/mdlayher/netlink implements it. The engine
// reads the kernel through its own dumps rather than google/nftables'
// getters, because v0.3.0's GetSets loses the key type of a verdict map
// (it stores the verdict data type into KeyType), cannot dump the rules of
// a whole table in one request, and silently drops expressions it does not
// know, which would hide drift.
type Dumper interface {
	Execute(m netlink.Message) ([]netlink.Message, error)
}

func nftMsgType(t int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | t)
}

func nfgenmsg(family uint8) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

func familyByte(f Family) uint8 {
	switch f {
	case FamilyIPv4:
		return unix.NFPROTO_IPV4
	case FamilyIPv6:
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_INET
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func dump(d Dumper, t Table, typ int, dumpFlag bool, attrs []netlink.Attribute) ([]netlink.Message, error) {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	flags := netlink.Request
	if dumpFlag {
		flags |= netlink.Dump
	}
	return d.Execute(netlink.Message{
		Header: netlink.Header{Type: nftMsgType(typ), Flags: flags},
		Data:   append(nfgenmsg(familyByte(t.Family)), b...),
	})
}

// rawRuleset is what the kernel holds, before decoding.
type rawRuleset struct {
	chains []Chain              // definitions, no rules
	sets   map[string]*Set      // named and anonymous sets, with elements
	rules  map[string][]rawRule // by chain, in order
}

type rawRule struct {
	exprs   []expr.Any
	unknown []string
	udata   []byte
}

// tableExists asks the kernel whether the table exists.
func tableExists(d Dumper, t Table) (bool, error) {
	_, err := dump(d, t, unix.NFT_MSG_GETTABLE, false, []netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: cstr(t.Name)}})
	if err == nil {
		return true, nil
	}
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	return false, err
}

// readRaw dumps chains, sets with their elements, and rules of the table;
// without full only the definitions of chains and sets (no elements:
// at scale they are most of the table, and definitions are all Apply's
// validation needs).
func readRaw(d Dumper, t Table, full bool) (*rawRuleset, error) {
	ok, err := tableExists(d, t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, t)
	}
	rr := &rawRuleset{sets: map[string]*Set{}, rules: map[string][]rawRule{}}
	msgs, err := dump(d, t, unix.NFT_MSG_GETCHAIN, true, []netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.Name)}})
	if err != nil {
		return nil, fmt.Errorf("dump chains: %w", err)
	}
	for _, m := range msgs {
		c, table, err := parseChain(m.Data)
		if err != nil {
			return nil, err
		}
		if table == t.Name {
			rr.chains = append(rr.chains, c)
		}
	}
	msgs, err = dump(d, t, unix.NFT_MSG_GETSET, true, []netlink.Attribute{{Type: unix.NFTA_SET_TABLE, Data: cstr(t.Name)}})
	if err != nil {
		return nil, fmt.Errorf("dump sets: %w", err)
	}
	var names []string
	for _, m := range msgs {
		s, table, err := parseSet(m.Data)
		if err != nil {
			return nil, err
		}
		if table != t.Name {
			continue
		}
		rr.sets[s.Name] = s
		names = append(names, s.Name)
	}
	if !full {
		return rr, nil
	}
	for _, name := range names {
		s := rr.sets[name]
		msgs, err := dump(d, t, unix.NFT_MSG_GETSETELEM, true, []netlink.Attribute{
			{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.Name)},
			{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(name)},
		})
		if err != nil {
			return nil, fmt.Errorf("dump elements of %q: %w", name, err)
		}
		var raw []rawElem
		for _, m := range msgs {
			es, err := parseElems(m.Data)
			if err != nil {
				return nil, fmt.Errorf("elements of %q: %w", name, err)
			}
			raw = append(raw, es...)
		}
		es, err := decodeElems(s, raw)
		if err != nil {
			return nil, err
		}
		s.Elements = es
	}
	msgs, err = dump(d, t, unix.NFT_MSG_GETRULE, true, []netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.Name)}})
	if err != nil {
		return nil, fmt.Errorf("dump rules: %w", err)
	}
	fam := familyByte(t.Family)
	for _, m := range msgs {
		chain, table, r, err := parseRule(fam, m.Data)
		if err != nil {
			return nil, err
		}
		if table != t.Name {
			continue
		}
		rr.rules[chain] = append(rr.rules[chain], r)
	}
	return rr, nil
}

// decodeRaw turns the raw dump into a Ruleset.
func decodeRaw(t Table, rr *rawRuleset) *Ruleset {
	d := &decoder{family: t.Family, sets: func(n string) (*Set, bool) {
		s, ok := rr.sets[n]
		return s, ok
	}}
	rs := &Ruleset{}
	for _, c := range rr.chains {
		ch := c
		for _, r := range rr.rules[c.Name] {
			ch.Rules = append(ch.Rules, d.decodeRule(r.exprs, r.unknown, r.udata))
		}
		rs.Chains = append(rs.Chains, ch)
	}
	for name, s := range rr.sets {
		if isAnonName(name) {
			continue
		}
		rs.Sets = append(rs.Sets, *s)
	}
	return sortedRuleset(rs)
}

func newDecoder(b []byte) (*netlink.AttributeDecoder, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("short nftables message")
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

var hookNames = map[uint32]Hook{
	unix.NF_INET_PRE_ROUTING: HookPrerouting, unix.NF_INET_LOCAL_IN: HookInput, unix.NF_INET_FORWARD: HookForward,
	unix.NF_INET_LOCAL_OUT: HookOutput, unix.NF_INET_POST_ROUTING: HookPostrouting,
}

// parseChain decodes a NEWCHAIN message (family header included).
func parseChain(b []byte) (Chain, string, error) {
	ad, err := newDecoder(b)
	if err != nil {
		return Chain{}, "", err
	}
	var c Chain
	var table, typ string
	var policy = uint32(1)
	var hasPolicy bool
	var base *BaseChain
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TABLE:
			table = ad.String()
		case unix.NFTA_CHAIN_NAME:
			c.Name = ad.String()
		case unix.NFTA_CHAIN_TYPE:
			typ = ad.String()
		case unix.NFTA_CHAIN_POLICY:
			policy, hasPolicy = ad.Uint32(), true
		case unix.NFTA_CHAIN_HOOK:
			base = &BaseChain{}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				nad.ByteOrder = binary.BigEndian
				for nad.Next() {
					switch nad.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						h, ok := hookNames[nad.Uint32()]
						if !ok {
							return fmt.Errorf("unknown hook")
						}
						base.Hook = h
					case unix.NFTA_HOOK_PRIORITY:
						base.Priority = int32(nad.Uint32())
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return Chain{}, "", fmt.Errorf("chain %q: %w", c.Name, err)
	}
	if base != nil {
		base.Type = ChainType(typ)
		base.Policy = PolicyAccept
		if hasPolicy && policy == 0 {
			base.Policy = PolicyDrop
		}
		c.Base = base
	}
	return c, table, nil
}

var magicTypes = map[uint32]Type{7: TypeIPv4Addr, 8: TypeIPv6Addr, 12: TypeInetProto, 13: TypeInetService, 19: TypeMark, 41: TypeIfname, 4: TypeInteger}

// typesFromMagic splits nft's datatype number (6 bits per concatenated
// type) into types.
func typesFromMagic(magic uint32) ([]Type, error) {
	var ts []Type
	for magic != 0 {
		t, ok := magicTypes[magic&0x3f]
		if !ok {
			return nil, fmt.Errorf("unsupported datatype %d", magic&0x3f)
		}
		ts = append([]Type{t}, ts...)
		magic >>= 6
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("no datatype")
	}
	return ts, nil
}

// parseSet decodes a NEWSET message.
func parseSet(b []byte) (*Set, string, error) {
	ad, err := newDecoder(b)
	if err != nil {
		return nil, "", err
	}
	s := &Set{}
	var table string
	var keyMagic, dataMagic uint32
	var hasData bool
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_TABLE:
			table = ad.String()
		case unix.NFTA_SET_NAME:
			s.Name = ad.String()
		case unix.NFTA_SET_FLAGS:
			f := ad.Uint32()
			s.Interval = f&unix.NFT_SET_INTERVAL != 0
			s.Timeout = f&unix.NFT_SET_TIMEOUT != 0
			s.Dynamic = f&unix.NFT_SET_EVAL != 0
			s.Constant = f&unix.NFT_SET_CONSTANT != 0
			hasData = f&unix.NFT_SET_MAP != 0
		case unix.NFTA_SET_KEY_TYPE:
			keyMagic = ad.Uint32()
		case unix.NFTA_SET_DATA_TYPE:
			dataMagic = ad.Uint32()
		case unix.NFTA_SET_TIMEOUT:
			s.DefaultTimeout = time.Duration(ad.Uint64()) * time.Millisecond
		case unix.NFTA_SET_DESC:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				nad.ByteOrder = binary.BigEndian
				for nad.Next() {
					if nad.Type() == unix.NFTA_SET_DESC_SIZE {
						s.Size = nad.Uint32()
					}
				}
				return nil
			})
		case unix.NFTA_SET_USERDATA:
			if c, ok := udataString(ad.Bytes(), 7); ok { // NFTNL_UDATA_SET_COMMENT
				s.Comment = c
			}
		}
	}
	if err := ad.Err(); err != nil {
		return nil, "", fmt.Errorf("set %q: %w", s.Name, err)
	}
	if s.Key, err = typesFromMagic(keyMagic); err != nil {
		return nil, "", fmt.Errorf("set %q key: %w", s.Name, err)
	}
	if hasData {
		if dataMagic == unix.NFT_DATA_VERDICT {
			s.Data = []Type{TypeVerdict}
		} else if s.Data, err = typesFromMagic(dataMagic); err != nil {
			return nil, "", fmt.Errorf("set %q data: %w", s.Name, err)
		}
	}
	return s, table, nil
}

// udataString returns the string TLV of type typ from nft userdata, with
// bounds checks (google/nftables v0.3.0's userdata.Get panics on a
// truncated TLV).
func udataString(b []byte, typ byte) (string, bool) {
	for len(b) >= 2 {
		t, n := b[0], int(b[1])
		if 2+n > len(b) {
			return "", false
		}
		if t == typ {
			v := b[2 : 2+n]
			if len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			return string(v), true
		}
		b = b[2+n:]
	}
	return "", false
}

// parseElems decodes a NEWSETELEM message.
func parseElems(b []byte) ([]rawElem, error) {
	ad, err := newDecoder(b)
	if err != nil {
		return nil, err
	}
	var out []rawElem
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(lad *netlink.AttributeDecoder) error {
			for lad.Next() {
				if lad.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				var e rawElem
				lad.Nested(func(ead *netlink.AttributeDecoder) error {
					ead.ByteOrder = binary.BigEndian
					for ead.Next() {
						switch ead.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							e.key = dataValue(ead.Bytes())
						case unix.NFTA_SET_ELEM_DATA:
							e.data, e.verdict = dataOrVerdict(ead.Bytes())
							e.hasValue = true
						case unix.NFTA_SET_ELEM_FLAGS:
							e.end = ead.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						case unix.NFTA_SET_ELEM_TIMEOUT:
							e.timeout = time.Duration(ead.Uint64()) * time.Millisecond
						case unix.NFTA_SET_ELEM_USERDATA:
							if c, ok := udataString(ead.Bytes(), 0); ok { // NFTNL_UDATA_SET_ELEM_COMMENT
								e.comment = c
							}
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// dataValue returns the NFTA_DATA_VALUE inside a nested data attribute.
func dataValue(b []byte) []byte {
	v, _ := dataOrVerdict(b)
	return v
}

func dataOrVerdict(b []byte) ([]byte, *Verdict) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, nil
	}
	ad.ByteOrder = binary.BigEndian
	var val []byte
	var v *Verdict
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_DATA_VALUE:
			val = append([]byte(nil), ad.Bytes()...)
		case unix.NFTA_DATA_VERDICT:
			var code int32
			var chain string
			ad.Nested(func(vad *netlink.AttributeDecoder) error {
				vad.ByteOrder = binary.BigEndian
				for vad.Next() {
					switch vad.Type() {
					case unix.NFTA_VERDICT_CODE:
						code = int32(vad.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						chain = vad.String()
					}
				}
				return nil
			})
			if vv, ok := verdictFromCode(code, chain); ok {
				v = &vv
			}
		}
	}
	return val, v
}

func verdictFromCode(code int32, chain string) (Verdict, bool) {
	switch code {
	case 1: // NF_ACCEPT
		return Accept(), true
	case 0: // NF_DROP
		return Drop(), true
	case unix.NFT_RETURN:
		return Return(), true
	case unix.NFT_CONTINUE:
		return Verdict{Kind: VerdictContinue}, true
	case unix.NFT_JUMP:
		return Jump(chain), true
	case unix.NFT_GOTO:
		return Goto(chain), true
	}
	return Verdict{}, false
}

// newExpr returns an empty google/nftables expression for a kernel
// expression name, or nil for one the engine does not decode.
func newExpr(name string) expr.Any {
	switch name {
	case "meta":
		return &expr.Meta{}
	case "cmp":
		return &expr.Cmp{}
	case "payload":
		return &expr.Payload{}
	case "immediate":
		return &expr.Immediate{}
	case "lookup":
		return &expr.Lookup{}
	case "bitwise":
		return &expr.Bitwise{}
	case "numgen":
		return &expr.Numgen{}
	case "hash":
		return &expr.Hash{}
	case "nat":
		return &expr.NAT{}
	case "masq":
		return &expr.Masq{}
	case "counter":
		return &expr.Counter{}
	case "ct":
		return &expr.Ct{}
	case "fib":
		return &expr.Fib{}
	case "reject":
		return &expr.Reject{}
	case "dynset":
		return &expr.Dynset{}
	}
	return nil
}

// parseRule decodes a NEWRULE message: chain, table, expressions.
func parseRule(fam uint8, b []byte) (string, string, rawRule, error) {
	ad, err := newDecoder(b)
	if err != nil {
		return "", "", rawRule{}, err
	}
	var chain, table string
	var r rawRule
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			chain = ad.String()
		case unix.NFTA_RULE_USERDATA:
			r.udata = append([]byte(nil), ad.Bytes()...)
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(lad *netlink.AttributeDecoder) error {
				for lad.Next() {
					if lad.Type() != unix.NFTA_LIST_ELEM {
						continue
					}
					var name string
					var data []byte
					lad.Nested(func(ead *netlink.AttributeDecoder) error {
						for ead.Next() {
							switch ead.Type() {
							case unix.NFTA_EXPR_NAME:
								name = ead.String()
							case unix.NFTA_EXPR_DATA:
								data = ead.Bytes()
							}
						}
						return nil
					})
					e, unknown := decodeExpr(fam, name, data)
					r.exprs = append(r.exprs, e)
					r.unknown = append(r.unknown, unknown)
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return "", "", rawRule{}, fmt.Errorf("rule in chain %q: %w", chain, err)
	}
	return chain, table, r, nil
}

// decodeExpr parses one expression. An expression it cannot parse is kept
// as a placeholder counter with its name in unknown, so that the decoder
// turns the rule into an Unknown statement instead of silently dropping it.
func decodeExpr(fam uint8, name string, data []byte) (expr.Any, string) {
	e := newExpr(name)
	if e == nil {
		return &expr.Counter{}, name
	}
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return &expr.Counter{}, name + "(bad)"
	}
	if im, ok := e.(*expr.Immediate); ok && im.Register == unix.NFT_REG_VERDICT && len(im.Data) == 0 {
		v := &expr.Verdict{}
		if err := expr.Unmarshal(fam, data, v); err != nil {
			return &expr.Counter{}, name + "(bad verdict)"
		}
		return v, ""
	}
	return e, ""
}
