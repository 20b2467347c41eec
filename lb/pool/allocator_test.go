package pool

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lbkit/lbkit/lb"
)

var ip = netip.MustParseAddr

func mkPool(t testing.TB, name string, addrs ...string) AddressPool {
	t.Helper()
	rs, err := ParseRanges(addrs...)
	require.NoError(t, err)
	return AddressPool{Name: name, Ranges: rs}
}

func manual(p AddressPool) AddressPool { p.DisableAutoAssign = true; return p }
func buggy(p AddressPool) AddressPool  { p.AvoidBuggyIPs = true; return p }

func mustNew(t testing.TB, pools ...AddressPool) *Allocator {
	t.Helper()
	a, err := New(pools)
	require.NoError(t, err)
	return a
}

func mustAlloc(t testing.TB, a *Allocator, req Request) Assignment {
	t.Helper()
	got, err := a.Allocate(req)
	require.NoError(t, err, "Allocate(%+v)", req)
	return got
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = ip(s)
	}
	return out
}

// wantIPs requires got to be from pool with exactly the addresses want (in
// order). The message names them readably: testify prints netip.Addr by
// its internals.
func wantIPs(t testing.TB, got Assignment, pool string, want ...string) {
	t.Helper()
	msg := []any{"%s got %s %v, want %s %v", got.Service, got.Pool, got.IPs, pool, want}
	require.Equal(t, pool, got.Pool, msg...)
	require.Equal(t, addrs(want...), got.IPs, msg...)
}

func wantAllocErr(t testing.TB, err error, sentinel error) *AllocationError {
	t.Helper()
	var ae *AllocationError
	require.ErrorAs(t, err, &ae)
	require.ErrorIs(t, err, sentinel)
	return ae
}

func tcp(p uint16) Port { return Port{Protocol: lb.TCP, Port: p} }
func udp(p uint16) Port { return Port{Protocol: lb.UDP, Port: p} }

func TestAllocateFirstPoolWithRoomInConfigOrder(t *testing.T) {
	a := mustNew(t,
		manual(mkPool(t, "expensive", "203.0.113.0/30")),
		mkPool(t, "small", "192.0.2.10-192.0.2.11"),
		mkPool(t, "big", "198.51.100.0/24"),
	)
	wantIPs(t, mustAlloc(t, a, Request{Service: "s1"}), "small", "192.0.2.10")
	wantIPs(t, mustAlloc(t, a, Request{Service: "s2"}), "small", "192.0.2.11")
	// small is full: the next auto-assign pool is used, never the manual one.
	wantIPs(t, mustAlloc(t, a, Request{Service: "s3"}), "big", "198.51.100.0")
	// A freed address is the lowest free one again.
	_, ok := a.Release("s1")
	require.True(t, ok, "Release(s1) = false")
	wantIPs(t, mustAlloc(t, a, Request{Service: "s4"}), "small", "192.0.2.10")
	// The manual pool is used when named.
	wantIPs(t, mustAlloc(t, a, Request{Service: "s5", Pool: "expensive"}), "expensive", "203.0.113.0")
	// ... or when one of its addresses is requested.
	wantIPs(t, mustAlloc(t, a, Request{Service: "s6", IPs: addrs("203.0.113.3")}), "expensive", "203.0.113.3")
}

func TestAllocateExhausted(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.1/32"), manual(mkPool(t, "m", "198.51.100.1/32")))
	mustAlloc(t, a, Request{Service: "a"})
	_, err := a.Allocate(Request{Service: "b"})
	ae := wantAllocErr(t, err, ErrPoolExhausted)
	require.Equal(t, "b", ae.Service, "AllocationError = %+v", ae)
	require.Equal(t, IPv4, ae.Family, "AllocationError = %+v", ae)
	_, err = a.Allocate(Request{Service: "b", Family: IPv6, Pool: "p"})
	ae = wantAllocErr(t, err, ErrPoolExhausted)
	require.Equal(t, "p", ae.Pool, "AllocationError = %+v", ae)
	require.Equal(t, IPv6, ae.Family, "AllocationError = %+v", ae)
	_, ok := a.Assignment("b")
	require.False(t, ok, "failed request left an assignment")
	// No auto-assign pool at all.
	b := mustNew(t, manual(mkPool(t, "m", "198.51.100.0/24")))
	_, err = b.Allocate(Request{Service: "x"})
	wantAllocErr(t, err, ErrPoolExhausted)
	// No pool at all.
	c := mustNew(t)
	_, err = c.Allocate(Request{Service: "x"})
	wantAllocErr(t, err, ErrPoolExhausted)
}

