package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lbkit/lbkit/lb"
)

const (
	cluster = lb.TrafficPolicyCluster
	local   = lb.TrafficPolicyLocal
)

// TestSharingRulesTable lists the sharing cases by hand, each with the rule
// that must block it ("" = may share).
func TestSharingRulesTable(t *testing.T) {
	type side struct {
		key    string
		policy lb.TrafficPolicy
		sel    string
		ports  []Port
	}
	cases := []struct {
		name      string
		holder    side
		requester side
		want      SharingRule
	}{
		{"neither has a key", side{"", cluster, "", []Port{tcp(80)}}, side{"", cluster, "", []Port{tcp(443)}}, RuleHolderNotShared},
		{"holder has no key", side{"", cluster, "", []Port{tcp(80)}}, side{"k", cluster, "", []Port{tcp(443)}}, RuleHolderNotShared},
		{"requester has no key", side{"k", cluster, "", []Port{tcp(80)}}, side{"", cluster, "", []Port{tcp(443)}}, RuleRequesterNotShared},
		{"different keys", side{"a", cluster, "", []Port{tcp(80)}}, side{"b", cluster, "", []Port{tcp(443)}}, RuleKeyMismatch},
		{"same key, different ports", side{"k", cluster, "", []Port{tcp(80)}}, side{"k", cluster, "", []Port{tcp(443)}}, ""},
		{"same key, same number other protocol", side{"k", cluster, "", []Port{tcp(53)}}, side{"k", cluster, "", []Port{udp(53)}}, ""},
		{"same key, same port", side{"k", cluster, "", []Port{tcp(80)}}, side{"k", cluster, "", []Port{tcp(80)}}, RulePortCollision},
		{"same key, one of several ports collides", side{"k", cluster, "", []Port{tcp(80), udp(53)}}, side{"k", cluster, "", []Port{tcp(443), udp(53)}}, RulePortCollision},
		{"SCTP collides with SCTP", side{"k", cluster, "", []Port{{lb.SCTP, 9}}}, side{"k", cluster, "", []Port{{lb.SCTP, 9}}}, RulePortCollision},
		{"no ports at all", side{"k", cluster, "", nil}, side{"k", cluster, "", nil}, ""},
		{"Cluster holder, Local requester", side{"k", cluster, "", []Port{tcp(80)}}, side{"k", local, "app=web", []Port{tcp(443)}}, RuleTrafficPolicy},
		{"Local holder, Cluster requester", side{"k", local, "app=web", []Port{tcp(80)}}, side{"k", cluster, "app=web", []Port{tcp(443)}}, RuleTrafficPolicy},
		{"both Local, same selector", side{"k", local, "app=web", []Port{tcp(80)}}, side{"k", local, "app=web", []Port{tcp(443)}}, ""},
		{"both Local, different selectors", side{"k", local, "app=web", []Port{tcp(80)}}, side{"k", local, "app=db", []Port{tcp(443)}}, RuleEndpointsSelector},
		// Deliberate deviations from MetalLB, whose backend keys are "" for
		// Cluster and for Local without a selector, and compare equal (see
		// the package doc).
		{"both Local, no selectors", side{"k", local, "", []Port{tcp(80)}}, side{"k", local, "", []Port{tcp(443)}}, RuleEndpointsSelector},
		{"Cluster holder, Local requester without selector", side{"k", cluster, "", []Port{tcp(80)}}, side{"k", local, "", []Port{tcp(443)}}, RuleTrafficPolicy},
		// The opt-in to MetalLB's behaviour: one fixed identity for
		// selector-less services.
		{"both Local, same placeholder identity", side{"k", local, "<none>", []Port{tcp(80)}}, side{"k", local, "<none>", []Port{tcp(443)}}, ""},
		{"both Local, requester has no selector", side{"k", local, "app=web", []Port{tcp(80)}}, side{"k", local, "", []Port{tcp(443)}}, RuleEndpointsSelector},
		{"both Cluster, selectors differ (ignored)", side{"k", cluster, "app=web", []Port{tcp(80)}}, side{"k", cluster, "app=db", []Port{tcp(443)}}, ""},
		{"empty policy is Cluster", side{"k", "", "", []Port{tcp(80)}}, side{"k", cluster, "", []Port{tcp(443)}}, ""},
		{"empty policy vs Local", side{"k", "", "", []Port{tcp(80)}}, side{"k", local, "x", []Port{tcp(443)}}, RuleTrafficPolicy},
		{"key mismatch wins over port collision", side{"a", cluster, "", []Port{tcp(80)}}, side{"b", cluster, "", []Port{tcp(80)}}, RuleKeyMismatch},
		{"policy wins over port collision", side{"k", cluster, "", []Port{tcp(80)}}, side{"k", local, "x", []Port{tcp(80)}}, RuleTrafficPolicy},
		{"selector wins over port collision", side{"k", local, "x", []Port{tcp(80)}}, side{"k", local, "y", []Port{tcp(80)}}, RuleEndpointsSelector},
		{"both Local, same selector, port collision", side{"k", local, "x", []Port{tcp(80)}}, side{"k", local, "x", []Port{tcp(80)}}, RulePortCollision},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := Request{Service: "holder", SharingKey: c.holder.key, TrafficPolicy: c.holder.policy, EndpointsSelector: c.holder.sel, Ports: c.holder.ports}
			r := Request{Service: "requester", SharingKey: c.requester.key, TrafficPolicy: c.requester.policy, EndpointsSelector: c.requester.sel, Ports: c.requester.ports}
			checkPair(t, h, r, c.want)
		})
	}
}

