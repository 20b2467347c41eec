package pool

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	require.NoError(t, err)
	byName := map[string]Change{}
	for _, c := range changes {
		byName[c.Service] = c
	}
	require.Len(t, changes, 5, "changes = %+v", changes)
	require.True(t, slices.IsSortedFunc(changes, func(x, y Change) int { return strings.Compare(x.Service, y.Service) }), "changes = %+v", changes)
	// c asked for 192.0.2.6 specifically: it cannot be re-allocated.
	c := byName["c"]
	require.Equal(t, ChangeRevoked, c.Kind, "c = %+v", c)
	require.Equal(t, addrs("192.0.2.6"), c.Left, "c = %+v", c)
	require.ErrorIs(t, c.Err, ErrNotInPool, "c = %+v", c)
	_, ok := a.Assignment("c")
	require.False(t, ok, "revoked service still has an assignment")
	// d keeps its address, in the renamed pool: its request names none.
	d := byName["d"]
	require.Equal(t, ChangeRepooled, d.Kind, "d = %+v", d)
	require.Equal(t, "q", d.Old.Pool, "d = %+v", d)
	require.Equal(t, "r", d.New.Pool, "d = %+v", d)
	require.Equal(t, ip("198.51.100.0"), d.New.IPs[0], "d = %+v", d)
	require.Empty(t, d.Left, "d = %+v", d)
	// f's 192.0.2.2 left; p is full (.0, .1, .7 held), so f goes to r.
	f := byName["f"]
	require.Equal(t, ChangeReallocated, f.Kind, "f = %+v", f)
	require.Equal(t, addrs("192.0.2.2"), f.Left, "f = %+v", f)
	wantIPs(t, f.New, "r", "198.51.100.1")
	// g asked for pool p, which is full now: revoked, with the reason.
	g := byName["g"]
	require.Equal(t, ChangeRevoked, g.Kind, "g = %+v", g)
	require.Equal(t, addrs("192.0.2.3"), g.Left, "g = %+v", g)
	require.ErrorIs(t, g.Err, ErrPoolExhausted, "g = %+v", g)
	// h asked for pool q, which is gone (renamed r): its request cannot be
	// met any more, so it is revoked, as MetalLB clears a service whose
	// address-pool annotation names no pool.
	h := byName["h"]
	require.Equal(t, ChangeRevoked, h.Kind, "h = %+v", h)
	require.Empty(t, h.Left, "h = %+v", h)
	require.ErrorIs(t, h.Err, ErrUnknownPool, "h = %+v", h)
	// Unaffected services are not reported and keep their addresses.
	wantIPs(t, mustAllocOK(t, a, "a"), "p", "192.0.2.0")
	wantIPs(t, mustAllocOK(t, a, "e"), "p", "192.0.2.7")
	st := a.Stats()
	require.Equal(t, uint64(3), st[0].IPv4Size, "stats = %+v", st)
	require.Equal(t, 3, st[0].IPv4InUse, "stats = %+v", st)
	require.Equal(t, 2, st[1].IPv4InUse, "stats = %+v", st)
}

func TestSetPoolsRevokesWhenNothingLeft(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/30"))
	mustAlloc(t, a, Request{Service: "a"})
	mustAlloc(t, a, Request{Service: "b"})
	changes, err := a.SetPools(nil)
	require.NoError(t, err)
	require.Len(t, changes, 2, "changes = %+v", changes)
	for _, c := range changes {
		require.Equal(t, ChangeRevoked, c.Kind, "change = %+v", c)
		require.Len(t, c.Left, 1, "change = %+v", c)
		require.Equal(t, c.Old.IPs[0], c.Left[0], "change = %+v", c)
		require.ErrorIs(t, c.Err, ErrPoolExhausted, "change = %+v", c)
	}
	require.Empty(t, a.Assignments(), "assignments survived")
}