func TestAvoidBuggyIPs(t *testing.T) {
	a := mustNew(t, buggy(mkPool(t, "p", "192.0.2.254-192.0.3.1")), mkPool(t, "q", "198.51.100.255/32"))
	wantIPs(t, mustAlloc(t, a, Request{Service: "a"}), "p", "192.0.2.254")
	wantIPs(t, mustAlloc(t, a, Request{Service: "b"}), "p", "192.0.3.1")
	// .255 and .0 are skipped: the next service goes to pool q, whose
	// .255 is fine because q does not avoid buggy IPs.
	wantIPs(t, mustAlloc(t, a, Request{Service: "c"}), "q", "198.51.100.255")
	for _, s := range []string{"192.0.2.255", "192.0.3.0"} {
		_, err := a.Allocate(Request{Service: "d", IPs: addrs(s)})
		ae := wantAllocErr(t, err, ErrNotInPool)
		assert.Contains(t, ae.Detail, "AvoidBuggyIPs", "detail does not explain AvoidBuggyIPs")
	}
	st := a.Stats()
	require.Equal(t, uint64(2), st[0].IPv4Size, "stats = %+v", st)
	require.Equal(t, 2, st[0].IPv4InUse, "stats = %+v", st)
	require.Equal(t, uint64(1), st[1].IPv4Size, "stats = %+v", st)
	// IPv6 addresses ending in 0 or ff are not affected.
	b := mustNew(t, buggy(mkPool(t, "v6", "2001:db8::ff-2001:db8::100")))
	wantIPs(t, mustAlloc(t, b, Request{Service: "a", Family: IPv6}), "v6", "2001:db8::ff")
	wantIPs(t, mustAlloc(t, b, Request{Service: "b", Family: IPv6}), "v6", "2001:db8::100")
	// A big pool with AvoidBuggyIPs: two per /24 are excluded.
	c := mustNew(t, buggy(mkPool(t, "p", "10.0.0.0/16")))
	require.Equal(t, uint64(65536-512), c.Stats()[0].IPv4Size, "size of /16 avoiding buggy IPs")
	for i := 0; i < 600; i++ {
		got := mustAlloc(t, c, Request{Service: "s" + strconv.Itoa(i)})
		b := got.IPs[0].As4()[3]
		require.True(t, b != 0 && b != 255, "handed out %v", got.IPs[0])
	}
}

func TestRequestedIPs(t *testing.T) {
	a := mustNew(t,
		mkPool(t, "a", "192.0.2.0/24", "2001:db8:a::/64"),
		mkPool(t, "b", "198.51.100.0/24", "2001:db8:b::/64"),
	)
	wantIPs(t, mustAlloc(t, a, Request{Service: "x", IPs: addrs("192.0.2.77")}), "a", "192.0.2.77")
	// The same address for another non-sharing service.
	_, err := a.Allocate(Request{Service: "y", IPs: addrs("192.0.2.77")})
	wantAllocErr(t, err, ErrAddressInUse)
	var se *SharingError
	require.ErrorAs(t, err, &se)
	require.Equal(t, RuleHolderNotShared, se.Rule, "sharing error = %+v", se)
	require.Equal(t, "x", se.Holder, "sharing error = %+v", se)
	require.Equal(t, ip("192.0.2.77"), se.IP, "sharing error on %v, want 192.0.2.77", se.IP)
	// Outside every pool.
	_, err = a.Allocate(Request{Service: "y", IPs: addrs("203.0.113.1")})
	ae := wantAllocErr(t, err, ErrNotInPool)
	require.Equal(t, ip("203.0.113.1"), ae.IP, "IP = %v, want 203.0.113.1", ae.IP)
	// In a pool, but not the requested one.
	_, err = a.Allocate(Request{Service: "y", IPs: addrs("192.0.2.5"), Pool: "b"})
	wantAllocErr(t, err, ErrNotInPool)
	_, err = a.Allocate(Request{Service: "y", IPs: addrs("192.0.2.5"), Pool: "nope"})
	wantAllocErr(t, err, ErrUnknownPool)
	_, err = a.Allocate(Request{Service: "y", Pool: "nope"})
	wantAllocErr(t, err, ErrUnknownPool)
	// Dual-stack, both requested.
	wantIPs(t, mustAlloc(t, a, Request{Service: "d", IPs: addrs("2001:db8:b::5", "198.51.100.5")}),
		"b", "198.51.100.5", "2001:db8:b::5")
	// Dual-stack across two pools is refused: one service, one pool.
	_, err = a.Allocate(Request{Service: "e", IPs: addrs("192.0.2.6", "2001:db8:b::6")})
	wantAllocErr(t, err, ErrNotInPool)
	// One requested, the other family picked from the same pool.
	wantIPs(t, mustAlloc(t, a, Request{Service: "f", Family: DualStack, IPs: addrs("2001:db8:b::9")}),
		"b", "198.51.100.0", "2001:db8:b::9")
	_, ok := a.Assignment("e")
	require.False(t, ok, "failed request left an assignment")
}