// checkPair checks one (holder, requester) pair three ways: CanShare, a
// request for the holder's address, and an automatic allocation with the
// same key, which must co-locate exactly when sharing is allowed.
func checkPair(t *testing.T, h, r Request, want SharingRule) {
	t.Helper()
	err := CanShare(h, r)
	require.Equal(t, want, ruleOf(err), "CanShare: rule (err %v)", err)
	if want != "" {
		require.ErrorIs(t, err, ErrAddressInUse, "CanShare")
	}

	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	held := mustAlloc(t, a, h).IPs[0]
	r.IPs = []netip.Addr{held}
	_, err = a.Allocate(r)
	require.Equal(t, want, ruleOf(err), "requested IP: rule (err %v)", err)
	if want != "" {
		var se *SharingError
		require.ErrorAs(t, err, &se)
		msg := []any{"SharingError names %v/%q, want %v/%q", se.IP, se.Holder, held, h.Service}
		require.Equal(t, held, se.IP, msg...)
		require.Equal(t, h.Service, se.Holder, msg...)
		_, ok := a.Assignment(r.Service)
		require.False(t, ok, "refused request left an assignment")
	} else {
		require.Equal(t, []string{h.Service, r.Service}, a.Holders(held), "Holders")
	}

	b := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	held = mustAlloc(t, b, h).IPs[0]
	r.IPs = nil
	got := mustAlloc(t, b, r).IPs[0]
	require.Equal(t, want == "", got == held,
		"automatic allocation put requester on %v, holder on %v; sharing allowed = %v", got, held, want == "")
}

func ruleOf(err error) SharingRule {
	var se *SharingError
	if errors.As(err, &se) {
		return se.Rule
	}
	if err != nil {
		return SharingRule("unexpected error: " + err.Error())
	}
	return ""
}

// expectedRule is the specification of the sharing rules written as "all
// the rules that fail, first one wins", independently of shareRule.
func expectedRule(h, r Request) SharingRule {
	var fails []SharingRule
	if h.SharingKey == "" {
		fails = append(fails, RuleHolderNotShared)
	}
	if r.SharingKey == "" {
		fails = append(fails, RuleRequesterNotShared)
	}
	if h.SharingKey != "" && r.SharingKey != "" && h.SharingKey != r.SharingKey {
		fails = append(fails, RuleKeyMismatch)
	}
	hp, rp := h.TrafficPolicy, r.TrafficPolicy
	if hp == "" {
		hp = cluster
	}
	if rp == "" {
		rp = cluster
	}
	if hp != rp {
		fails = append(fails, RuleTrafficPolicy)
	}
	if hp == local && rp == local && (h.EndpointsSelector == "" || h.EndpointsSelector != r.EndpointsSelector) {
		fails = append(fails, RuleEndpointsSelector)
	}
	for _, p := range h.Ports {
		if slices.Contains(r.Ports, p) {
			fails = append(fails, RulePortCollision)
			break
		}
	}
	if len(fails) == 0 {
		return ""
	}
	return fails[0]
}

