package nat

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/netip"

	"github.com/lbkit/lbkit/lb"
)

// The NFTables syncer compiles incrementally: it remembers a fingerprint of
// each service it compiled (its spec and endpoints, every field) and runs
// Compile only on the services whose fingerprint changed, checking their
// frontends against those of the unchanged services itself. The result is
// what Compile of all services would give (tested), at the cost of hashing
// the input instead of validating and resolving all of it again: a sync
// that changes one service of 10 000 compiles one service.

// fingerprinter hashes a ServiceEndpoints, every field of it. The seed is
// per process: fingerprints are compared only within one syncer.
type fingerprinter struct {
	seed maphash.Seed
	buf  []byte
}

func newFingerprinter() *fingerprinter { return &fingerprinter{seed: maphash.MakeSeed()} }

func (fp *fingerprinter) str(s string) {
	fp.buf = binary.AppendUvarint(fp.buf, uint64(len(s)))
	fp.buf = append(fp.buf, s...)
}

func (fp *fingerprinter) addr(a netip.Addr) {
	fp.buf, _ = a.AppendBinary(fp.buf) // never fails; the zero Addr is empty
	fp.buf = append(fp.buf, 0xff)      // ends the variable-length encoding
}

func (fp *fingerprinter) u32(v uint32) { fp.buf = binary.LittleEndian.AppendUint32(fp.buf, v) }

func (fp *fingerprinter) flag(bs ...bool) {
	var b byte
	for i, v := range bs {
		if v {
			b |= 1 << i
		}
	}
	fp.buf = append(fp.buf, b)
}

// of returns the fingerprint of se. The coverage test changes each field of
// lb.Service and lb.Endpoint in turn, so that a field lb adds later cannot
// be forgotten here.
func (fp *fingerprinter) of(se *ServiceEndpoints) uint64 {
	fp.buf = fp.buf[:0]
	s := &se.Service
	fp.str(s.Namespace)
	fp.str(s.Name)
	fp.str(string(s.Type))
	for _, list := range [][]netip.Addr{s.ClusterIPs, s.ExternalIPs} {
		fp.u32(uint32(len(list)))
		for _, a := range list {
			fp.addr(a)
		}
	}
	fp.u32(uint32(len(s.LoadBalancerIngress)))
	for _, ing := range s.LoadBalancerIngress {
		fp.addr(ing.IP)
		fp.str(string(ing.IPMode))
	}
	fp.u32(uint32(len(s.LoadBalancerSourceRanges)))
	for _, p := range s.LoadBalancerSourceRanges {
		fp.addr(p.Addr())
		fp.u32(uint32(p.Bits()))
	}
	fp.u32(uint32(len(s.Ports)))
	for _, p := range s.Ports {
		fp.str(p.Name)
		fp.str(string(p.Protocol))
		fp.u32(uint32(p.Port)<<16 | uint32(p.NodePort))
		fp.u32(uint32(p.TargetPort.Number))
		fp.str(p.TargetPort.Name)
	}
	fp.str(string(s.SessionAffinity.Type))
	fp.u32(uint32(s.SessionAffinity.TimeoutSeconds))
	fp.str(string(s.ExternalTrafficPolicy))
	fp.str(string(s.InternalTrafficPolicy))
	fp.flag(s.PublishNotReadyAddresses)
	fp.str(string(s.TrafficDistribution))
	fp.u32(uint32(s.HealthCheckNodePort))
	fp.u32(uint32(len(se.Endpoints)))
	for i := range se.Endpoints {
		e := &se.Endpoints[i]
		fp.addr(e.Addr)
		fp.u32(uint32(len(e.Ports)))
		for _, p := range e.Ports {
			fp.str(p.Name)
			fp.str(string(p.Protocol))
			fp.u32(uint32(p.Port))
		}
		fp.flag(e.Ready, e.Serving, e.Terminating)
		fp.str(e.NodeName)
		fp.str(e.Zone)
		fp.u32(e.Weight)
	}
	return maphash.Bytes(fp.seed, fp.buf)
}