func TestDualStack(t *testing.T) {
	a := mustNew(t,
		mkPool(t, "v4only", "192.0.2.0/30"),
		mkPool(t, "v6only", "2001:db8:6::/126"),
		mkPool(t, "both", "198.51.100.0/30", "2001:db8:b::/126"),
	)
	// Only "both" has room for both families.
	wantIPs(t, mustAlloc(t, a, Request{Service: "d", Family: DualStack}), "both", "198.51.100.0", "2001:db8:b::")
	wantIPs(t, mustAlloc(t, a, Request{Service: "v6", Family: IPv6}), "v6only", "2001:db8:6::")
	wantIPs(t, mustAlloc(t, a, Request{Service: "v4"}), "v4only", "192.0.2.0")
	// Exhaust "both"'s IPv6 side: the next dual-stack service has nowhere to go.
	for i := 1; i < 4; i++ {
		mustAlloc(t, a, Request{Service: "six" + strconv.Itoa(i), Family: IPv6, Pool: "both"})
	}
	_, err := a.Allocate(Request{Service: "d2", Family: DualStack})
	ae := wantAllocErr(t, err, ErrPoolExhausted)
	require.NotZero(t, ae.Family&IPv6, "family = %v, want IPv6 reported missing", ae.Family)
	// IPv4 of "both" was not consumed by the failed attempt.
	st := a.Stats()[2]
	require.Equal(t, 1, st.IPv4InUse, "stats = %+v", st)
	require.Equal(t, 4, st.IPv6InUse, "stats = %+v", st)
}

func TestReleaseAndReallocate(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	x := mustAlloc(t, a, Request{Service: "x", SharingKey: "k", Ports: []Port{tcp(80)}})
	y := mustAlloc(t, a, Request{Service: "y", SharingKey: "k", Ports: []Port{tcp(443)}})
	require.Equal(t, x.IPs[0], y.IPs[0], "same key, different ports: not co-located: %v %v", x.IPs, y.IPs)
	require.Equal(t, []string{"x", "y"}, a.Holders(x.IPs[0]), "Holders")
	rel, ok := a.Release("x")
	require.True(t, ok, "Release(x) = false")
	require.Equal(t, "x", rel.Service, "Release = %+v", rel)
	require.Equal(t, x.IPs[0], rel.IPs[0], "Release = %+v, want %v", rel, x.IPs[0])
	// Still held by y, so a non-sharing service gets the next address.
	wantIPs(t, mustAlloc(t, a, Request{Service: "z"}), "p", "192.0.2.1")
	_, ok = a.Release("x")
	require.False(t, ok, "second Release(x) = true")
	a.Release("y")
	wantIPs(t, mustAlloc(t, a, Request{Service: "w"}), "p", "192.0.2.0")
	require.Equal(t, 2, a.Stats()[0].IPv4InUse, "in use")
}

