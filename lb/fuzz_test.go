package lb

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"testing"
)

// byteReader hands out fuzz bytes as small values; past the end it returns
// zeros.
type byteReader struct{ b []byte }

func (r *byteReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) u16() uint16 { return uint16(r.byte())<<8 | uint16(r.byte()) }

func (r *byteReader) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }

// pick returns one of the options.
func pick[T any](r *byteReader, options ...T) T { return options[int(r.byte())%len(options)] }

// usually returns good 15 times in 16, else one of the others, so
// that fuzzing reaches valid objects as well as each kind of mistake.
func usually[T any](r *byteReader, good T, others ...T) T {
	if b := r.byte(); b < 240 || len(others) == 0 {
		return good
	}
	return pick(r, others...)
}

// addr returns a usable address of family fam (IPv4 or IPv6) or, now and
// then, an address of any kind.
func (r *byteReader) addr(fam IPFamily) netip.Addr {
	good := netip.AddrFrom4([4]byte{198, 51, 100, r.byte()})
	if fam == IPv6 {
		good = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: r.byte()})
	}
	return usually(r, good,
		netip.Addr{},
		netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 192, 15: r.byte()}),
		netip.AddrFrom4([4]byte{pick(r, byte(192), 127, 224, 0), r.byte(), r.byte(), r.byte()}),
		netip.AddrFrom16([16]byte{0xfe, 0x80, 15: 1}).WithZone("eth0"),
		good.Next(),
		netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: r.byte()}),
		netip.AddrFrom4([4]byte{203, 0, 113, r.byte()}),
	)
}

func (r *byteReader) family() IPFamily { return pick(r, IPv4, IPv6) }

func (r *byteReader) name(good string) string {
	return usually(r, good, "", "web", "a", "web-1", "1web", "Web", "-x", "dns", "http", "a.b", "x y", "a\"b",
		"a-very-long-name-that-is-longer-than-sixty-three-characters-for-sure-yes", "p8080", "8080")
}

func (r *byteReader) prefix(fam IPFamily) netip.Prefix {
	a := r.addr(fam)
	if !a.IsValid() {
		return netip.Prefix{}
	}
	p, _ := a.Prefix(int(r.byte()) % (a.BitLen() + 1))
	return usually(r, p, netip.PrefixFrom(a, p.Bits()), netip.PrefixFrom(a, a.BitLen()+1), netip.Prefix{})
}

