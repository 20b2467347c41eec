package iptables

import (
	"fmt"
	"strings"
)

// A scenario is a sequence of iptables-restore --noflush inputs. Tier 1
// runs them on the Fake and checks the outcome against a golden dump;
// tier 2 runs them on the kernel (both backends) and on the Fake and
// requires the same outcome: the differential test that keeps the Fake
// honest.
type scenario struct {
	name   string
	family Family
	steps  []step
}

type step struct {
	text string
	// failLine is the line the restore must fail at (as iptables-legacy
	// reports it), 0 when it must succeed.
	failLine int
	// nftAccepts marks a step iptables-nft accepts although legacy and
	// the Fake refuse it: nf_tables does not re-check the hooks of
	// matches in chains reached through a jump. The differential test
	// then checks that nft does accept it, and skips the comparison of
	// that step (the state diverges, so the scenario ends there for nft).
	nftAccepts bool
}

// foreign is another program's rules in the same tables; they must
// survive every sync byte for byte.
const foreignV4 = `*filter
:FOREIGN-IN - [0:0]
-A INPUT -p tcp -m multiport --dports 22,80,443 -m limit --limit 5/sec -j LOG --log-prefix "in: " --log-level 6
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -j FOREIGN-IN
-A FOREIGN-IN -s 198.51.100.0/24 -p udp -m udp --dport 53 -j ACCEPT
-A FOREIGN-IN -m comment --comment "foreign \"quoted\" rule" -j RETURN
COMMIT
*nat
:FOREIGN-PRE - [0:0]
-A PREROUTING -j FOREIGN-PRE
-A FOREIGN-PRE -d 203.0.113.7/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.7:80
-A POSTROUTING -s 192.0.2.0/24 ! -o lo -j MASQUERADE
COMMIT
`

const foreignV6 = `*filter
:FOREIGN-IN - [0:0]
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -j FOREIGN-IN
-A FOREIGN-IN -s 2001:db8:1::/64 -p udp -m udp --dport 53 -j ACCEPT
COMMIT
*nat
:FOREIGN-PRE - [0:0]
-A PREROUTING -j FOREIGN-PRE
-A FOREIGN-PRE -d 2001:db8:2::7/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8::7]:80
COMMIT
`

// renderSync renders s for f, panicking on error (test input).
func renderSync(f Family, s *Sync) string {
	b := NewBuffer(f)
	if err := s.Render(b); err != nil {
		panic(err)
	}
	return b.String()
}

// everyRuleSync puts every render case of family f into chains of its
// table, one chain per table holding all the rules.
func everyRuleSync(f Family) *Sync {
	byTable := map[Table]*TableSync{}
	var order []Table
	for _, c := range renderCases() {
		if c.family != f {
			continue
		}
		ts := byTable[c.table]
		if ts == nil {
			ts = &TableSync{Table: c.table, Chains: []Chain{{Name: "LBK-ALL"}}}
			byTable[c.table] = ts
			order = append(order, c.table)
		}
		r := c.rule
		if j := jumpTarget(r.Target); j != "" {
			r.Target = Jump{Chain: "LBK-TARGET"}
			if _, isGoto := c.rule.Target.(Goto); isGoto {
				r.Target = Goto{Chain: "LBK-TARGET"}
			}
		}
		ts.Chains[0].Rules = append(ts.Chains[0].Rules, r)
	}
	s := &Sync{}
	for _, t := range order {
		ts := byTable[t]
		ts.Chains = append(ts.Chains, Chain{Name: "LBK-TARGET", Rules: []Rule{{Target: Return}}})
		s.Tables = append(s.Tables, *ts)
	}
	return s
}