func TestAllocateExistingService(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"), manual(mkPool(t, "m", "198.51.100.0/29")))
	first := mustAlloc(t, a, Request{Service: "s", SharingKey: "k", Ports: []Port{tcp(80)}})
	// Same request again: same address (idempotent).
	wantIPs(t, mustAlloc(t, a, Request{Service: "s", SharingKey: "k", Ports: []Port{tcp(80)}}), "p", first.IPs[0].String())
	mustAlloc(t, a, Request{Service: "t", SharingKey: "k", Ports: []Port{tcp(443)}})
	// s changes its ports to collide with t: refused, s keeps its old ports.
	_, err := a.Allocate(Request{Service: "s", SharingKey: "k", Ports: []Port{tcp(443)}})
	var se *SharingError
	require.ErrorAs(t, err, &se)
	require.Equal(t, RulePortCollision, se.Rule, "err = %v", err)
	require.Equal(t, tcp(443), se.Port, "err = %v", err)
	require.Equal(t, "t", se.Holder, "err = %v", err)
	got, _ := a.Assignment("s")
	require.Equal(t, []Port{tcp(80)}, got.Request.Ports, "ports after refused update")
	// s asks for a specific other address: it moves, and t stays.
	wantIPs(t, mustAlloc(t, a, Request{Service: "s", IPs: addrs("192.0.2.5")}), "p", "192.0.2.5")
	wantIPs(t, mustAlloc(t, a, Request{Service: "t", SharingKey: "k", Ports: []Port{tcp(443)}}), "p", "192.0.2.0")
	// s asks for another pool: moves there.
	wantIPs(t, mustAlloc(t, a, Request{Service: "s", Pool: "m"}), "m", "198.51.100.0")
	require.Nil(t, a.Holders(ip("192.0.2.5")), "old address still held")
	// A move that fails keeps the old assignment.
	_, err = a.Allocate(Request{Service: "s", IPs: addrs("192.0.2.0")}) // t holds it, no key
	wantAllocErr(t, err, ErrAddressInUse)
	wantIPs(t, mustAllocOK(t, a, "s"), "m", "198.51.100.0")
	// Growing to dual-stack keeps the IPv4 address when the pool has IPv6.
	b := mustNew(t, mkPool(t, "p", "192.0.2.0/29", "2001:db8::/125"))
	mustAlloc(t, b, Request{Service: "filler"})
	one := mustAlloc(t, b, Request{Service: "s"})
	b.Release("filler")
	wantIPs(t, mustAlloc(t, b, Request{Service: "s", Family: DualStack}), "p", one.IPs[0].String(), "2001:db8::")
}

func mustAllocOK(t testing.TB, a *Allocator, svc string) Assignment {
	t.Helper()
	got, ok := a.Assignment(svc)
	require.True(t, ok, "%s has no assignment", svc)
	return got
}

func TestConfigValidation(t *testing.T) {
	r := func(s string) Range {
		x, err := ParseRange(s)
		require.NoError(t, err)
		return x
	}
	cases := []struct {
		name  string
		pools []AddressPool
		field string
		want  string
	}{
		{"empty name", []AddressPool{{Ranges: []Range{r("192.0.2.0/24")}}}, "pools[0].name", "empty"},
		{"dup name", []AddressPool{{Name: "a", Ranges: []Range{r("192.0.2.0/25")}}, {Name: "a", Ranges: []Range{r("192.0.2.128/25")}}}, "pools[1].name", "duplicate"},
		{"no ranges", []AddressPool{{Name: "a"}}, "pools[0].ranges", "at least one"},
		{"bad range", []AddressPool{{Name: "a", Ranges: []Range{{First: ip("192.0.2.9"), Last: ip("192.0.2.1")}}}}, "pools[0].ranges[0]", "after end"},
		{"mixed family", []AddressPool{{Name: "a", Ranges: []Range{{First: ip("192.0.2.9"), Last: ip("2001:db8::1")}}}}, "pools[0].ranges[0]", "different address families"},
		{"zero range", []AddressPool{{Name: "a", Ranges: []Range{{}}}}, "pools[0].ranges[0]", "missing"},
		{"overlap across pools", []AddressPool{{Name: "a", Ranges: []Range{r("192.0.2.0/24")}}, {Name: "b", Ranges: []Range{r("198.51.100.0/24"), r("192.0.2.200-192.0.3.5")}}}, "pools[1].ranges[1]", "overlaps 192.0.2.0/24 of pool \"a\""},
		{"overlap in pool", []AddressPool{{Name: "a", Ranges: []Range{r("2001:db8::/64"), r("2001:db8::5")}}}, "pools[0].ranges[1]", "overlaps"},
		{"contained", []AddressPool{{Name: "a", Ranges: []Range{r("10.0.0.0/8")}}, {Name: "b", Ranges: []Range{r("10.1.0.0/16")}}}, "pools[1].ranges[0]", "overlaps 10.0.0.0/8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.pools)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve, "New error, want *ValidationError")
			require.ErrorIs(t, err, ErrInvalid)
			require.Equal(t, c.field, ve.Field, "field of %q", err)
			require.ErrorContains(t, err, c.want)
			// SetPools rejects it too and changes nothing.
			a := mustNew(t, mkPool(t, "ok", "203.0.113.0/24"))
			mustAlloc(t, a, Request{Service: "s"})
			ch, err := a.SetPools(c.pools)
			require.Error(t, err, "SetPools = %v, %v", ch, err)
			require.Nil(t, ch, "SetPools = %v, %v", ch, err)
			p := a.Pools()
			require.Len(t, p, 1, "pools changed: %+v", p)
			require.Equal(t, "ok", p[0].Name, "pools changed: %+v", p)
			wantIPs(t, mustAllocOK(t, a, "s"), "ok", "203.0.113.0")
		})
	}
	// Adjacent, non-overlapping ranges are fine and allocate straight through.
	a := mustNew(t, AddressPool{Name: "a", Ranges: []Range{r("192.0.2.0/31"), r("192.0.2.2/31")}})
	for _, want := range []string{"192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		wantIPs(t, mustAlloc(t, a, Request{Service: want}), "a", want)
	}
}