// claimsOf returns what the frontends of p claim, as Compile checks them.
func claimsOf(p *Port) []claimKey {
	var out []claimKey
	for _, f := range p.Frontends {
		if f.Intercept() {
			out = append(out, claimKey{addr: f.Addr, port: f.Port, proto: p.Name.Protocol, nodePort: f.Kind == lb.FrontendNodePort, fam: p.Family})
		}
	}
	return out
}

// claimOwner is the service port that holds a claim.
type claimOwner struct {
	svc lb.ServiceName
	key string
}

// compiled is the syncer's memory of one service.
type compiled struct {
	fp    uint64
	gen   uint64 // the last compilation that saw the service
	frags []*nftFragment
	// claims of the service's ports, to release them when it changes.
	claims []claimKey
}

// compilation is the result of compiling services against the syncer's
// memory: the plan of the services that changed (added or different), and
// the names of those and of the services that went away.
type compilation struct {
	gen      uint64
	plan     *Plan // of the changed services only
	changed  map[lb.ServiceName]uint64
	removed  []lb.ServiceName
	byName   map[lb.ServiceName][]*Port
	newOwner map[claimKey]claimOwner
}

// compileChanged compiles services incrementally (see above): Compile on
// the services whose fingerprint differs from the one remembered, and the
// duplicate and frontend conflict checks of Compile between those and the
// unchanged services. It changes nothing in mem on error. On success the
// caller records the compilation with remember.
func compileChanged(cfg Config, services []ServiceEndpoints, fp *fingerprinter, mem map[lb.ServiceName]*compiled,
	claims map[claimKey]claimOwner, gen uint64) (*compilation, error) {
	c := &compilation{gen: gen, changed: map[lb.ServiceName]uint64{}}
	var todo []ServiceEndpoints
	var problems []error
	for i := range services {
		se := &services[i]
		name := se.Service.ServiceName()
		m := mem[name]
		h := fp.of(se)
		if m != nil && m.gen == gen {
			problems = append(problems, &DuplicateServiceError{Service: name})
			continue
		}
		if m != nil {
			m.gen = gen
			if m.fp == h {
				continue
			}
		}
		if _, dup := c.changed[name]; !dup {
			c.changed[name] = h
		}
		todo = append(todo, *se) // Compile reports duplicates among these
	}
	plan, err := Compile(cfg, todo)
	if err != nil {
		problems = append([]error{err}, problems...)
		return nil, errors.Join(problems...)
	}
	c.plan = plan
	for name, m := range mem {
		if m.gen != gen {
			c.removed = append(c.removed, name)
		}
	}
	// Frontends of changed ports against those of unchanged services; the
	// claims of changed and removed services are being given up.
	c.byName = map[lb.ServiceName][]*Port{}
	c.newOwner = map[claimKey]claimOwner{}
	for i := range plan.Ports {
		p := &plan.Ports[i]
		name := p.Name.ServiceName
		c.byName[name] = append(c.byName[name], p)
		for _, ck := range claimsOf(p) {
			c.newOwner[ck] = claimOwner{svc: name, key: p.Key}
			o, ok := claims[ck]
			if !ok || o.key == p.Key {
				continue
			}
			if _, moving := c.changed[o.svc]; moving || mem[o.svc] == nil || mem[o.svc].gen != gen {
				continue
			}
			problems = append(problems, &ConflictError{Frontend: ck.String(), First: o.key, Second: p.Key})
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}

// remember records a successful compilation: the changed services with
// their fragments, the removed ones forgotten, the claims moved.
func (c *compilation) remember(mem map[lb.ServiceName]*compiled, claims map[claimKey]claimOwner, frags map[lb.ServiceName][]*nftFragment) {
	for _, name := range c.removed {
		for _, ck := range mem[name].claims {
			if claims[ck].svc == name {
				delete(claims, ck)
			}
		}
		delete(mem, name)
	}
	for name, fp := range c.changed {
		if old := mem[name]; old != nil {
			for _, ck := range old.claims {
				if claims[ck].svc == name {
					delete(claims, ck)
				}
			}
		}
		m := &compiled{fp: fp, gen: c.gen, frags: frags[name]}
		for _, p := range c.byName[name] {
			m.claims = append(m.claims, claimsOf(p)...)
		}
		mem[name] = m
	}
	for ck, o := range c.newOwner {
		claims[ck] = o
	}
}