func TestSetPoolsAvoidBuggyIPsTurnedOn(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24"))
	mustAlloc(t, a, Request{Service: "zero"}) // 192.0.2.0
	mustAlloc(t, a, Request{Service: "one"})  // 192.0.2.1
	changes, err := a.SetPools([]AddressPool{buggy(mkPool(t, "p", "192.0.2.0/24"))})
	require.NoError(t, err)
	require.Len(t, changes, 1, "changes = %+v", changes)
	require.Equal(t, "zero", changes[0].Service, "changes = %+v", changes)
	require.Equal(t, ChangeReallocated, changes[0].Kind, "changes = %+v", changes)
	require.Equal(t, addrs("192.0.2.0"), changes[0].Left, "changes = %+v", changes)
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
	require.NoError(t, err)
	require.Len(t, changes, 1, "changes = %+v", changes)
	require.Equal(t, ChangeReallocated, changes[0].Kind, "changes = %+v", changes)
	require.Equal(t, addrs("2001:db8::"), changes[0].Left, "changes = %+v", changes)
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
	require.NoError(t, err)
	require.Len(t, changes, 1, "changes = %+v", changes)
	require.Equal(t, ChangeRevoked, changes[0].Kind, "changes = %+v", changes)
	require.Empty(t, changes[0].Left, "changes = %+v", changes)
	require.ErrorIs(t, changes[0].Err, ErrPoolExhausted, "changes = %+v", changes)
}

func TestSetPoolsKeepsSharedAddresses(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	x := mustAlloc(t, a, Request{Service: "x", SharingKey: "k", Ports: []Port{tcp(80)}})
	mustAlloc(t, a, Request{Service: "y", SharingKey: "k", Ports: []Port{tcp(443)}})
	changes, err := a.SetPools([]AddressPool{mkPool(t, "p", "192.0.2.0/28")})
	require.NoError(t, err)
	require.Empty(t, changes, "SetPools changes")
	require.Equal(t, []string{"x", "y"}, a.Holders(x.IPs[0]), "holders")
	// The sharing index survived the rebuild: a third service joins.
	z := mustAlloc(t, a, Request{Service: "z", SharingKey: "k", Ports: []Port{tcp(8080)}})
	require.Equal(t, x.IPs[0], z.IPs[0], "z on %v, want %v", z.IPs, x.IPs[0])
	st := a.Stats()[0]
	require.Equal(t, 1, st.IPv4InUse, "stats = %+v", st)
	require.Equal(t, uint64(16), st.IPv4Size, "stats = %+v", st)
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
		require.NoError(t, r.Err, "restore %s", r.Service)
		require.Equal(t, saved[i].Service, r.Service, "restore %s", r.Service)
		moved := []any{"restore moved %s: %v -> %v", r.Service, saved[i].IPs, r.Assignment.IPs}
		require.Equal(t, saved[i].IPs, r.Assignment.IPs, moved...)
		require.Equal(t, saved[i].Pool, r.Assignment.Pool, moved...)
	}
	got := after.Assignments()
	require.True(t, equalAssignments(got, saved), "after restore:\n%+v\nbefore:\n%+v", got, saved)
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
	require.Equal(t, addrs("203.0.113.9"), res[0].NotInPool, "gone = %+v", res[0])
	require.ErrorIs(t, res[0].Err, ErrNotInPool, "gone = %+v", res[0])
	require.Equal(t, addrs("2001:db8:ffff::9"), res[1].NotInPool, "half = %+v", res[1])
	require.ErrorIs(t, res[1].Err, ErrNotInPool, "half = %+v", res[1])
	require.NoError(t, res[2].Err, "ok = %+v", res[2])
	// Neither failed service holds anything, and the in-pool half of "half"
	// is free again.
	got := a.Assignments()
	require.Len(t, got, 1, "assignments = %+v", got)
	require.Equal(t, "ok", got[0].Service, "assignments = %+v", got)
	require.Nil(t, a.Holders(ip("192.0.2.9")), "192.0.2.9 held")
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
	for _, i := range []int{0, 2, 3} {
		require.NoError(t, res[i].Err, "results = %+v", res)
	}
	require.Equal(t, RuleHolderNotShared, ruleOf(res[1].Err), "young = %v", res[1].Err)
	require.Equal(t, RulePortCollision, ruleOf(res[4].Err), "s3 = %v", res[4].Err)
	require.ErrorIs(t, res[5].Err, ErrNotInPool, "bug = %+v", res[5])
	require.Equal(t, addrs("192.0.2.255"), res[5].NotInPool, "bug = %+v", res[5])
	for _, i := range []int{6, 7, 8} {
		require.ErrorIs(t, res[i].Err, ErrInvalid, res[i].Service)
	}
	require.Equal(t, []string{"s1", "s2"}, a.Holders(ip("192.0.2.6")), "holders")
}