// fuzzService decodes a Service that exercises every field, valid in most
// fields most of the time.
func fuzzService(r *byteReader) *Service {
	typ := pick(r, ServiceType(""), ServiceTypeClusterIP, ServiceTypeNodePort, ServiceTypeLoadBalancer)
	s := &Service{
		Namespace:                usually(r, "default", "", "kube-system", "Bad"),
		Name:                     r.name("web"),
		Type:                     usually(r, typ, "ExternalName"),
		ExternalTrafficPolicy:    usually(r, pick(r, TrafficPolicy(""), TrafficPolicyCluster, TrafficPolicyLocal), "x"),
		InternalTrafficPolicy:    usually(r, pick(r, TrafficPolicy(""), TrafficPolicyCluster, TrafficPolicyLocal), "x"),
		PublishNotReadyAddresses: r.byte()%4 == 0,
		TrafficDistribution:      usually(r, pick(r, TrafficDistribution(""), PreferSameZone), PreferClose, "x"),
		SessionAffinity: SessionAffinity{
			Type:           usually(r, pick(r, AffinityType(""), AffinityNone, AffinityClientIP), "x"),
			TimeoutSeconds: usually(r, int32(0), 1, 86400, 86401, -1, int32(r.u32())),
		},
	}
	if s.SessionAffinity.Type == AffinityClientIP {
		s.SessionAffinity.TimeoutSeconds = usually(r, int32(r.u32()%86400+1), s.SessionAffinity.TimeoutSeconds)
	}
	fams := usually(r, []IPFamily{r.family()}, nil, []IPFamily{IPv4, IPv6}, []IPFamily{IPv6, IPv4}, []IPFamily{IPv4, IPv4}, []IPFamily{IPv4, IPv6, IPv6})
	for _, f := range fams {
		s.ClusterIPs = append(s.ClusterIPs, r.addr(f))
	}
	external := typ == ServiceTypeNodePort || typ == ServiceTypeLoadBalancer
	famOf := func() IPFamily {
		if len(fams) == 0 {
			return r.family()
		}
		return pick(r, fams...)
	}
	for range usually(r, 0, 1, 2) {
		s.ExternalIPs = append(s.ExternalIPs, r.addr(famOf()))
	}
	if typ == ServiceTypeLoadBalancer || r.byte() < 16 {
		for range pick(r, 0, 1, 2) {
			s.LoadBalancerIngress = append(s.LoadBalancerIngress, LoadBalancerIngress{IP: r.addr(famOf()), IPMode: usually(r, pick(r, IPMode(""), IPModeVIP, IPModeProxy), "x")})
		}
		for range pick(r, 0, 0, 1, 2) {
			s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges, r.prefix(r.family()))
		}
	}
	names := []string{"http", "dns", "metrics"}
	for i := range usually(r, 1+int(r.byte()%3), 0, 4) {
		p := ServicePort{
			Name:     r.name(names[i%3]),
			Protocol: usually(r, pick(r, Protocol(""), TCP, UDP, SCTP), "tcp"),
			Port:     usually(r, 80+uint16(i), 0, r.u16()),
		}
		if external {
			p.NodePort = usually(r, 30080+uint16(i), 0, 80, 32768, r.u16())
		} else {
			p.NodePort = usually(r, 0, 30080, r.u16())
		}
		switch r.byte() % 4 {
		case 1:
			p.TargetPort = PortNumber(usually(r, 8080, r.u16()))
		case 2:
			p.TargetPort = PortName(r.name(pick(r, "web", "dns")))
		case 3:
			p.TargetPort = usually(r, TargetPort{}, TargetPort{Number: r.u16(), Name: r.name("web")})
		}
		s.Ports = append(s.Ports, p)
	}
	if typ == ServiceTypeLoadBalancer && s.ExternalTrafficPolicy == TrafficPolicyLocal {
		s.HealthCheckNodePort = usually(r, uint16(0), 32000, 80, r.u16())
	} else {
		s.HealthCheckNodePort = usually(r, uint16(0), 32000)
	}
	return s
}

func fuzzEndpoints(r *byteReader) []Endpoint {
	var eps []Endpoint
	for range r.byte() % 6 {
		e := Endpoint{
			Addr:        r.addr(r.family()),
			NodeName:    usually(r, pick(r, "", "node-a", "node-b"), "Node A"),
			Zone:        usually(r, pick(r, "", "z1", "z2"), "bad zone"),
			Weight:      usually(r, pick(r, uint32(0), 1, 3), MaxWeight, MaxWeight+1),
			Ready:       r.byte()%2 == 0,
			Serving:     r.byte()%2 == 0,
			Terminating: r.byte()%3 == 0,
		}
		for range r.byte() % 3 {
			e.Ports = append(e.Ports, EndpointPort{
				Name:     r.name(pick(r, "web", "dns")),
				Protocol: usually(r, pick(r, Protocol(""), TCP, UDP), "x"),
				Port:     usually(r, 8000+uint16(r.byte()), 0),
			})
		}
		eps = append(eps, e)
	}
	return eps
}

// checkValidationError asserts the shape every validation error has.
func checkValidationError(t *testing.T, err error) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) || len(ve.Errors) == 0 {
		t.Fatalf("not a proper *ValidationError: %#v", err)
	}
	for _, fe := range ve.Errors {
		if fe.Field == "" || fe.Detail == "" || fe.Type == "" {
			t.Fatalf("incomplete field error %+v", fe)
		}
	}
}

