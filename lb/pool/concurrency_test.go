package pool

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lbkit/lbkit/lb"
)

// checkInvariants inspects the allocator's whole state under its lock. It
// uses require, so call it from the test goroutine only.
func checkInvariants(t testing.TB, a *Allocator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	held := map[netip.Addr][]string{}
	for name, sv := range s.svcs {
		require.Equal(t, name, sv.req.Service, "service %q stored under %q", sv.req.Service, name)
		require.NotEmpty(t, sv.ips, "%s holds %v", name, sv.ips)
		require.LessOrEqual(t, len(sv.ips), 2, "%s holds %v", name, sv.ips)
		require.NotZero(t, familiesOf(sv.ips), "%s holds %v", name, sv.ips)
		for _, ip := range sv.ips {
			require.Same(t, sv.pool, s.poolOf(ip), "%s holds %v outside its pool %q", name, ip, sv.pool.cfg.Name)
			held[ip] = append(held[ip], name)
		}
	}
	require.Equal(t, len(held), len(s.ips), "%d addresses held by services, %d recorded", len(held), len(s.ips))
	var inUse [2]map[*addrPool]int
	inUse[0], inUse[1] = map[*addrPool]int{}, map[*addrPool]int{}
	for ip, names := range held {
		st := s.ips[ip]
		require.NotNil(t, st, "%v held by %v but not recorded", ip, names)
		slices.Sort(names)
		var got []string
		for _, h := range st.holders {
			got = append(got, h.req.Service)
		}
		require.Equal(t, names, got, "%v holders %v, services say %v", ip, got, names)
		for i, h := range st.holders {
			for _, o := range st.holders[i+1:] {
				require.NoError(t, CanShare(h.req, o.req), "%v shared by incompatible %s and %s", ip, h.req.Service, o.req.Service)
			}
		}
		if k := st.holders[0].req.SharingKey; k != "" {
			_, ok := s.byKey[k][ip]
			require.True(t, ok, "%v missing from the index of key %q", ip, k)
		}
		fi := famIdx(ip)
		require.False(t, st.pool.free[fi].has(toU128(ip)), "%v is held and free", ip)
		inUse[fi][st.pool]++
	}
	for k, m := range s.byKey {
		for ip := range m {
			st := s.ips[ip]
			require.NotNil(t, st, "stale index entry %q -> %v", k, ip)
			require.Equal(t, k, st.holders[0].req.SharingKey, "stale index entry %q -> %v", k, ip)
		}
	}
	for _, p := range s.pools {
		for fi := range 2 {
			require.Equal(t, inUse[fi][p], p.inUse[fi], "pool %s family %d: in-use counter vs actual", p.cfg.Name, fi)
			if p.size[fi] != ^uint64(0) {
				require.Equal(t, p.size[fi], p.free[fi].count()+uint64(p.inUse[fi]),
					"pool %s family %d: free %d + in use %d != size %d", p.cfg.Name, fi, p.free[fi].count(), p.inUse[fi], p.size[fi])
			}
		}
	}
}

// TestConcurrentUse hammers one allocator from several goroutines with
// allocations, releases, requested addresses, restores and pool changes,
// then checks that the state is consistent and that no address is shared
// against the rules. Run it with -race.
func TestConcurrentUse(t *testing.T) {
	configs := [][]AddressPool{
		{mkPool(t, "a", "192.0.2.0/26", "2001:db8:a::/122"), buggy(mkPool(t, "b", "198.51.100.0/24", "2001:db8:b::/120")), manual(mkPool(t, "m", "203.0.113.0/28"))},
		{mkPool(t, "a", "192.0.2.0/27", "2001:db8:a::/123"), mkPool(t, "b", "198.51.100.0/25", "2001:db8:b::/121"), manual(mkPool(t, "m", "203.0.113.0/28"))},
	}
	a := mustNew(t, configs[0]...)
	const workers, ops = 8, 1500
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range ops {
				if err := randomOp(a, rng, w, i, configs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	checks := 0
loop:
	for {
		select {
		case <-done:
			break loop
		default:
			checkInvariants(t, a)
			checks++
		}
	}
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	checkInvariants(t, a)
	t.Logf("%d invariant checks during the run, %d assignments at the end", checks, len(a.Assignments()))
}

func randomOp(a *Allocator, rng *rand.Rand, w, i int, configs [][]AddressPool) error {
	svc := fmt.Sprintf("w%d/s%d", w, rng.IntN(40))
	keys := []string{"", "k1", "k2"}
	policies := []lb.TrafficPolicy{lb.TrafficPolicyCluster, lb.TrafficPolicyLocal}
	req := Request{
		Service:           svc,
		Family:            []Family{IPv4, IPv6, DualStack}[rng.IntN(3)],
		SharingKey:        keys[rng.IntN(len(keys))],
		TrafficPolicy:     policies[rng.IntN(2)],
		EndpointsSelector: []string{"", "app=x"}[rng.IntN(2)],
		Ports:             []Port{{lb.TCP, uint16(80 + rng.IntN(4))}},
	}
	switch op := rng.IntN(100); {
	case op < 45:
		got, err := a.Allocate(req)
		if err == nil {
			if familiesOf(got.IPs) != req.Family || got.Service != svc {
				return fmt.Errorf("Allocate(%+v) = %+v", req, got)
			}
		} else if !errors.Is(err, ErrPoolExhausted) && !errors.Is(err, ErrAddressInUse) {
			return fmt.Errorf("Allocate(%+v): unexpected %w", req, err)
		}
	case op < 60:
		req.Family = IPv4
		req.IPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(64))})}
		got, err := a.Allocate(req)
		if err == nil && got.IPs[0] != req.IPs[0] {
			return fmt.Errorf("requested %v, got %v", req.IPs, got.IPs)
		}
		if err != nil && !errors.Is(err, ErrAddressInUse) && !errors.Is(err, ErrNotInPool) {
			return fmt.Errorf("Allocate(%+v): unexpected %w", req, err)
		}
	case op < 85:
		if rel, ok := a.Release(svc); ok && rel.Service != svc {
			return fmt.Errorf("Release(%s) = %+v", svc, rel)
		}
	case op < 92:
		if cur, ok := a.Assignment(svc); ok {
			for _, r := range a.Restore([]Assignment{cur}) {
				// Someone may have moved or released it meanwhile; any
				// outcome must be a typed one.
				if r.Err != nil && !errors.Is(r.Err, ErrAddressInUse) && !errors.Is(r.Err, ErrNotInPool) {
					return fmt.Errorf("Restore: unexpected %w", r.Err)
				}
			}
		}
	case op < 97:
		_ = a.Stats()
		_ = a.Holders(netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(64))}))
	default:
		changes, err := a.SetPools(configs[rng.IntN(2)])
		if err != nil {
			return err
		}
		for _, c := range changes {
			if c.Kind == ChangeRevoked && c.Err == nil {
				return fmt.Errorf("revoked without reason: %+v", c)
			}
		}
	}
	return nil
}
