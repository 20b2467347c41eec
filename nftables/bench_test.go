package nftables

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
)

// Benchmarks of the kernel need root and run in a namespace of their own
// (go test -run '^$' -bench . ./nftables). Each compares the engine with
// the usual alternative on the same work in the same run and reports the
// ratio.

func benchHost(b *testing.B) *nettest.Host {
	b.Helper()
	nettest.RequireKernel(b, "nft")
	lab := nettest.New(b, nettest.Topology{Hosts: []nettest.HostSpec{{Name: "lb"}}})
	return lab.Host("lb")
}

func writeScript(b *testing.B, s string) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), fmt.Sprintf("s%d.nft", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

func percentile(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

// BenchmarkColdApply programs a whole ruleset into an empty namespace: the
// engine's one netlink batch against `nft -f` of the same rendered script
// (exec, the way knftables applies). The lbkit shape is the one the notes
// recommend (a chain per service, endpoints in sharded data maps); the
// kube-proxy shape has a chain per endpoint and anonymous verdict maps.
func BenchmarkColdApply(b *testing.B) {
	for _, shape := range []struct {
		name string
		rs   *Ruleset
	}{
		{"lbkit-10000x10", scaleRuleset(10000, 10)},
		{"kubeproxy-2000x10", kubeProxyRuleset(2000, 10)},
	} {
		b.Run(shape.name, func(b *testing.B) {
			h := benchHost(b)
			ctx := context.Background()
			e := dialIn(b, h, scaleTable)
			script := writeScript(b, Render(scaleTable, shape.rs))
			tx := Create(shape.rs)
			var eng, nft time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := e.Apply(ctx, tx); err != nil {
					b.Fatal(err)
				}
				eng += time.Since(start)
				b.StopTimer()
				if err := e.Cleanup(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start = time.Now()
				if out, err := h.Run(ctx, "nft", "-f", script); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
				nft += time.Since(start)
				b.StopTimer()
				if err := e.Cleanup(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(eng.Seconds()/float64(b.N), "engine-s/op")
			b.ReportMetric(nft.Seconds()/float64(b.N), "nft-f-s/op")
			b.ReportMetric(nft.Seconds()/eng.Seconds(), "nft/engine")
		})
	}
}

// BenchmarkEndpointFlip changes one endpoint of one service (a different
// one each time) in the 10k x 10 table: the engine's element batch, the
// same delta through `nft -f`, and the engine's Sync of the whole desired
// ruleset (which diffs before sending). p50 and p99 are reported.
func BenchmarkEndpointFlip(b *testing.B) {
	const n, m = 10000, 10
	h := benchHost(b)
	ctx := context.Background()
	e := dialIn(b, h, scaleTable)
	rs := scaleRuleset(n, m)
	if err := e.Apply(ctx, Create(rs)); err != nil {
		b.Fatal(err)
	}
	b.Run("apply-vs-nft", func(b *testing.B) {
		var eng, nft []time.Duration
		for i := 0; i < b.N; i++ {
			svc, ep := (i*7919)%n, i%m
			start := time.Now()
			if err := e.Apply(ctx, flipEndpoint(svc, ep, m, 0)); err != nil {
				b.Fatal(err)
			}
			eng = append(eng, time.Since(start))
			back := flipEndpoint(svc, ep, m, 1).Render(scaleTable)
			b.StopTimer()
			script := writeScript(b, back)
			b.StartTimer()
			start = time.Now()
			if out, err := h.Run(ctx, "nft", "-f", script); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
			nft = append(nft, time.Since(start))
		}
		b.ReportMetric(float64(percentile(eng, 0.5).Microseconds())/1000, "engine-p50-ms")
		b.ReportMetric(float64(percentile(eng, 0.99).Microseconds())/1000, "engine-p99-ms")
		b.ReportMetric(float64(percentile(nft, 0.5).Microseconds())/1000, "nft-f-p50-ms")
		b.ReportMetric(float64(percentile(nft, 0.99).Microseconds())/1000, "nft-f-p99-ms")
		b.ReportMetric(float64(percentile(nft, 0.5))/float64(percentile(eng, 0.5)), "nft/engine-p50")
	})
	b.Run("sync", func(b *testing.B) {
		if _, err := e.Reconcile(ctx, rs); err != nil { // prime the engine's state
			b.Fatal(err)
		}
		cur := rs
		var lat []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			next := withFlippedEndpoint(cur, (i*7919)%n, i%m, m)
			b.StartTimer()
			start := time.Now()
			tx, err := e.Sync(ctx, next)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			if tx.Len() != 3 {
				b.Fatalf("Sync sent %d operations for one endpoint", tx.Len())
			}
			cur = next
		}
		b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	})
}

// withFlippedEndpoint returns a copy of rs in which endpoint j of service i
// points to another backend; everything else is shared with rs, as a
// caller that rebuilds only what changed would do.
func withFlippedEndpoint(rs *Ruleset, i, j, m int) *Ruleset {
	out := *rs
	out.Sets = append([]Set(nil), rs.Sets...)
	for k := range out.Sets {
		if out.Sets[k].Name != epMap(i, scaleShards) {
			continue
		}
		s := &out.Sets[k]
		s.Elements = append([]Element(nil), s.Elements...)
		for x, e := range s.Elements {
			if e.Key[0].AsUint() == uint32(i*m+j) {
				na := Addr(a("192.0.2.200"))
				if e.Data[0].AsAddr() == na.AsAddr() {
					ba, _ := scaleBackend(i, j)
					na = Addr(ba)
				}
				s.Elements[x] = MapElem(e.Key, na, e.Data[1])
			}
		}
	}
	return &out
}

// BenchmarkCommitCost measures what one small commit costs as the table
// grows, for the three kinds of change a load balancer makes: a data map
// element (endpoint change), a chain rewrite with a DNAT rule (a change of
// the numgen modulus), and a verdict map element that jumps (a new
// service). With "reachable" chains the verdict map dispatches to every
// service chain; with "unreachable" nothing refers to them, which isolates
// the kernel's per-commit walk over all chains from its revalidation of
// the graph reachable from base chains.
func BenchmarkCommitCost(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000, 20000} {
		for _, reach := range []bool{true, false} {
			name := fmt.Sprintf("chains=%d/unreachable", n)
			if reach {
				name = fmt.Sprintf("chains=%d/reachable", n)
			}
			b.Run(name, func(b *testing.B) {
				h := benchHost(b)
				ctx := context.Background()
				e := dialIn(b, h, scaleTable)
				rs := scaleRuleset(n, 1)
				if !reach {
					rs.Sets[0].Elements = nil
				}
				if err := e.Apply(ctx, Create(rs)); err != nil {
					b.Fatal(err)
				}
				ops := []struct {
					name string
					tx   func(k int) *Transaction
				}{
					{"element", func(k int) *Transaction { return flipEndpoint(k%n, 0, 1, 0) }},
					{"rewrite", func(k int) *Transaction {
						tx := &Transaction{}
						tx.ReplaceChain(Chain{Name: svcChain(7), Rules: []Rule{R(Match{Field: FieldL4Proto, Values: []Value{Proto(tcp)}},
							DNATMap{Family: FamilyIPv4, Key: Numgen{Mod: uint32(1 + k%2), Offset: 7}, Map: epMap(7, scaleShards)})}})
						return tx
					}},
					{"vmap-goto", func(k int) *Transaction {
						tx := &Transaction{}
						el := VMapElem(Goto(svcChain(k%n)), Addr(a("192.0.2.250")), Proto(udp), Port(uint16(k%2+1)))
						if k%2 == 0 {
							tx.AddElements("services4", el)
						} else {
							tx.DeleteElements("services4", VMapElem(Goto(svcChain((k-1)%n)), Addr(a("192.0.2.250")), Proto(udp), Port(1)))
						}
						return tx
					}},
				}
				const reps = 40
				mean := map[string]float64{}
				for _, o := range ops {
					var total time.Duration
					for k := 0; k < reps; k++ {
						tx := o.tx(k)
						start := time.Now()
						if err := e.Apply(ctx, tx); err != nil {
							b.Fatalf("%s: %v", o.name, err)
						}
						total += time.Since(start)
					}
					mean[o.name] = float64(total.Microseconds()) / reps
				}
				// b.N iterations of the cheapest change, so that the
				// framework's ns/op is the element commit.
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					k := reps + i // services 0-39 were flipped above
					if err := e.Apply(ctx, flipEndpoint(k%n, 0, 1, k/n)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				for name, us := range mean {
					b.ReportMetric(us, name+"-us")
				}
			})
		}
	}
}

// BenchmarkRender and BenchmarkCompile measure the user-space side of a
// cold sync of 10k x 10: rendering the nft script, and validating and
// encoding the netlink batch.
func BenchmarkRender(b *testing.B) {
	rs := scaleRuleset(10000, 10)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = Render(scaleTable, rs)
	}
}

func BenchmarkCompile(b *testing.B) {
	rs := scaleRuleset(10000, 10)
	tx := Create(rs)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := Validate(scaleTable, rs); err != nil {
			b.Fatal(err)
		}
		c := newCompiler(scaleTable, nil, &recorder{})
		if err := c.compile(tx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkColdApplyShards shows why the endpoint maps are sharded: every
// rule that looks a map up binds it, the kernel checks each element added
// to a map against all its bindings, and it finds a set by name by walking
// the table's list of sets. One map shared by 10 000 service chains is
// quadratic in the first; one map per service is quadratic in the second.
func BenchmarkColdApplyShards(b *testing.B) {
	for _, shards := range []int{1, 16, 128, 10000} {
		b.Run(fmt.Sprintf("maps=%d", shards), func(b *testing.B) {
			h := benchHost(b)
			ctx := context.Background()
			e := dialIn(b, h, scaleTable)
			tx := Create(shardedRuleset(10000, 10, shards))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := e.Apply(ctx, tx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := e.Cleanup(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