// FuzzValidateService: the validator never panics, rejects with a complete
// typed error, and whatever it accepts resolves: one port per service port
// and family, frontends of that family, targets inside the endpoints.
func FuzzValidateService(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 3, 2, 0, 0, 0, 0, 2, 0, 1, 2, 2, 198, 51, 100, 7, 5, 1, 1, 1, 0, 1, 1, 1, 0, 80, 0, 0})
	f.Add([]byte("\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x02\x02\x00\x04\x05\x06\x01\x03\x02\x03\x04\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &byteReader{b: data}
		s := fuzzService(r)
		eps := fuzzEndpoints(r)
		node := Node{Name: pick(r, "", "node-a", "Bad Node"), Zone: pick(r, "", "z1")}
		err := s.Validate()
		if err != nil {
			checkValidationError(t, err)
		}
		if epErr := ValidateEndpoints(eps); epErr != nil {
			checkValidationError(t, epErr)
		}
		ports, rerr := Resolve(s, eps, node)
		if rerr != nil {
			checkValidationError(t, rerr)
			if ports != nil {
				t.Fatal("ports returned with an error")
			}
			return
		}
		if err != nil {
			t.Fatalf("Resolve accepted what Validate rejected: %v", err)
		}
		if len(ports) != len(s.Ports)*len(s.ClusterIPs) {
			t.Fatalf("%d resolved ports for %d ports × %d families", len(ports), len(s.Ports), len(s.ClusterIPs))
		}
		for i, p := range ports {
			sp := s.Ports[i/len(s.ClusterIPs)]
			if p.ExternallyAccessible != s.PortExternallyAccessible(sp, p.Family) || p.ExternalPolicy != s.ExternalPolicy(sp, p.Family) {
				t.Fatalf("%s/%s: resolved accessible=%v policy=%s, the Service says %v %s", p.Name, p.Family,
					p.ExternallyAccessible, p.ExternalPolicy, s.PortExternallyAccessible(sp, p.Family), s.ExternalPolicy(sp, p.Family))
			}
			for k, fe := range p.Frontends {
				if fe.Kind != FrontendNodePort && !p.Family.Matches(fe.Addr) {
					t.Fatalf("%s frontend %s in family %s", fe.Kind, fe.Addr, p.Family)
				}
				if slices.ContainsFunc(p.Frontends[:k], func(o Frontend) bool { return o.Kind == fe.Kind && o.Addr == fe.Addr }) {
					t.Fatalf("frontend %+v repeated in %+v", fe, p.Frontends)
				}
			}
			sel := p.Endpoints
			for _, list := range [][]Target{sel.Cluster, sel.Local, sel.Internal, sel.External, sel.Reachable} {
				for k, tg := range list {
					if k > 0 && list[k-1].AddrPort.Compare(tg.AddrPort) >= 0 {
						t.Fatalf("targets not sorted or repeated: %v", list)
					}
					if !slices.ContainsFunc(sel.Reachable, func(x Target) bool { return x.AddrPort == tg.AddrPort }) ||
						!p.Family.Matches(tg.AddrPort.Addr()) || tg.Weight == 0 || tg.AddrPort.Port() == 0 {
						t.Fatalf("bad target %+v in %+v", tg, sel)
					}
				}
			}
			if (sel.InternalVerdict == VerdictForward) != (len(sel.Internal) > 0) {
				t.Fatalf("internal verdict %s with %d targets", sel.InternalVerdict, len(sel.Internal))
			}
			if p.ExternallyAccessible && (sel.ExternalVerdict == VerdictForward) != (len(sel.External) > 0) {
				t.Fatalf("external verdict %s with %d targets", sel.ExternalVerdict, len(sel.External))
			}
		}
	})
}

