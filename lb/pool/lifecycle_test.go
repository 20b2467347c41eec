package pool

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSetPoolsReportsAddressesThatLeft(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"), mkPool(t, "q", "198.51.100.0/29"))
	mustAlloc(t, a, Request{Service: "a"})                             // 192.0.2.0
	mustAlloc(t, a, Request{Service: "b"})                             // 192.0.2.1
	mustAlloc(t, a, Request{Service: "c", IPs: addrs("192.0.2.6")})    // pinned
	mustAlloc(t, a, Request{Service: "d", IPs: addrs("198.51.100.0")}) // pinned, in q
	mustAlloc(t, a, Request{Service: "e", IPs: addrs("192.0.2.7")})    // pinned, will stay
	mustAlloc(t, a, Request{Service: "f"})                             // 192.0.2.2
	mustAlloc(t, a, Request{Service: "g", Pool: "p"})                  // 192.0.2.3
	mustAlloc(t, a, Request{Service: "h", Pool: "q"})                  // 198.51.100.1

	// p shrinks to .0-.1 plus .7; q is renamed r.
	changes, err := a.SetPools([]AddressPool{
		mkPool(t, "p", "192.0.2.0/31", "192.0.2.7/32"),
		mkPool(t, "r", "198.51.100.0/29"),
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Change{}
	for _, c := range changes {
		byName[c.Service] = c
	}
	if len(changes) != 5 || !slices.IsSortedFunc(changes, func(x, y Change) int { return strings.Compare(x.Service, y.Service) }) {
		t.Fatalf("changes = %+v", changes)
	}
	// c asked for 192.0.2.6 specifically: it cannot be re-allocated.
	c := byName["c"]
	if c.Kind != ChangeRevoked || !slices.Equal(c.Left, addrs("192.0.2.6")) || !errors.Is(c.Err, ErrNotInPool) {
		t.Fatalf("c = %+v", c)
	}
	if _, ok := a.Assignment("c"); ok {
		t.Fatal("revoked service still has an assignment")
	}
	// d keeps its address, in the renamed pool: its request names none.
	d := byName["d"]
	if d.Kind != ChangeRepooled || d.Old.Pool != "q" || d.New.Pool != "r" || d.New.IPs[0] != ip("198.51.100.0") || len(d.Left) != 0 {
		t.Fatalf("d = %+v", d)
	}
	// f's 192.0.2.2 left; p is full (.0, .1, .7 held), so f goes to r.
	f := byName["f"]
	if f.Kind != ChangeReallocated || !slices.Equal(f.Left, addrs("192.0.2.2")) {
		t.Fatalf("f = %+v", f)
	}
	wantIPs(t, f.New, "r", "198.51.100.1")
	// g asked for pool p, which is full now: revoked, with the reason.
	g := byName["g"]
	if g.Kind != ChangeRevoked || !slices.Equal(g.Left, addrs("192.0.2.3")) || !errors.Is(g.Err, ErrPoolExhausted) {
		t.Fatalf("g = %+v", g)
	}
	// h asked for pool q, which is gone (renamed r): its request cannot be
	// met any more, so it is revoked, as MetalLB clears a service whose
	// address-pool annotation names no pool.
	h := byName["h"]
	if h.Kind != ChangeRevoked || len(h.Left) != 0 || !errors.Is(h.Err, ErrUnknownPool) {
		t.Fatalf("h = %+v", h)
	}
	// Unaffected services are not reported and keep their addresses.
	wantIPs(t, mustAllocOK(t, a, "a"), "p", "192.0.2.0")
	wantIPs(t, mustAllocOK(t, a, "e"), "p", "192.0.2.7")
	st := a.Stats()
	if st[0].IPv4Size != 3 || st[0].IPv4InUse != 3 || st[1].IPv4InUse != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestSetPoolsRevokesWhenNothingLeft(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/30"))
	mustAlloc(t, a, Request{Service: "a"})
	mustAlloc(t, a, Request{Service: "b"})
	changes, err := a.SetPools(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 {
		t.Fatalf("changes = %+v", changes)
	}
	for _, c := range changes {
		if c.Kind != ChangeRevoked || len(c.Left) != 1 || c.Left[0] != c.Old.IPs[0] || !errors.Is(c.Err, ErrPoolExhausted) {
			t.Fatalf("change = %+v", c)
		}
	}
	if len(a.Assignments()) != 0 {
		t.Fatal("assignments survived")
	}
}

func TestSetPoolsAvoidBuggyIPsTurnedOn(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24"))
	mustAlloc(t, a, Request{Service: "zero"}) // 192.0.2.0
	mustAlloc(t, a, Request{Service: "one"})  // 192.0.2.1
	changes, err := a.SetPools([]AddressPool{buggy(mkPool(t, "p", "192.0.2.0/24"))})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Service != "zero" || changes[0].Kind != ChangeReallocated ||
		!slices.Equal(changes[0].Left, addrs("192.0.2.0")) {
		t.Fatalf("changes = %+v", changes)
	}
	wantIPs(t, changes[0].New, "p", "192.0.2.2")
}

func TestSetPoolsDualStackKeepsRemainingFamily(t *testing.T) {
	a := mustNew(t,
		mkPool(t, "first", "203.0.113.0/29", "2001:db8:1::/125"),
		mkPool(t, "p", "192.0.2.0/29", "2001:db8::/125"),
	)
	// Fill "first" so that d lands in p.
	for _, s := range []string{"1", "2", "3", "4", "5", "6", "7", "8"} {
		mustAlloc(t, a, Request{Service: "fill" + s, Family: DualStack, Pool: "first"})
	}
	d := mustAlloc(t, a, Request{Service: "d", Family: DualStack})
	wantIPs(t, d, "p", "192.0.2.0", "2001:db8::")
	for _, s := range []string{"1", "2", "3", "4", "5", "6", "7", "8"} {
		a.Release("fill" + s)
	}
	// p loses its IPv6 range's first address; "first" is now empty and
	// first in order, but d's remaining IPv4 is kept, so p is preferred.
	changes, err := a.SetPools([]AddressPool{
		mkPool(t, "first", "203.0.113.0/29", "2001:db8:1::/125"),
		mkPool(t, "p", "192.0.2.0/29", "2001:db8::1-2001:db8::7"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Kind != ChangeReallocated || !slices.Equal(changes[0].Left, addrs("2001:db8::")) {
		t.Fatalf("changes = %+v", changes)
	}
	wantIPs(t, changes[0].New, "p", "192.0.2.0", "2001:db8::1")
}

func TestSetPoolsSplitAcrossPools(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29", "2001:db8::/125"))
	mustAlloc(t, a, Request{Service: "d", Family: DualStack})
	// The two families now live in two pools: d cannot keep both, so it is
	// re-allocated; no address left the pools.
	changes, err := a.SetPools([]AddressPool{
		mkPool(t, "v4", "192.0.2.0/29"),
		mkPool(t, "v6", "2001:db8::/125"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Kind != ChangeRevoked || len(changes[0].Left) != 0 || !errors.Is(changes[0].Err, ErrPoolExhausted) {
		t.Fatalf("changes = %+v", changes)
	}
}

func TestSetPoolsKeepsSharedAddresses(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	x := mustAlloc(t, a, Request{Service: "x", SharingKey: "k", Ports: []Port{tcp(80)}})
	mustAlloc(t, a, Request{Service: "y", SharingKey: "k", Ports: []Port{tcp(443)}})
	changes, err := a.SetPools([]AddressPool{mkPool(t, "p", "192.0.2.0/28")})
	if err != nil || len(changes) != 0 {
		t.Fatalf("SetPools = %+v, %v", changes, err)
	}
	if h := a.Holders(x.IPs[0]); !slices.Equal(h, []string{"x", "y"}) {
		t.Fatalf("holders = %v", h)
	}
	// The sharing index survived the rebuild: a third service joins.
	if z := mustAlloc(t, a, Request{Service: "z", SharingKey: "k", Ports: []Port{tcp(8080)}}); z.IPs[0] != x.IPs[0] {
		t.Fatalf("z on %v", z.IPs)
	}
	if st := a.Stats()[0]; st.IPv4InUse != 1 || st.IPv4Size != 16 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRestoreDoesNotMoveServices(t *testing.T) {
	pools := []AddressPool{mkPool(t, "p", "192.0.2.0/24", "2001:db8::/64"), manual(mkPool(t, "m", "198.51.100.0/24"))}
	before := mustNew(t, pools...)
	// A history of allocations and releases leaves holes.
	for _, s := range []string{"a", "b", "c", "d"} {
		mustAlloc(t, before, Request{Service: s})
	}
	mustAlloc(t, before, Request{Service: "dual", Family: DualStack})
	mustAlloc(t, before, Request{Service: "web", SharingKey: "k", Ports: []Port{tcp(80)}})
	mustAlloc(t, before, Request{Service: "tls", SharingKey: "k", Ports: []Port{tcp(443)}})
	mustAlloc(t, before, Request{Service: "man", Pool: "m"})
	before.Release("a")
	before.Release("c")
	saved := before.Assignments()

	// Restart: a fresh allocator, the same pools, the saved assignments.
	after := mustNew(t, pools...)
	res := after.Restore(saved)
	for i, r := range res {
		if r.Err != nil || r.Service != saved[i].Service {
			t.Fatalf("restore %s: %v", r.Service, r.Err)
		}
		if !slices.Equal(r.Assignment.IPs, saved[i].IPs) || r.Assignment.Pool != saved[i].Pool {
			t.Fatalf("restore moved %s: %v -> %v", r.Service, saved[i].IPs, r.Assignment.IPs)
		}
	}
	if got := after.Assignments(); !equalAssignments(got, saved) {
		t.Fatalf("after restore:\n%+v\nbefore:\n%+v", got, saved)
	}
	// New services get the holes, not restored addresses.
	wantIPs(t, mustAlloc(t, after, Request{Service: "new1"}), "p", "192.0.2.0")
	wantIPs(t, mustAlloc(t, after, Request{Service: "new2"}), "p", "192.0.2.2")
	// And an unchanged request keeps the restored address.
	wantIPs(t, mustAlloc(t, after, Request{Service: "d"}), "p", "192.0.2.3")
}

func equalAssignments(a, b []Assignment) bool {
	return slices.EqualFunc(a, b, func(x, y Assignment) bool {
		return x.Service == y.Service && x.Pool == y.Pool && slices.Equal(x.IPs, y.IPs) &&
			x.Request.SharingKey == y.Request.SharingKey && slices.Equal(x.Request.Ports, y.Request.Ports)
	})
}

func TestRestoreAddressOutsideEveryPool(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24", "2001:db8::/64"))
	res := a.Restore([]Assignment{
		{Service: "gone", IPs: addrs("203.0.113.9")},
		{Service: "half", IPs: addrs("192.0.2.9", "2001:db8:ffff::9"), Request: Request{Family: DualStack}},
		{Service: "ok", IPs: addrs("192.0.2.10")},
	})
	if !slices.Equal(res[0].NotInPool, addrs("203.0.113.9")) || !errors.Is(res[0].Err, ErrNotInPool) {
		t.Fatalf("gone = %+v", res[0])
	}
	if !slices.Equal(res[1].NotInPool, addrs("2001:db8:ffff::9")) || !errors.Is(res[1].Err, ErrNotInPool) {
		t.Fatalf("half = %+v", res[1])
	}
	if res[2].Err != nil {
		t.Fatalf("ok = %+v", res[2])
	}
	// Neither failed service holds anything, and the in-pool half of "half"
	// is free again.
	if got := a.Assignments(); len(got) != 1 || got[0].Service != "ok" {
		t.Fatalf("assignments = %+v", got)
	}
	if h := a.Holders(ip("192.0.2.9")); h != nil {
		t.Fatalf("192.0.2.9 held by %v", h)
	}
	// The caller may then allocate; pinning the surviving address keeps it.
	wantIPs(t, mustAlloc(t, a, Request{Service: "half", Family: DualStack, IPs: addrs("192.0.2.9")}), "p", "192.0.2.9", "2001:db8::")
}

func TestRestoreConflicts(t *testing.T) {
	a := mustNew(t, buggy(mkPool(t, "p", "192.0.2.0/24")))
	res := a.Restore([]Assignment{
		{Service: "old", IPs: addrs("192.0.2.5")},
		{Service: "young", IPs: addrs("192.0.2.5")}, // no key: conflict, oldest wins
		{Service: "s1", IPs: addrs("192.0.2.6"), Request: Request{SharingKey: "k", Ports: []Port{tcp(80)}}},
		{Service: "s2", IPs: addrs("192.0.2.6"), Request: Request{SharingKey: "k", Ports: []Port{tcp(443)}}},
		{Service: "s3", IPs: addrs("192.0.2.6"), Request: Request{SharingKey: "k", Ports: []Port{tcp(80)}}},
		{Service: "bug", IPs: addrs("192.0.2.255")},
		{Service: "mismatch", IPs: addrs("192.0.2.7"), Request: Request{Service: "other"}},
		{Service: "empty"},
		{Service: "twov4", IPs: addrs("192.0.2.8", "192.0.2.9")},
	})
	if res[0].Err != nil || res[2].Err != nil || res[3].Err != nil {
		t.Fatalf("results = %+v", res)
	}
	if ruleOf(res[1].Err) != RuleHolderNotShared {
		t.Fatalf("young = %v", res[1].Err)
	}
	if ruleOf(res[4].Err) != RulePortCollision {
		t.Fatalf("s3 = %v", res[4].Err)
	}
	if !errors.Is(res[5].Err, ErrNotInPool) || !slices.Equal(res[5].NotInPool, addrs("192.0.2.255")) {
		t.Fatalf("bug = %+v", res[5])
	}
	for _, i := range []int{6, 7, 8} {
		if !errors.Is(res[i].Err, ErrInvalid) {
			t.Fatalf("%s = %v, want ErrInvalid", res[i].Service, res[i].Err)
		}
	}
	if h := a.Holders(ip("192.0.2.6")); !slices.Equal(h, []string{"s1", "s2"}) {
		t.Fatalf("holders = %v", h)
	}
}

func TestRestoreOverExistingAssignment(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24"))
	mustAlloc(t, a, Request{Service: "s"}) // 192.0.2.0
	res := a.Restore([]Assignment{{Service: "s", IPs: addrs("192.0.2.50")}})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	wantIPs(t, mustAllocOK(t, a, "s"), "p", "192.0.2.50")
	if h := a.Holders(ip("192.0.2.0")); h != nil {
		t.Fatalf("old address still held by %v", h)
	}
	// Restoring the same addresses again is a no-op.
	if res := a.Restore([]Assignment{{Service: "s", IPs: addrs("192.0.2.50")}}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if st := a.Stats()[0]; st.IPv4InUse != 1 {
		t.Fatalf("in use = %d", st.IPv4InUse)
	}
}

// TestSetPoolsRequestNoLongerFits: a service whose addresses stay in the
// pools but no longer satisfy its request (a requested pool that lost them
// in a split, requested addresses it does not hold after a Restore) is
// re-allocated from its request at the configuration change and reported,
// as MetalLB re-allocates such a service, instead of being kept where the
// next Allocate with the same request would silently move it.
func TestSetPoolsRequestNoLongerFits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pools   []AddressPool
		setup   func(t *testing.T, a *Allocator)
		newCfg  []AddressPool
		kind    ChangeKind
		newPool string
		newIPs  []string
		err     error
	}{
		{
			name:  "requested pool split: the address went to the other pool",
			pools: []AddressPool{mkPool(t, "a", "192.0.2.0/28")},
			setup: func(t *testing.T, a *Allocator) {
				wantIPs(t, mustAlloc(t, a, Request{Service: "s", Pool: "a"}), "a", "192.0.2.0")
			},
			newCfg:  []AddressPool{mkPool(t, "b", "192.0.2.0/29"), mkPool(t, "a", "192.0.2.8/29")},
			kind:    ChangeReallocated,
			newPool: "a", newIPs: []string{"192.0.2.8"},
		},
		{
			name:  "requested pool split and the requested pool is full",
			pools: []AddressPool{mkPool(t, "a", "192.0.2.0/30")},
			setup: func(t *testing.T, a *Allocator) {
				mustAlloc(t, a, Request{Service: "s", Pool: "a"})               // 192.0.2.0
				mustAlloc(t, a, Request{Service: "t", IPs: addrs("192.0.2.2")}) // stays in a
			},
			newCfg: []AddressPool{mkPool(t, "b", "192.0.2.0/31"), mkPool(t, "a", "192.0.2.2/32")},
			kind:   ChangeRevoked, err: ErrPoolExhausted,
		},
		{
			name:  "dual-stack service of a requested pool whose IPv6 half moved",
			pools: []AddressPool{mkPool(t, "a", "192.0.2.0/29", "2001:db8::/125")},
			setup: func(t *testing.T, a *Allocator) {
				wantIPs(t, mustAlloc(t, a, Request{Service: "s", Pool: "a", Family: DualStack}), "a", "192.0.2.0", "2001:db8::")
			},
			newCfg:  []AddressPool{mkPool(t, "b", "192.0.2.0/29", "2001:db8::/126"), mkPool(t, "a", "192.0.2.8/29", "2001:db8::4/126")},
			kind:    ChangeReallocated,
			newPool: "a", newIPs: []string{"192.0.2.8", "2001:db8::4"},
		},
		{
			name:  "restored addresses that are not the requested ones",
			pools: []AddressPool{mkPool(t, "a", "192.0.2.0/28")},
			setup: func(t *testing.T, a *Allocator) {
				res := a.Restore([]Assignment{{Service: "s", IPs: addrs("192.0.2.3"), Request: Request{IPs: addrs("192.0.2.5")}}})
				if res[0].Err != nil {
					t.Fatal(res[0].Err)
				}
			},
			newCfg:  []AddressPool{mkPool(t, "a2", "192.0.2.0/28")},
			kind:    ChangeReallocated,
			newPool: "a2", newIPs: []string{"192.0.2.5"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, tc.pools...)
			tc.setup(t, a)
			old, _ := a.Assignment("s")
			changes, err := a.SetPools(tc.newCfg)
			if err != nil {
				t.Fatal(err)
			}
			var ch *Change
			for i := range changes {
				if changes[i].Service == "s" {
					ch = &changes[i]
				}
			}
			if ch == nil {
				t.Fatalf("no change reported for s: %+v", changes)
			}
			if ch.Kind != tc.kind || len(ch.Left) != 0 || !slices.Equal(ch.Old.IPs, old.IPs) {
				t.Fatalf("change = %+v, want %s with nothing Left", ch, tc.kind)
			}
			if tc.err != nil {
				if !errors.Is(ch.Err, tc.err) {
					t.Fatalf("Err = %v, want %v", ch.Err, tc.err)
				}
				if _, ok := a.Assignment("s"); ok {
					t.Fatal("revoked service still holds addresses")
				}
				return
			}
			wantIPs(t, ch.New, tc.newPool, tc.newIPs...)
			// The next Allocate with the same request keeps it: nothing
			// moves behind the caller's back.
			again := mustAlloc(t, a, old.Request)
			wantIPs(t, again, tc.newPool, tc.newIPs...)
			checkInvariants(t, a)
		})
	}
}

// TestRestoreAddressesInTwoPools: a dual-stack item whose two addresses
// now lie in two pools is not restored. Both addresses are in pools, so
// NotInPool is empty; Err wraps ErrNotInPool and names the address that is
// in the other pool, as the RestoreResult doc says.
func TestRestoreAddressesInTwoPools(t *testing.T) {
	a := mustNew(t, mkPool(t, "v4", "192.0.2.0/24"), mkPool(t, "v6", "2001:db8::/64"))
	res := a.Restore([]Assignment{{Service: "d", IPs: addrs("2001:db8::9", "192.0.2.9"), Request: Request{Family: DualStack}}})
	r := res[0]
	if len(r.NotInPool) != 0 || len(r.Assignment.IPs) != 0 {
		t.Fatalf("result = %+v", r)
	}
	ae := wantAllocErr(t, r.Err, ErrNotInPool)
	if ae.IP != ip("2001:db8::9") || ae.Pool != "v6" || !strings.Contains(ae.Detail, `pool "v4"`) {
		t.Fatalf("error %+v does not name the address in the other pool", ae)
	}
	if _, ok := a.Assignment("d"); ok || a.Holders(ip("192.0.2.9")) != nil || a.Holders(ip("2001:db8::9")) != nil {
		t.Fatal("a service that was not restored holds addresses")
	}
}