// TestSharingRulesExhaustive runs every combination of sharing key, traffic
// policy, selector and port overlap for a holder and a requester.
func TestSharingRulesExhaustive(t *testing.T) {
	keys := []string{"", "a", "b"}
	policies := []lb.TrafficPolicy{"", cluster, local}
	sels := []string{"", "x", "y"}
	reqPorts := [][]Port{nil, {udp(80)}, {tcp(80)}, {tcp(443), tcp(80)}, {tcp(443)}}
	holderPorts := []Port{tcp(80)}
	n, allowed := 0, 0
	for _, hk := range keys {
		for _, rk := range keys {
			for _, hp := range policies {
				for _, rp := range policies {
					for _, hs := range sels {
						for _, rs := range sels {
							for _, ports := range reqPorts {
								h := Request{Service: "h", SharingKey: hk, TrafficPolicy: hp, EndpointsSelector: hs, Ports: holderPorts}
								r := Request{Service: "r", SharingKey: rk, TrafficPolicy: rp, EndpointsSelector: rs, Ports: ports}
								want := expectedRule(h, r)
								name := fmt.Sprintf("h=%q/%s/%q r=%q/%s/%q ports=%v", hk, hp, hs, rk, rp, rs, ports)
								t.Run(name, func(t *testing.T) { checkPair(t, h, r, want) })
								// Symmetry: allowed one way iff allowed the other.
								assert.Equal(t, CanShare(h, r) == nil, CanShare(r, h) == nil, "%s: CanShare is not symmetric", name)
								n++
								if want == "" {
									allowed++
								}
							}
						}
					}
				}
			}
		}
	}
	// Guard against a degenerate oracle: both outcomes must occur, and every
	// rule must be exercised.
	require.NotZero(t, allowed, "%d of %d combinations allowed", allowed, n)
	require.NotEqual(t, n, allowed, "%d of %d combinations allowed", allowed, n)
	t.Logf("%d combinations, %d may share", n, allowed)
}

func TestSharingRulesAllExercised(t *testing.T) {
	seen := map[SharingRule]bool{}
	for _, hk := range []string{"", "a"} {
		for _, rk := range []string{"", "a", "b"} {
			for _, hp := range []lb.TrafficPolicy{cluster, local} {
				for _, rp := range []lb.TrafficPolicy{cluster, local} {
					for _, rs := range []string{"x", "y"} {
						for _, rport := range []Port{tcp(80), tcp(81)} {
							h := Request{Service: "h", SharingKey: hk, TrafficPolicy: hp, EndpointsSelector: "x", Ports: []Port{tcp(80)}}
							r := Request{Service: "r", SharingKey: rk, TrafficPolicy: rp, EndpointsSelector: rs, Ports: []Port{rport}}
							seen[expectedRule(h, r)] = true
						}
					}
				}
			}
		}
	}
	for _, rule := range []SharingRule{"", RuleHolderNotShared, RuleRequesterNotShared, RuleKeyMismatch, RuleTrafficPolicy, RuleEndpointsSelector, RulePortCollision} {
		assert.True(t, seen[rule], "rule %q never produced", rule)
	}
}

func TestSharingThreeServices(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	web := Request{Service: "web", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(80)}}
	tls := Request{Service: "tls", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(443)}}
	dns := Request{Service: "dns", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{udp(53), tcp(53)}}
	x := mustAlloc(t, a, web).IPs[0]
	require.Equal(t, x, mustAlloc(t, a, tls).IPs[0], "three compatible services not co-located")
	require.Equal(t, x, mustAlloc(t, a, dns).IPs[0], "three compatible services not co-located")
	// A fourth colliding with any one of them is refused on x and placed
	// elsewhere automatically.
	bad := Request{Service: "bad", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(53)}, IPs: []netip.Addr{x}}
	_, err := a.Allocate(bad)
	var se *SharingError
	require.ErrorAs(t, err, &se)
	require.Equal(t, RulePortCollision, se.Rule, "err = %v", err)
	require.Equal(t, "dns", se.Holder, "err = %v", err)
	require.Equal(t, tcp(53), se.Port, "err = %v", err)
	bad.IPs = nil
	require.NotEqual(t, x, mustAlloc(t, a, bad).IPs[0], "colliding service co-located")
	// The lone holder may change its key in place (MetalLB allows it).
	lone := mustAlloc(t, a, Request{Service: "lone", SharingKey: "old"})
	mustAlloc(t, a, Request{Service: "lone", SharingKey: "new", IPs: lone.IPs})
	joiner := mustAlloc(t, a, Request{Service: "joiner", SharingKey: "new", Pool: "p"})
	require.Equal(t, lone.IPs[0], joiner.IPs[0], "joiner on %v, lone on %v: key index not updated", joiner.IPs, lone.IPs)
	// ... but not while someone shares with it.
	_, err = a.Allocate(Request{Service: "lone", SharingKey: "newer", IPs: lone.IPs})
	require.Equal(t, RuleKeyMismatch, ruleOf(err), "err = %v", err)
}