func TestRequestValidation(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24", "2001:db8::/64"))
	cases := []struct {
		req   Request
		field string
	}{
		{Request{}, "request.service"},
		{Request{Service: "s", Family: 7}, "request.family"},
		{Request{Service: "s", IPs: []netip.Addr{{}}}, "request.ips[0]"},
		{Request{Service: "s", IPs: addrs("192.0.2.1", "192.0.2.2")}, "request.ips[1]"},
		{Request{Service: "s", IPs: addrs("fe80::1%eth0")}, "request.ips[0]"},
		{Request{Service: "s", IPs: addrs("::ffff:192.0.2.1")}, "request.ips[0]"},
		{Request{Service: "s", Family: IPv4, IPs: addrs("2001:db8::1")}, "request.ips"},
		{Request{Service: "s", Ports: []Port{{Protocol: "ICMP", Port: 1}}}, "request.ports[0].protocol"},
		{Request{Service: "s", Ports: []Port{{Protocol: lb.TCP}}}, "request.ports[0].port"},
		{Request{Service: "s", Ports: []Port{tcp(80), udp(80), tcp(80)}}, "request.ports[2]"},
		{Request{Service: "s", TrafficPolicy: "Nearby"}, "request.trafficPolicy"},
	}
	for _, c := range cases {
		_, err := a.Allocate(c.req)
		var ve *ValidationError
		if assert.ErrorAs(t, err, &ve, "Allocate(%+v), want *ValidationError on %s", c.req, c.field) {
			assert.Equal(t, c.field, ve.Field, "Allocate(%+v) = %v", c.req, err)
		}
		assert.ErrorIs(t, err, ErrInvalid, "Allocate(%+v)", c.req)
	}
	require.Empty(t, a.Assignments(), "invalid requests left assignments")
}

func TestRequestIsCopied(t *testing.T) {
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/24"))
	ports := []Port{tcp(80)}
	ips := addrs("192.0.2.9")
	got := mustAlloc(t, a, Request{Service: "s", IPs: ips, Ports: ports, SharingKey: "k"})
	ports[0] = tcp(443)
	ips[0] = ip("192.0.2.10")
	got.IPs[0] = ip("192.0.2.11")
	now := mustAllocOK(t, a, "s")
	msg := []any{"allocator state aliased caller slices: %+v", now}
	require.Equal(t, ip("192.0.2.9"), now.IPs[0], msg...)
	require.Equal(t, tcp(80), now.Request.Ports[0], msg...)
	require.Equal(t, ip("192.0.2.9"), now.Request.IPs[0], msg...)
	require.Equal(t, lb.TrafficPolicyCluster, now.Request.TrafficPolicy, "request not normalized: %+v", now.Request)
	require.Equal(t, IPv4, now.Request.Family, "request not normalized: %+v", now.Request)
}

func TestPoolOfAndStats(t *testing.T) {
	a := mustNew(t, buggy(mkPool(t, "p", "192.0.2.0/24")), mkPool(t, "q", "2001:db8::/64"))
	n, ok := a.PoolOf(ip("192.0.2.7"))
	require.True(t, ok, "PoolOf(192.0.2.7) found nothing")
	require.Equal(t, "p", n, "PoolOf(192.0.2.7)")
	_, ok = a.PoolOf(ip("192.0.2.255"))
	require.False(t, ok, "buggy address reported in pool")
	n, ok = a.PoolOf(ip("2001:db8::ffff"))
	require.True(t, ok, "PoolOf(2001:db8::ffff) found nothing")
	require.Equal(t, "q", n, "PoolOf(2001:db8::ffff)")
	st := a.Stats()
	require.Equal(t, uint64(254), st[0].IPv4Size, "stats = %+v", st)
	require.Equal(t, ^uint64(0), st[1].IPv6Size, "stats = %+v", st)
	require.True(t, st[0].AvoidBuggyIPs, "stats = %+v", st)
	require.True(t, st[1].AutoAssign, "stats = %+v", st)
}

