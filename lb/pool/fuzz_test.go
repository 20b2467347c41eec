package pool

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lbkit/lbkit/lb"
)

// FuzzAllocator validates fuzzed pool configurations and drives the
// allocator with a fuzzed sequence of requests, releases, restores and pool
// changes. Every error must be typed, every success must honour its
// request, and the state must stay consistent after every step.
func FuzzAllocator(f *testing.F) {
	f.Add("192.0.2.0/29", "2001:db8::/126", "198.51.100.250-198.51.101.5", true, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add("192.0.2.0/30", "192.0.2.2-192.0.2.9", "", false, []byte{1, 1, 1, 1})
	f.Add("10.0.0.0/8", "::/0", "203.0.113.7", false, []byte{9, 200, 31, 7, 3, 3, 3, 90, 91, 92})
	f.Fuzz(func(t *testing.T, r1, r2, r3 string, avoid bool, ops []byte) {
		if len(ops) > 300 {
			return
		}
		var cfgs [2][]AddressPool
		for i, s := range []string{r1, r2, r3} {
			r, err := ParseRange(s)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseRange: untyped %v", err)
				}
				continue
			}
			p := AddressPool{Name: string(rune('a' + i)), Ranges: []Range{r}, AvoidBuggyIPs: avoid && i == 1, DisableAutoAssign: i == 2}
			cfgs[0] = append(cfgs[0], p)
			if i != 0 { // the second configuration drops pool a
				cfgs[1] = append(cfgs[1], p)
			}
		}
		a, err := New(cfgs[0])
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("New: untyped %v", err)
			}
			return // overlapping ranges: a valid rejection
		}
		var candidates []netip.Addr
		for _, p := range cfgs[0] {
			r := p.Ranges[0]
			candidates = append(candidates, r.First, r.Last, r.First.Next(), r.Last.Prev())
		}
		candidates = append(candidates, netip.MustParseAddr("203.0.113.200"))
		for i := 0; i+3 < len(ops); i += 4 {
			op, x, y, z := ops[i], ops[i+1], ops[i+2], ops[i+3]
			svc := "s" + string(rune('0'+x%6))
			req := Request{
				Service:           svc,
				Family:            Family(y % 4),
				Pool:              []string{"", "", "a", "b", "c", "zz"}[z%6],
				SharingKey:        []string{"", "k", "j"}[x%3],
				TrafficPolicy:     []lb.TrafficPolicy{"", lb.TrafficPolicyCluster, lb.TrafficPolicyLocal}[y%3],
				EndpointsSelector: []string{"", "sel"}[z%2],
				Ports:             []Port{{lb.TCP, uint16(80 + y%3)}},
			}
			if z&8 != 0 {
				req.IPs = []netip.Addr{candidates[int(y)%len(candidates)]}
			}
			switch op % 5 {
			case 0, 1:
				got, err := a.Allocate(req)
				if err != nil {
					if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrPoolExhausted) && !errors.Is(err, ErrNotInPool) &&
						!errors.Is(err, ErrUnknownPool) && !errors.Is(err, ErrAddressInUse) {
						t.Fatalf("Allocate(%+v): untyped %v", req, err)
					}
					break
				}
				want := req.Family
				if want == 0 {
					want = familiesOf(req.IPs)
					if want == 0 {
						want = IPv4
					}
				}
				if familiesOf(got.IPs) != want || len(got.IPs) != len(slices.Compact(slices.Clone(got.IPs))) {
					t.Fatalf("Allocate(%+v) = %v", req, got.IPs)
				}
				for _, ip := range req.IPs {
					if !slices.Contains(got.IPs, ip) {
						t.Fatalf("Allocate(%+v) = %v, requested address missing", req, got.IPs)
					}
				}
				if req.Pool != "" && got.Pool != req.Pool {
					t.Fatalf("Allocate(%+v) from pool %q", req, got.Pool)
				}
			case 2:
				a.Release(svc)
			case 3:
				cur, ok := a.Assignment(svc)
				if !ok {
					cur = Assignment{Service: svc, IPs: req.IPs, Request: req}
				}
				res := a.Restore([]Assignment{cur})
				if ok && res[0].Err != nil {
					t.Fatalf("restoring the current assignment %+v failed: %v", cur, res[0].Err)
				}
			case 4:
				before := a.Assignments()
				changes, err := a.SetPools(cfgs[x%2])
				require.NoError(t, err, "SetPools of a subset of a valid configuration")
				for _, c := range changes {
					require.True(t, slices.ContainsFunc(before, func(b Assignment) bool { return b.Service == c.Service }),
						"change for unknown service %+v", c)
					require.Equal(t, c.Kind == ChangeRevoked, c.Err != nil, "change %+v: revoked iff it has an error", c)
				}
				// After a configuration change every service's addresses
				// satisfy its own request: the next Allocate moves nobody.
				a.mu.Lock()
				for name, sv := range a.st.svcs {
					if !sv.fits(&sv.req) {
						a.mu.Unlock()
						t.Fatalf("after SetPools %s holds %v in %q, which its request %+v does not allow", name, sv.ips, sv.pool.cfg.Name, sv.req)
					}
				}
				a.mu.Unlock()
			}
			checkInvariants(t, a)
		}
	})
}
