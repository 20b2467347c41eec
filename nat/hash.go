package nat

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"

	"github.com/lbkit/lbkit/lb"
)

// portHasher hashes what a port's rules are made of, so that a sync can
// tell which ports changed without rendering them. The seed is per
// process: hashes are compared only with those of the same syncer.
type portHasher struct {
	seed maphash.Seed
	h    maphash.Hash
	buf  [8]byte
}

func newPortHasher() *portHasher {
	ph := &portHasher{seed: maphash.MakeSeed()}
	ph.h.SetSeed(ph.seed)
	return ph
}

func (ph *portHasher) str(s string) {
	ph.h.WriteString(s)
	ph.h.WriteByte(0)
}

func (ph *portHasher) u64(v uint64) {
	binary.LittleEndian.PutUint64(ph.buf[:], v)
	ph.h.Write(ph.buf[:])
}

func (ph *portHasher) bool(v bool) {
	if v {
		ph.h.WriteByte(1)
	} else {
		ph.h.WriteByte(0)
	}
}

func (ph *portHasher) addr(a netip.Addr) {
	b := a.As16()
	ph.h.WriteByte(byte(a.BitLen()))
	ph.h.Write(b[:])
	ph.str(a.Zone())
}

func (ph *portHasher) targets(ts []lb.Target) {
	ph.u64(uint64(len(ts)))
	for _, t := range ts {
		ph.addr(t.AddrPort.Addr())
		ph.u64(uint64(t.AddrPort.Port())<<32 | uint64(t.Weight))
		ph.bool(t.Local)
	}
}

// port returns the hash of everything in p that the renderers read. The
// coverage test walks lb.ResolvedPort by reflection so that a field added
// to lb cannot be forgotten here.
func (ph *portHasher) port(p *Port) uint64 {
	ph.h.Reset()
	ph.str(p.Key)
	ph.str(p.Name.Namespace)
	ph.str(p.Name.Name)
	ph.str(p.Name.Port)
	ph.str(string(p.Family))
	ph.str(string(p.Name.Protocol))
	ph.u64(uint64(p.Port)<<16 | uint64(p.NodePort))
	ph.str(p.TargetPort.String())
	ph.u64(uint64(len(p.Frontends)))
	for _, f := range p.Frontends {
		ph.str(string(f.Kind))
		ph.addr(f.Addr)
		ph.u64(uint64(f.Port))
		ph.str(string(f.IPMode))
	}
	ph.bool(p.RestrictSources)
	ph.u64(uint64(len(p.SourceRanges)))
	for _, r := range p.SourceRanges {
		ph.addr(r.Addr())
		ph.u64(uint64(r.Bits()))
	}
	ph.str(string(p.Affinity.Type))
	ph.u64(uint64(p.Affinity.TimeoutSeconds))
	ph.str(string(p.InternalPolicy))
	ph.str(string(p.ExternalPolicy))
	ph.bool(p.ExternallyAccessible)
	ph.u64(uint64(p.HealthCheckNodePort))
	e := &p.Endpoints
	ph.targets(e.Cluster)
	ph.targets(e.Local)
	ph.targets(e.Internal)
	ph.targets(e.External)
	ph.targets(e.Reachable)
	ph.targets(e.Serving)
	ph.bool(e.HasEndpoints)
	ph.str(string(e.InternalVerdict))
	ph.str(string(e.ExternalVerdict))
	ph.bool(e.ClusterFallback)
	ph.bool(e.LocalFallback)
	ph.bool(e.ZoneFiltered)
	return ph.h.Sum64()
}