// FuzzValidateEndpoints: the endpoint validator never panics and accepts
// only endpoints a valid service can resolve.
func FuzzValidateEndpoints(f *testing.F) {
	f.Add([]byte{3, 2, 192, 0, 2, 1, 1, 1, 1, 0, 0, 0, 1, 8, 0, 0})
	f.Add([]byte{5, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	svc := validLB()
	f.Fuzz(func(t *testing.T, data []byte) {
		eps := fuzzEndpoints(&byteReader{b: data})
		if err := ValidateEndpoints(eps); err != nil {
			checkValidationError(t, err)
			return
		}
		if _, err := Resolve(svc, eps, Node{Name: "node-a"}); err != nil {
			t.Fatalf("valid endpoints, valid service: %v", err)
		}
	})
}

// FuzzMaglev: building never panics; every entry names a backend; each
// backend owns its exact weighted share rounded down or up; and an update
// moves exactly the slots of removed backends plus those a surviving
// backend owns beyond its new share.
func FuzzMaglev(f *testing.F) {
	f.Add([]byte{3, 1, 1, 1, 1, 2, 3, 4}, uint8(1))
	f.Add([]byte{40, 9, 0, 0, 255, 255, 1, 7, 3, 3, 3, 3}, uint8(2))
	f.Add([]byte{1, 0}, uint8(0))
	sizes := []int{2, 3, 13, 251, 1021, 4093}
	f.Fuzz(func(t *testing.T, data []byte, sizeSel uint8) {
		r := &byteReader{b: data}
		size := sizes[int(sizeSel)%len(sizes)]
		mk := func() []MaglevBackend {
			n := int(r.byte()) % 60
			b := make([]MaglevBackend, 0, n)
			for i := range n {
				w := uint32(r.byte() % 8)
				if r.byte()%16 == 0 {
					w = r.u32()
				}
				b = append(b, MaglevBackend{Key: strconv.Itoa(i * int(1+r.byte()%3)), Weight: w})
			}
			return b
		}
		first := mk()
		m, err := NewMaglev(first, size)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		checkMaglev(t, m)
		second := mk()
		u, err := m.Update(second)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		checkMaglev(t, u)
		newCount := map[string]int{}
		for i, b := range u.Backends() {
			newCount[b.Key] = u.Counts()[i]
		}
		must := 0
		for i, b := range m.Backends() {
			c, ok := newCount[b.Key]
			if !ok {
				c = 0
			}
			must += max(0, m.Counts()[i]-c)
		}
		if moved := m.Changed(u); moved != must {
			t.Fatalf("update moved %d slots; only %d had to move", moved, must)
		}
	})
}

// FuzzProbabilityChain: for any weights the chain's shares match the
// weights, and every string reads back to the same kernel value.
func FuzzProbabilityChain(f *testing.F) {
	f.Add([]byte{1, 1, 1})
	f.Add([]byte{1, 2, 3, 255, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &byteReader{b: data}
		var w []uint32
		for range int(r.byte()) % 40 {
			x := uint32(r.byte())
			if r.byte()%8 == 0 {
				x = r.u32() % (MaxWeight + 1)
			}
			w = append(w, x)
		}
		chain, err := ProbabilityChain(w)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || (len(w) > 0 && !slices.Contains(w, 0)) {
				t.Fatalf("chain of %v: %v", w, err)
			}
			return
		}
		var total float64
		for _, x := range w {
			total += float64(x)
		}
		checkShares(t, w, total, func(i int) float64 { return float64(chain[i]) }, 1e-9)
		for _, p := range chain {
			v, err := strconv.ParseFloat(p.String(), 64)
			if err != nil || uint32(math.Round(v*(1<<31))) != p.Fixed() {
				t.Fatalf("%s does not read back as %d", p, p.Fixed())
			}
		}
	})
}

// FuzzParseSchedulerName: the parser accepts exactly the known names.
func FuzzParseSchedulerName(f *testing.F) {
	for _, n := range SchedulerNames() {
		f.Add(string(n))
	}
	f.Add("RR")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSchedulerName(s)
		known := slices.Contains(SchedulerNames(), SchedulerName(s))
		if known != (err == nil) || (known && string(n) != s) {
			t.Fatalf("ParseSchedulerName(%q) = %q, %v", s, n, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatal(fmt.Errorf("not ErrInvalid: %w", err))
		}
	})
}