func TestRestoreOverExistingAssignment(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24"))
	mustAlloc(t, a, Request{Service: "s"}) // 192.0.2.0
	res := a.Restore([]Assignment{{Service: "s", IPs: addrs("192.0.2.50")}})
	require.NoError(t, res[0].Err)
	wantIPs(t, mustAllocOK(t, a, "s"), "p", "192.0.2.50")
	require.Nil(t, a.Holders(ip("192.0.2.0")), "old address still held")
	// Restoring the same addresses again is a no-op.
	res = a.Restore([]Assignment{{Service: "s", IPs: addrs("192.0.2.50")}})
	require.NoError(t, res[0].Err)
	require.Equal(t, 1, a.Stats()[0].IPv4InUse, "in use")
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
				require.NoError(t, res[0].Err)
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
			require.NoError(t, err)
			var ch *Change
			for i := range changes {
				if changes[i].Service == "s" {
					ch = &changes[i]
				}
			}
			require.NotNil(t, ch, "no change reported for s: %+v", changes)
			msg := []any{"change = %+v, want %s with nothing Left", ch, tc.kind}
			require.Equal(t, tc.kind, ch.Kind, msg...)
			require.Empty(t, ch.Left, msg...)
			require.Equal(t, old.IPs, ch.Old.IPs, msg...)
			if tc.err != nil {
				require.ErrorIs(t, ch.Err, tc.err)
				_, ok := a.Assignment("s")
				require.False(t, ok, "revoked service still holds addresses")
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
	require.Empty(t, r.NotInPool, "result = %+v", r)
	require.Empty(t, r.Assignment.IPs, "result = %+v", r)
	ae := wantAllocErr(t, r.Err, ErrNotInPool)
	msg := []any{"error %+v does not name the address in the other pool", ae}
	require.Equal(t, ip("2001:db8::9"), ae.IP, msg...)
	require.Equal(t, "v6", ae.Pool, msg...)
	require.Contains(t, ae.Detail, `pool "v4"`, msg...)
	_, ok := a.Assignment("d")
	require.False(t, ok, "a service that was not restored has an assignment")
	require.Nil(t, a.Holders(ip("192.0.2.9")), "a service that was not restored holds 192.0.2.9")
	require.Nil(t, a.Holders(ip("2001:db8::9")), "a service that was not restored holds 2001:db8::9")
}

// TestSetPoolsAfterRestoreKeepsIPv6AndDualStack: a restored item whose
// request leaves Family zero wants the families of its restored addresses,
// not IPv4, so a SetPools with an unchanged configuration right after the
// Restore moves nobody.
func TestSetPoolsAfterRestoreKeepsIPv6AndDualStack(t *testing.T) {
	pools := []AddressPool{mkPool(t, "p", "192.0.2.0/30", "2001:db8::/126")}
	a := mustNew(t, pools...)
	res := a.Restore([]Assignment{
		{Service: "v6", IPs: addrs("2001:db8::2")},
		{Service: "dual", IPs: addrs("192.0.2.2", "2001:db8::3")},
	})
	for _, r := range res {
		require.NoError(t, r.Err, "restore %s", r.Service)
	}
	changes, err := a.SetPools(pools)
	require.NoError(t, err)
	require.Empty(t, changes, "SetPools with the same pools changed %+v", changes)
	require.Equal(t, IPv6, res[0].Assignment.Request.Family, "v6 = %+v", res[0])
	require.Equal(t, DualStack, res[1].Assignment.Request.Family, "dual = %+v", res[1])
	v6, _ := a.Assignment("v6")
	wantIPs(t, v6, "p", "2001:db8::2")
	dual, _ := a.Assignment("dual")
	wantIPs(t, dual, "p", "192.0.2.2", "2001:db8::3")
	// An Allocate with the stored request keeps them too.
	wantIPs(t, mustAlloc(t, a, v6.Request), "p", "2001:db8::2")
	wantIPs(t, mustAlloc(t, a, dual.Request), "p", "192.0.2.2", "2001:db8::3")
	checkInvariants(t, a)
}

// TestSetPoolsEvictedServicesKeepTheirEligibleAddresses: services
// re-allocated at a configuration change are handled in name order, but
// one never takes an address that another re-allocated service still holds
// and may keep, as the SetPools doc promises.
func TestSetPoolsEvictedServicesKeepTheirEligibleAddresses(t *testing.T) {
	a := mustNew(t,
		mkPool(t, "old", "203.0.113.0/32"),
		mkPool(t, "p", "192.0.2.0/30", "2001:db8::/126"),
	)
	wantIPs(t, mustAlloc(t, a, Request{Service: "a"}), "old", "203.0.113.0")
	wantIPs(t, mustAlloc(t, a, Request{Service: "b", Family: DualStack}), "p", "192.0.2.0", "2001:db8::")
	// "old" goes away (a is re-allocated); b's IPv6 address moves to pool q
	// (b is re-allocated too) but its IPv4 address stays eligible in p.
	changes, err := a.SetPools([]AddressPool{
		mkPool(t, "p", "192.0.2.0/30", "2001:db8:1::/126"),
		mkPool(t, "q", "2001:db8::/126"),
	})
	require.NoError(t, err)
	require.Len(t, changes, 2, "changes = %+v", changes)
	for _, ch := range changes {
		require.Equal(t, ChangeReallocated, ch.Kind, "changes = %+v", changes)
	}
	wantIPs(t, changes[0].New, "p", "192.0.2.1")
	wantIPs(t, changes[1].New, "p", "192.0.2.0", "2001:db8:1::")
	checkInvariants(t, a)
}

// TestSetPoolsReservedAddressAndARequestForIt: an address that one
// re-allocated service may keep is not handed to another re-allocated
// service that requests it (after a Restore gave that one other addresses)
// when the keeper keeps it, as an Allocate would refuse the request; when
// the keeper does not use it after all, the requester gets it on its second
// try.
func TestSetPoolsReservedAddressAndARequestForIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		z    Assignment // restored into p, kept address 192.0.2.5
		zIPs []string   // after SetPools
	}{
		{
			name: "the keeper keeps it",
			z:    Assignment{Service: "z", IPs: addrs("192.0.2.5", "2001:db8::1"), Request: Request{Family: DualStack}},
			zIPs: []string{"192.0.2.5", "2001:db8:1::"},
		},
		{
			name: "the keeper requests another address",
			z:    Assignment{Service: "z", IPs: addrs("192.0.2.5"), Request: Request{IPs: addrs("192.0.2.6")}},
			zIPs: []string{"192.0.2.6"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, mkPool(t, "old", "203.0.113.0/31"), mkPool(t, "p", "192.0.2.0/29", "2001:db8::/126"))
			res := a.Restore([]Assignment{
				tc.z,
				{Service: "a", IPs: addrs("203.0.113.1"), Request: Request{IPs: addrs("192.0.2.5")}},
			})
			for _, r := range res {
				require.NoError(t, r.Err, "restore %s", r.Service)
			}
			// a's address leaves the pools; z's IPv6 address does too, or
			// z's request does not fit what it holds: both are re-allocated.
			changes, err := a.SetPools([]AddressPool{mkPool(t, "p", "192.0.2.0/29", "2001:db8:1::/126")})
			require.NoError(t, err)
			require.Len(t, changes, 2, "changes = %+v", changes)
			require.Equal(t, "a", changes[0].Service, "changes = %+v", changes)
			require.Equal(t, ChangeReallocated, changes[1].Kind, "changes = %+v", changes)
			wantIPs(t, changes[1].New, "p", tc.zIPs...)
			if tc.zIPs[0] == "192.0.2.5" {
				require.Equal(t, ChangeRevoked, changes[0].Kind, "changes = %+v", changes)
				require.ErrorIs(t, changes[0].Err, ErrAddressInUse, "changes = %+v", changes)
			} else {
				require.Equal(t, ChangeReallocated, changes[0].Kind, "changes = %+v", changes)
				wantIPs(t, changes[0].New, "p", "192.0.2.5")
			}
			checkInvariants(t, a)
		})
	}
}