func TestSharingErrorMessages(t *testing.T) {
	for _, c := range []struct {
		h, r Request
		want string
	}{
		{Request{Service: "a"}, Request{Service: "b"}, `pool: the address is held by "a" and cannot be shared (rule holder-not-shared): the holder has no sharing key`},
		{Request{Service: "a", SharingKey: "x"}, Request{Service: "b", SharingKey: "y"}, `sharing key "y" differs from "x"`},
		{Request{Service: "a", SharingKey: "x"}, Request{Service: "b", SharingKey: "x", TrafficPolicy: local}, `traffic policy Local cannot share with Cluster`},
		{Request{Service: "a", SharingKey: "x", TrafficPolicy: local}, Request{Service: "b", SharingKey: "x", TrafficPolicy: local}, `needs a non-empty endpoints selector`},
		{Request{Service: "a", SharingKey: "x", Ports: []Port{udp(53)}}, Request{Service: "b", SharingKey: "x", Ports: []Port{udp(53)}}, `port UDP/53 is already used`},
	} {
		assert.ErrorContains(t, CanShare(c.h, c.r), c.want, "CanShare")
	}
}

// step is one Allocate in a sharing scenario and what it must give: the
// addresses, or the rule, holder and port of the refusal.
type step struct {
	req    Request
	ips    []string
	rule   SharingRule
	holder string
	port   Port
}

