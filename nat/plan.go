package nat

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"github.com/lbkit/lbkit/lb"
)

// ServiceEndpoints is one service and its endpoints: the compiler's input.
type ServiceEndpoints struct {
	Service   lb.Service
	Endpoints []lb.Endpoint
}

// Plan is the engine-neutral result of compiling services for one node:
// every service port in every family, resolved (frontends, endpoints for
// each kind of traffic, verdicts), plus the node configuration. The
// iptables and nftables renderers both start from a Plan.
type Plan struct {
	// Config is the configuration with defaults filled in.
	Config Config
	// Ports holds one entry per service port and IP family, sorted by
	// family (IPv4 first), then key.
	Ports []Port
}

// Port is one service port in one IP family.
type Port struct {
	lb.ResolvedPort
	// Key identifies the port across syncs and names its chains:
	// "namespace/name:port/protocol" (lb.ServicePortName.Key).
	Key string
}

// Comment is the comment kube-proxy puts on the port's rules:
// "namespace/name:port".
func (p *Port) Comment() string { return p.Name.String() }

// Family returns the ports of family f, in plan order. Ports are sorted by
// family, so this is a subslice of p.Ports that shares its array.
func (p *Plan) Family(f lb.IPFamily) []Port {
	lo := slices.IndexFunc(p.Ports, func(q Port) bool { return q.Family == f })
	if lo < 0 {
		return nil
	}
	hi := lo
	for hi < len(p.Ports) && p.Ports[hi].Family == f {
		hi++
	}
	return p.Ports[lo:hi:hi]
}

// ConflictError reports two service ports that claim the same frontend:
// the same address, protocol and port, or the same node port.
type ConflictError struct {
	Frontend string // "192.0.2.10:80/tcp" or "nodePort 30080/tcp"
	First    string // key of the port that claimed it first (in input order)
	Second   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("nat: %s is claimed by both %s and %s", e.Frontend, e.First, e.Second)
}

// Is makes a ConflictError match lb.ErrInvalid.
func (e *ConflictError) Is(target error) bool { return target == lb.ErrInvalid }

// DuplicateServiceError reports a service that appears twice in the input.
type DuplicateServiceError struct{ Service lb.ServiceName }

func (e *DuplicateServiceError) Error() string {
	return fmt.Sprintf("nat: service %s appears more than once", e.Service)
}

// Is makes a DuplicateServiceError match lb.ErrInvalid.
func (e *DuplicateServiceError) Is(target error) bool { return target == lb.ErrInvalid }

// Compile validates and resolves services for the node in cfg and returns
// the plan. It is all or nothing: when any service, endpoint or the config
// is invalid, or two ports claim the same frontend, it returns every problem
// joined in one error (find them with errors.As: *lb.ValidationError,
// *ConflictError, *DuplicateServiceError; all match lb.ErrInvalid) and no
// plan, so that an engine never applies half of a desired state.
func Compile(cfg Config, services []ServiceEndpoints) (*Plan, error) {
	cfg = cfg.withDefaults()
	var problems []error
	if err := cfg.validate(); err != nil {
		problems = append(problems, err)
	}
	res := lb.Resolver{Node: cfg.Node, Validation: cfg.Validation}
	plan := &Plan{Config: cfg}
	resolved := resolveAll(&res, services)
	seen := map[lb.ServiceName]bool{}
	claims := map[claimKey]string{}
	for i := range services {
		svc := &services[i].Service
		name := svc.ServiceName()
		if seen[name] {
			problems = append(problems, &DuplicateServiceError{Service: name})
			continue
		}
		seen[name] = true
		ports, err := resolved[i].ports, resolved[i].err
		if err != nil {
			problems = append(problems, err)
			continue
		}
		for _, rp := range ports {
			port := Port{ResolvedPort: rp, Key: rp.Name.Key()}
			// One address can be both an external IP and a load-balancer
			// IP of the same port: keep its first frontend only, so that
			// no engine is asked to program the same address twice.
			frontends := rp.Frontends[:0:0]
			for _, f := range rp.Frontends {
				if !f.Intercept() {
					frontends = append(frontends, f)
					continue
				}
				claim := claimKey{addr: f.Addr, port: f.Port, proto: rp.Name.Protocol, nodePort: f.Kind == lb.FrontendNodePort, fam: rp.Family}
				if first, ok := claims[claim]; ok {
					if first != port.Key {
						problems = append(problems, &ConflictError{Frontend: claim.String(), First: first, Second: port.Key})
					}
					continue
				}
				claims[claim] = port.Key
				frontends = append(frontends, f)
			}
			port.Frontends = frontends
			plan.Ports = append(plan.Ports, port)
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	// Sort a permutation rather than the ports themselves: a Port is a
	// few hundred bytes, and at 10k services moving them around in the
	// sort cost more than everything else in Compile.
	order := make([]int32, len(plan.Ports))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &plan.Ports[i], &plan.Ports[j]
		return cmp.Or(cmp.Compare(familyOrder(a.Family), familyOrder(b.Family)), cmp.Compare(a.Key, b.Key))
	})
	sorted := make([]Port, len(plan.Ports))
	for i, j := range order {
		sorted[i] = plan.Ports[j]
	}
	plan.Ports = sorted
	return plan, nil
}

type resolution struct {
	ports []lb.ResolvedPort
	err   error
}

// resolveAll resolves every service, on all CPUs when there are enough
// services to be worth it: resolving is independent per service and is
// most of a cold compile. The result is in input order, so the plan does
// not depend on scheduling.
func resolveAll(res *lb.Resolver, services []ServiceEndpoints) []resolution {
	out := make([]resolution, len(services))
	workers := min(runtime.GOMAXPROCS(0), len(services)/256)
	if workers < 2 {
		for i := range services {
			out[i].ports, out[i].err = res.Resolve(&services[i].Service, services[i].Endpoints)
		}
		return out
	}
	var wg sync.WaitGroup
	chunk := (len(services) + workers - 1) / workers
	for lo := 0; lo < len(services); lo += chunk {
		hi := min(lo+chunk, len(services))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := *res // a Resolver is a value; each goroutine uses its own copy
			for i := lo; i < hi; i++ {
				out[i].ports, out[i].err = r.Resolve(&services[i].Service, services[i].Endpoints)
			}
		}()
	}
	wg.Wait()
	return out
}

func familyOrder(f lb.IPFamily) int {
	if f == lb.IPv4 {
		return 0
	}
	return 1
}

// claimKey is what two service ports may not both intercept: an address,
// port and protocol, or a node port and protocol in one family.
type claimKey struct {
	addr     netip.Addr
	port     uint16
	proto    lb.Protocol
	nodePort bool
	fam      lb.IPFamily
}

func (c claimKey) String() string {
	if c.nodePort {
		return fmt.Sprintf("nodePort %d/%s (%s)", c.port, c.proto.Lower(), c.fam)
	}
	return netip.AddrPortFrom(c.addr, c.port).String() + "/" + c.proto.Lower()
}