func TestLoggerIsOptional(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New([]AddressPool{mkPool(t, "p", "192.0.2.0/31")}, WithLogger(l))
	require.NoError(t, err)
	mustAlloc(t, a, Request{Service: "s"})
	a.Release("s")
	mustAlloc(t, a, Request{Service: "t"})
	_, err = a.SetPools(nil)
	require.NoError(t, err)
	out := buf.String()
	for _, want := range []string{"msg=allocated service=s", "msg=released service=s", "msg=\"pool change revoked addresses\" service=t"} {
		assert.Contains(t, out, want, "log lacks %q", want)
	}
	// WithLogger(nil) keeps the silent default instead of panicking.
	b, _ := New(nil, WithLogger(nil))
	_, err = b.Allocate(Request{Service: "x"})
	require.ErrorIs(t, err, ErrPoolExhausted)
}

// TestEmptyProtocolIsTCP: an empty Port.Protocol means TCP, as lb.Protocol's
// OrTCP and Kubernetes default it, in requests and in CanShare.
func TestEmptyProtocolIsTCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		holder []Port
		req    []Port
		rule   SharingRule // "" = may share
	}{
		{"empty collides with TCP", []Port{{Port: 80}}, []Port{tcp(80)}, RulePortCollision},
		{"TCP collides with empty", []Port{tcp(80)}, []Port{{Port: 80}}, RulePortCollision},
		{"empty collides with empty", []Port{{Port: 80}}, []Port{{Port: 80}}, RulePortCollision},
		{"empty does not collide with UDP", []Port{{Port: 53}}, []Port{udp(53)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Request{Service: "h", SharingKey: "k", Ports: tc.holder}
			r := Request{Service: "r", SharingKey: "k", Ports: tc.req}
			err := CanShare(h, r)
			require.Equal(t, tc.rule, ruleOf(err), "CanShare: rule (%v)", err)
			var se *SharingError
			if errors.As(err, &se) {
				assert.Equal(t, tcp(80), se.Port, "SharingError.Port")
			}
			checkPair(t, h, r, tc.rule)
		})
	}
	a := mustNew(t, mkPool(t, "p", "192.0.2.0/29"))
	got := mustAlloc(t, a, Request{Service: "s", Ports: []Port{{Port: 443}, {Port: 80}}})
	assert.Equal(t, []Port{tcp(80), tcp(443)}, got.Request.Ports, "stored ports")
	_, err := a.Allocate(Request{Service: "d", Ports: []Port{{Port: 80}, tcp(80)}})
	var ve *ValidationError
	if assert.ErrorAs(t, err, &ve, "duplicate of an empty-protocol port") {
		assert.Equal(t, "request.ports[1]", ve.Field, "duplicate of an empty-protocol port: %v", err)
	}
}

func TestFamilyConversions(t *testing.T) {
	for _, tc := range []struct {
		in   []lb.IPFamily
		want Family
		back []lb.IPFamily
	}{
		{nil, 0, nil},
		{[]lb.IPFamily{lb.IPv4}, IPv4, []lb.IPFamily{lb.IPv4}},
		{[]lb.IPFamily{lb.IPv6}, IPv6, []lb.IPFamily{lb.IPv6}},
		{[]lb.IPFamily{lb.IPv6, lb.IPv4}, DualStack, []lb.IPFamily{lb.IPv4, lb.IPv6}},
		{[]lb.IPFamily{"IPv5", lb.IPv4, lb.IPv4}, IPv4, []lb.IPFamily{lb.IPv4}},
	} {
		got := FamilyFromIPFamilies(tc.in...)
		if got != tc.want || !slices.Equal(got.IPFamilies(), tc.back) {
			t.Errorf("FamilyFromIPFamilies(%v) = %v (%v), want %v (%v)", tc.in, got, got.IPFamilies(), tc.want, tc.back)
		}
	}
	s := &lb.Service{ClusterIPs: addrs("2001:db8::1", "198.51.100.1")}
	assert.Equal(t, DualStack, FamilyFromIPFamilies(s.Families()...), "a dual-stack lb.Service is not DualStack")
}