// TestSharingScenarios walks hand-written sequences with several holders,
// dual-stack services and updates that change ports, checking every result
// and, after each step, the holders of each address and the allocator's
// invariants.
func TestSharingScenarios(t *testing.T) {
	k := func(svc string, ports ...Port) Request { return Request{Service: svc, SharingKey: "k", Ports: ports} }
	dual := func(r Request) Request { r.Family = DualStack; return r }
	pin := func(r Request, ips ...string) Request { r.IPs = addrs(ips...); return r }
	v6 := func(r Request) Request { r.Family = IPv6; return r }
	for _, sc := range []struct {
		name  string
		steps []step
		// holders lists, at the end, the holders of each address.
		holders map[string][]string
	}{
		{
			name: "several holders: the first holder in name order that blocks is named",
			steps: []step{
				{req: k("a", tcp(80)), ips: []string{"192.0.2.0"}},
				{req: k("b", tcp(443)), ips: []string{"192.0.2.0"}},
				{req: k("c", udp(53)), ips: []string{"192.0.2.0"}},
				// Collides with b only.
				{req: pin(k("d", tcp(443)), "192.0.2.0"), rule: RulePortCollision, holder: "b", port: tcp(443)},
				// Collides with a and c: a comes first.
				{req: pin(k("e", udp(53), tcp(80)), "192.0.2.0"), rule: RulePortCollision, holder: "a", port: tcp(80)},
				// Another key: refused by the first holder.
				{req: pin(Request{Service: "f", SharingKey: "j", Ports: []Port{tcp(8080)}}, "192.0.2.0"), rule: RuleKeyMismatch, holder: "a"},
				// Compatible with all three: joins.
				{req: k("g", tcp(8080)), ips: []string{"192.0.2.0"}},
				// d, placed automatically, gets an address of its own.
				{req: k("d", tcp(443)), ips: []string{"192.0.2.1"}},
			},
			holders: map[string][]string{"192.0.2.0": {"a", "b", "c", "g"}, "192.0.2.1": {"d"}},
		},
		{
			name: "dual-stack: each family is shared on its own",
			steps: []step{
				{req: dual(k("a", tcp(80))), ips: []string{"192.0.2.0", "2001:db8::"}},
				// Shares both addresses.
				{req: dual(k("b", tcp(443))), ips: []string{"192.0.2.0", "2001:db8::"}},
				// An IPv6-only service joins the IPv6 address.
				{req: v6(k("c", tcp(8443))), ips: []string{"2001:db8::"}},
				// Collides on both: two new addresses.
				{req: dual(k("d", tcp(80))), ips: []string{"192.0.2.1", "2001:db8::1"}},
				// Pinning the shared IPv6 address with a colliding port names
				// the IPv6 holder that blocks.
				{req: pin(v6(k("e", tcp(8443))), "2001:db8::"), rule: RulePortCollision, holder: "c", port: tcp(8443)},
				// Free on IPv4 .0 (8443 is only used on IPv6), taken on
				// IPv6 ::0 by c: IPv4 joins .0, IPv6 joins d's ::1.
				{req: dual(k("e", tcp(8443))), ips: []string{"192.0.2.0", "2001:db8::1"}},
			},
			holders: map[string][]string{
				"192.0.2.0": {"a", "b", "e"}, "2001:db8::": {"a", "b", "c"},
				"192.0.2.1": {"d"}, "2001:db8::1": {"d", "e"},
			},
		},
		{
			name: "updates that change ports",
			steps: []step{
				{req: k("a", tcp(80)), ips: []string{"192.0.2.0"}},
				{req: k("b", tcp(443)), ips: []string{"192.0.2.0"}},
				// a moves to b's port: refused, a keeps TCP/80.
				{req: k("a", tcp(443)), rule: RulePortCollision, holder: "b", port: tcp(443)},
				{req: pin(k("c", tcp(80)), "192.0.2.0"), rule: RulePortCollision, holder: "a", port: tcp(80)},
				// a adds a port nobody uses: kept in place, ports updated.
				{req: k("a", tcp(80), tcp(8080)), ips: []string{"192.0.2.0"}},
				{req: pin(k("c", tcp(8080)), "192.0.2.0"), rule: RulePortCollision, holder: "a", port: tcp(8080)},
				// a gives up TCP/80: c may now take it on the shared address.
				{req: k("a", tcp(8080)), ips: []string{"192.0.2.0"}},
				{req: k("c", tcp(80)), ips: []string{"192.0.2.0"}},
				// b changes its port to one a holds: refused, b keeps 443.
				{req: k("b", udp(53), tcp(8080)), rule: RulePortCollision, holder: "a", port: tcp(8080)},
				{req: pin(k("d", tcp(443)), "192.0.2.0"), rule: RulePortCollision, holder: "b", port: tcp(443)},
			},
			holders: map[string][]string{"192.0.2.0": {"a", "b", "c"}},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			a := mustNew(t, mkPool(t, "p", "192.0.2.0/29", "2001:db8::/125"))
			for i, st := range sc.steps {
				before, hadBefore := a.Assignment(st.req.Service)
				got, err := a.Allocate(st.req)
				if st.rule != "" {
					var se *SharingError
					msg := []any{"step %d %+v: err %v, want rule %s by %q on %v", i, st.req, err, st.rule, st.holder, st.port}
					require.ErrorAs(t, err, &se, msg...)
					require.Equal(t, st.rule, se.Rule, msg...)
					require.Equal(t, st.holder, se.Holder, msg...)
					require.Equal(t, st.port, se.Port, msg...)
					// A refused request changes nothing.
					after, hasAfter := a.Assignment(st.req.Service)
					if hadBefore != hasAfter || !slices.Equal(before.IPs, after.IPs) || !slices.Equal(before.Request.Ports, after.Request.Ports) {
						t.Fatalf("step %d: refused request changed %s from %+v to %+v", i, st.req.Service, before, after)
					}
				} else {
					require.NoError(t, err, "step %d %+v", i, st.req)
					msg := []any{"step %d %+v: got %v ports %v, want %v", i, st.req, got.IPs, got.Request.Ports, st.ips}
					require.Equal(t, addrs(st.ips...), got.IPs, msg...)
					require.Equal(t, sortedPorts(st.req.Ports), got.Request.Ports, msg...)
				}
				checkInvariants(t, a)
			}
			for addr, want := range sc.holders {
				assert.Equal(t, want, a.Holders(ip(addr)), "holders of %s", addr)
			}
		})
	}
}

func sortedPorts(ps []Port) []Port {
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePorts)
	return out
}
