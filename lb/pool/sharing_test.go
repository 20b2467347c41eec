package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

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
		{"both Local, no selectors", side{"k", local, "", []Port{tcp(80)}}, side{"k", local, "", []Port{tcp(443)}}, RuleEndpointsSelector},
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
	if got := ruleOf(err); got != want {
		t.Fatalf("CanShare: rule %q, want %q (err %v)", got, want, err)
	}
	if want != "" && !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("CanShare error %v does not match ErrAddressInUse", err)
	}

	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	held := mustAlloc(t, a, h).IPs[0]
	r.IPs = []netip.Addr{held}
	_, err = a.Allocate(r)
	if got := ruleOf(err); got != want {
		t.Fatalf("requested IP: rule %q, want %q (err %v)", got, want, err)
	}
	if want != "" {
		var se *SharingError
		errors.As(err, &se)
		if se.IP != held || se.Holder != h.Service {
			t.Fatalf("SharingError names %v/%q, want %v/%q", se.IP, se.Holder, held, h.Service)
		}
		if _, ok := a.Assignment(r.Service); ok {
			t.Fatal("refused request left an assignment")
		}
	} else if got := a.Holders(held); !slices.Equal(got, []string{h.Service, r.Service}) {
		t.Fatalf("Holders = %v", got)
	}

	b := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	held = mustAlloc(t, b, h).IPs[0]
	r.IPs = nil
	got := mustAlloc(t, b, r).IPs[0]
	if (got == held) != (want == "") {
		t.Fatalf("automatic allocation put requester on %v, holder on %v; sharing allowed = %v", got, held, want == "")
	}
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
								if (CanShare(h, r) == nil) != (CanShare(r, h) == nil) {
									t.Errorf("%s: CanShare is not symmetric", name)
								}
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
	if allowed == 0 || allowed == n {
		t.Fatalf("%d of %d combinations allowed", allowed, n)
	}
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
		if !seen[rule] {
			t.Errorf("rule %q never produced", rule)
		}
	}
}

func TestSharingThreeServices(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	web := Request{Service: "web", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(80)}}
	tls := Request{Service: "tls", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(443)}}
	dns := Request{Service: "dns", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{udp(53), tcp(53)}}
	x := mustAlloc(t, a, web).IPs[0]
	if mustAlloc(t, a, tls).IPs[0] != x || mustAlloc(t, a, dns).IPs[0] != x {
		t.Fatal("three compatible services not co-located")
	}
	// A fourth colliding with any one of them is refused on x and placed
	// elsewhere automatically.
	bad := Request{Service: "bad", SharingKey: "k", TrafficPolicy: local, EndpointsSelector: "app=web", Ports: []Port{tcp(53)}, IPs: []netip.Addr{x}}
	_, err := a.Allocate(bad)
	var se *SharingError
	if !errors.As(err, &se) || se.Rule != RulePortCollision || se.Holder != "dns" || se.Port != tcp(53) {
		t.Fatalf("err = %v", err)
	}
	bad.IPs = nil
	if got := mustAlloc(t, a, bad).IPs[0]; got == x {
		t.Fatal("colliding service co-located")
	}
	// The lone holder may change its key in place (MetalLB allows it).
	lone := mustAlloc(t, a, Request{Service: "lone", SharingKey: "old"})
	mustAlloc(t, a, Request{Service: "lone", SharingKey: "new", IPs: lone.IPs})
	joiner := mustAlloc(t, a, Request{Service: "joiner", SharingKey: "new", Pool: "p"})
	if joiner.IPs[0] != lone.IPs[0] {
		t.Fatalf("joiner on %v, lone on %v: key index not updated", joiner.IPs, lone.IPs)
	}
	// ... but not while someone shares with it.
	_, err = a.Allocate(Request{Service: "lone", SharingKey: "newer", IPs: lone.IPs})
	if ruleOf(err) != RuleKeyMismatch {
		t.Fatalf("err = %v", err)
	}
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
		err := CanShare(c.h, c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CanShare = %v, want mention of %q", err, c.want)
		}
	}
}