func scenarios() []scenario {
	svc := serviceSync(IPv4, 3, 3)
	nat := svc.Tables[0]
	// Partial sync: rewrite service 1's chains, delete its last endpoint
	// chain after dropping the jump to it.
	partial := &Sync{Tables: []TableSync{{Table: TableNAT,
		Chains: []Chain{{Name: nat.Chains[6].Name, Rules: nat.Chains[6].Rules[:3]}, nat.Chains[7], nat.Chains[8]},
		Delete: []ChainName{nat.Chains[9].Name}}}}
	hookJump := "*nat\n-A PREROUTING -j " + string(nat.Chains[1].Name) + "\nCOMMIT\n" // MASQUERADE reachable from PREROUTING

	svc6 := serviceSync(IPv6, 2, 2)
	return []scenario{
		{"every-rule-v4", IPv4, []step{{text: renderSync(IPv4, everyRuleSync(IPv4))}}},
		{"every-rule-v6", IPv6, []step{{text: renderSync(IPv6, everyRuleSync(IPv6))}}},
		{"services-v4", IPv4, []step{
			{text: foreignV4},
			{text: renderSync(IPv4, svc)},
			{text: "*nat\n-A PREROUTING -j " + string(nat.Chains[len(nat.Chains)-1].Name) + "\n-A POSTROUTING -j " + string(nat.Chains[1].Name) + "\nCOMMIT\n"},
			{text: renderSync(IPv4, partial)},
			// The same again: declarations flush, so nothing doubles.
			{text: renderSync(IPv4, partial)},
			// Refused: PREROUTING still jumps to the chain to delete. The
			// declaration's flush is rolled back with the rest.
			{text: renderSync(IPv4, &Sync{Tables: []TableSync{{Table: TableNAT, Delete: []ChainName{nat.Chains[len(nat.Chains)-1].Name}}}}), failLine: 3},
			// Refused at COMMIT: MASQUERADE made reachable from PREROUTING.
			{text: hookJump, failLine: 3},
		}},
		{"services-v6", IPv6, []step{
			{text: foreignV6},
			{text: renderSync(IPv6, svc6)},
			{text: "*nat\n-A OUTPUT -j " + string(svc6.Tables[0].Chains[len(svc6.Tables[0].Chains)-1].Name) + "\nCOMMIT\n"},
		}},
		{"declare-flushes", IPv4, []step{
			{text: "*filter\n:LBK-A - [0:0]\n-A LBK-A -j ACCEPT\n-A LBK-A -j DROP\nCOMMIT\n"},
			{text: "*filter\n:LBK-A - [0:0]\n-A LBK-A -j RETURN\nCOMMIT\n"},
		}},
		{"atomic-per-table", IPv4, []step{
			{text: foreignV4},
			{text: "*nat\n:LBK-A - [0:0]\n:LBK-B - [0:0]\n-A LBK-A -j LBK-B\n-A LBK-B -j RETURN\nCOMMIT\n*filter\n:LBK-F - [0:0]\n-A LBK-F -j DROP\nCOMMIT\n"},
			// nat commits, filter fails: nat keeps the new rule, filter the old.
			{text: "*nat\n:LBK-A - [0:0]\n-A LBK-A -j RETURN\nCOMMIT\n*filter\n:LBK-F - [0:0]\n-A LBK-F -j LBK-NOPE\nCOMMIT\n*raw\n:LBK-R - [0:0]\nCOMMIT\n", failLine: 7},
		}},
		{"delete-chain-rules", IPv4, []step{
			{text: "*filter\n:LBK-A - [0:0]\n:LBK-B - [0:0]\n-A LBK-A -j LBK-B\n-A LBK-B -j ACCEPT\nCOMMIT\n"},
			{text: "*filter\n-X LBK-A\nCOMMIT\n", failLine: 2},                                    // not empty
			{text: "*filter\n:LBK-B - [0:0]\n-X LBK-B\nCOMMIT\n", failLine: 3},                    // still jumped to
			{text: "*filter\n-X LBK-NOPE\nCOMMIT\n", failLine: 2},                                 // missing
			{text: "*filter\n:LBK-A - [0:0]\n:LBK-B - [0:0]\n-X LBK-B\nCOMMIT\n"},                 // flushed first: deleted
			{text: "*filter\n:LBK-B - [0:0]\n-X LBK-B\n-A LBK-A -j LBK-B\nCOMMIT\n", failLine: 4}, // gone again
			{text: "*filter\n-N LBK-C\n-A LBK-C -j DROP\n-I LBK-C -j ACCEPT\n-A LBK-C -j RETURN\n-D LBK-C -j DROP\nCOMMIT\n"},
			{text: "*filter\n-D LBK-C -j DROP\nCOMMIT\n", failLine: 2},
			{text: "*filter\n-N LBK-C\nCOMMIT\n", failLine: 2},
			{text: "*filter\n-F LBK-C\n-X LBK-C\nCOMMIT\n"},
		}},
		{"targets-and-hooks", IPv4, []step{
			{text: "*filter\n:LBK-A - [0:0]\n-A LBK-A -j INPUT\nCOMMIT\n", failLine: 3},
			{text: "*filter\n:LBK-A - [0:0]\n-A LBK-NOPE -j ACCEPT\nCOMMIT\n", failLine: 3},
			{text: "*filter\n:LBK-A - [0:0]\n-A LBK-A -j DNAT --to-destination 192.0.2.1\nCOMMIT\n", failLine: 4},
			{text: "*nat\n:LBK-A - [0:0]\n-A LBK-A -j MASQUERADE\n-A PREROUTING -j LBK-A\nCOMMIT\n", failLine: 5},
			{text: "*nat\n:LBK-A - [0:0]\n-A LBK-A -j DNAT --to-destination 192.0.2.1\n-A POSTROUTING -j LBK-A\nCOMMIT\n", failLine: 5},
			{text: "*nat\n:LBK-A - [0:0]\n-A LBK-A -j MASQUERADE\n-A POSTROUTING -j LBK-A\nCOMMIT\n"},
			{text: "*filter\n:LBK-R - [0:0]\n-A LBK-R -j REJECT\n-A INPUT -j LBK-R\n-A FORWARD -j LBK-R\nCOMMIT\n"},
			// A loop nobody reaches is fine; reached from a hook it is not.
			{text: "*filter\n:LBK-L1 - [0:0]\n:LBK-L2 - [0:0]\n-A LBK-L1 -j LBK-L2\n-A LBK-L2 -g LBK-L1\nCOMMIT\n"},
			{text: "*filter\n-A OUTPUT -j LBK-L1\nCOMMIT\n", failLine: 3},
			{text: "*filter\n:LBK-S - [0:0]\n-A LBK-S -j LBK-S\nCOMMIT\n"},
			// Last: nft accepts it (see nftAccepts), so nft's state diverges.
			{text: "*nat\n:LBK-L - [0:0]\n-A LBK-L -m addrtype --dst-type LOCAL --limit-iface-in -j RETURN\n-A OUTPUT -j LBK-L\nCOMMIT\n", failLine: 5, nftAccepts: true},
		}},
		{"policies-and-syntax", IPv4, []step{
			{text: "*filter\n:INPUT DROP [0:0]\n:FORWARD - [0:0]\nCOMMIT\n"},
			{text: "*filter\n:LBK-A - [0:0]\n*nat\nCOMMIT\n", failLine: 3},
			{text: "*filter\n:LBK-A - [0:0]\n", failLine: 3},
			{text: "COMMIT\n", failLine: 1},
			{text: "*filter\n-P INPUT ACCEPT\nCOMMIT\n"},
		}},
		{"chain-order", IPv4, []step{
			{text: "*filter\n:LBK-b - [0:0]\n:LBK-B - [0:0]\n:LBK_a - [0:0]\n:LBK.a - [0:0]\n:LBK-1 - [0:0]\n:lbk-z - [0:0]\nCOMMIT\n"},
		}},
	}
}

// stepLabel names step i of a scenario in failures.
func stepLabel(sc scenario, i int) string {
	first := strings.SplitN(sc.steps[i].text, "\n", 3)
	return fmt.Sprintf("%s step %d (%s...)", sc.name, i, strings.Join(first[:min(2, len(first))], " "))
}
