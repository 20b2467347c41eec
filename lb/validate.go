package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every *ValidationError.
var ErrInvalid = errors.New("lb: invalid input")

// ErrorType classifies a FieldError, like Kubernetes' field.ErrorType.
type ErrorType string

// Field error types.
const (
	ErrorTypeRequired     ErrorType = "Required"
	ErrorTypeInvalid      ErrorType = "Invalid"
	ErrorTypeDuplicate    ErrorType = "Duplicate"
	ErrorTypeNotSupported ErrorType = "NotSupported"
	ErrorTypeForbidden    ErrorType = "Forbidden"
)

// FieldError is one problem with one field.
type FieldError struct {
	// Field is the path of the field, as Kubernetes spells it:
	// "spec.ports[1].nodePort", "endpoints[0].addr", "node.name".
	Field string
	Type  ErrorType
	// Detail says what is wrong, including the offending value.
	Detail string
}

// Error returns "field: detail".
func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// ValidationError lists every problem found in one object. It matches
// ErrInvalid with errors.Is, and errors.As finds it, or any one of its
// *FieldError entries, through wrapping.
type ValidationError struct {
	// Object names what was validated, for example `Service "default/web"`.
	Object string
	Errors []*FieldError
}

// Error lists all problems: `invalid Service "default/web": f1: d1; f2: d2`.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid ")
	b.WriteString(e.Object)
	b.WriteString(": ")
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the field errors, so that errors.As can find a
// *FieldError.
func (e *ValidationError) Unwrap() []error {
	out := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = fe
	}
	return out
}

// Field returns the first error for the field path, or nil.
func (e *ValidationError) Field(path string) *FieldError {
	for _, fe := range e.Errors {
		if fe.Field == path {
			return fe
		}
	}
	return nil
}

// PortRange is an inclusive range of port numbers.
type PortRange struct{ Min, Max uint16 }

// DefaultNodePortRange returns Kubernetes' default
// --service-node-port-range, 30000-32767.
func DefaultNodePortRange() PortRange { return PortRange{Min: 30000, Max: 32767} }

// Contains reports whether port is in r.
func (r PortRange) Contains(port uint16) bool { return port >= r.Min && port <= r.Max }

// String returns "min-max".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// ValidateOptions tunes validation to the cluster.
type ValidateOptions struct {
	// NodePortRange is the range node ports must fall in; the zero value
	// means DefaultNodePortRange().
	NodePortRange PortRange
}

func (o ValidateOptions) nodePorts() PortRange {
	if o.NodePortRange == (PortRange{}) {
		return DefaultNodePortRange()
	}
	return o.NodePortRange
}

// errs collects field errors.
type errs struct{ list []*FieldError }

func (e *errs) add(field string, t ErrorType, format string, args ...any) {
	e.list = append(e.list, &FieldError{Field: field, Type: t, Detail: fmt.Sprintf(format, args...)})
}

// addf adds a problem whose detail is already written.
func (e *errs) addf(field string, t ErrorType, detail string) {
	e.list = append(e.list, &FieldError{Field: field, Type: t, Detail: detail})
}

// err returns the collected problems as a *ValidationError about the object
// object() names, or nil. object is called only when there is a problem.
func (e *errs) err(object func() string) error {
	if len(e.list) == 0 {
		return nil
	}
	return &ValidationError{Object: object(), Errors: e.list}
}

// idx returns "prefix[i]", the path of a list element. Validation runs on
// every sync for every service and endpoint, so paths are built without fmt.
func idx(prefix string, i int) string { return prefix + "[" + strconv.Itoa(i) + "]" }

// Validate checks s with the default options. See ValidateService.
func (s *Service) Validate() error { return ValidateService(s, ValidateOptions{}) }

// ValidateService checks every field of s and returns a *ValidationError
// listing every problem, or nil. Among the rules: DNS names, at most one
// cluster IP per family, unicast external and load-balancer IPs (of any
// family, and repeats allowed: Kubernetes accepts both; Resolve ignores an
// address of a family the service has no cluster IP for, as kube-proxy
// does, and programs a repeated one once), canonical source-range CIDRs on
// LoadBalancer services
// only, ingress IPs (and so ipModes) on LoadBalancer services only, port
// names unique and required with several ports, ports 1-65535, unique
// port/protocol pairs, node ports in range and unique, affinity timeout
// 1..86400 and only with ClientIP, Local external policy only on externally
// accessible services (by type, see Service.ExternallyAccessible).
func ValidateService(s *Service, opts ValidateOptions) error {
	var e errs
	validateServiceInto(&e, s, opts)
	return e.err(func() string { return serviceObject(s) })
}

func validateServiceInto(e *errs, s *Service, opts ValidateOptions) {
	if opts.NodePortRange != (PortRange{}) && (opts.NodePortRange.Min == 0 || opts.NodePortRange.Min > opts.NodePortRange.Max) {
		e.add("options.nodePortRange", ErrorTypeInvalid, "%s is not a valid port range", opts.NodePortRange)
	}
	validateMeta(e, s)
	typ := s.EffectiveType()
	switch s.Type {
	case "", ServiceTypeClusterIP, ServiceTypeNodePort, ServiceTypeLoadBalancer:
	default:
		e.add("spec.type", ErrorTypeNotSupported, "%q is not one of ClusterIP, NodePort, LoadBalancer", s.Type)
	}
	validateClusterIPs(e, s, typ)
	validateExternal(e, s, typ)
	validatePorts(e, s, typ, opts.nodePorts())
	validatePolicies(e, s, typ, opts.nodePorts())
}

func serviceObject(s *Service) string {
	return fmt.Sprintf("Service %q", s.Namespace+"/"+s.Name)
}

func validateMeta(e *errs, s *Service) {
	switch {
	case s.Namespace == "":
		e.add("metadata.namespace", ErrorTypeRequired, "required")
	case !isDNS1123Label(s.Namespace):
		e.add("metadata.namespace", ErrorTypeInvalid, "%q is not a DNS-1123 label (lower-case letters, digits and '-', at most 63)", s.Namespace)
	}
	switch {
	case s.Name == "":
		e.add("metadata.name", ErrorTypeRequired, "required")
	case !isDNS1035Label(s.Name):
		e.add("metadata.name", ErrorTypeInvalid, "%q is not a DNS-1035 label (a lower-case letter, then letters, digits and '-', at most 63)", s.Name)
	}
}

func validateClusterIPs(e *errs, s *Service, typ ServiceType) {
	var families [2]bool // IPv4, IPv6
	if len(s.ClusterIPs) > 2 {
		e.add("spec.clusterIPs", ErrorTypeInvalid, "%d addresses; at most one per family (2)", len(s.ClusterIPs))
	}
	for i, ip := range s.ClusterIPs {
		f := idx("spec.clusterIPs", i)
		if !checkServiceAddr(e, f, ip) {
			continue
		}
		fi := 0
		if ip.Is6() {
			fi = 1
		}
		if families[fi] {
			e.add(f, ErrorTypeInvalid, "%s is a second %s cluster IP; mixed families are required (at most one per family)", ip, FamilyOf(ip))
		}
		families[fi] = true
	}
	if len(s.ClusterIPs) == 0 && (typ == ServiceTypeNodePort || typ == ServiceTypeLoadBalancer) {
		e.add("spec.clusterIPs", ErrorTypeRequired, "a %s service needs a cluster IP (only ClusterIP services may be headless)", typ)
	}
}

// validateExternal checks external IPs, ingress IPs and source ranges. An
// address of a family the service has no cluster IP for is not a problem,
// nor is an address listed twice: Kubernetes accepts both, and kube-proxy
// (like Resolve) ignores the first and programs the second once.
func validateExternal(e *errs, s *Service, typ ServiceType) {
	for i, ip := range s.ExternalIPs {
		f := idx("spec.externalIPs", i)
		if !checkServiceAddr(e, f, ip) {
			continue
		}
		if len(s.ClusterIPs) == 0 {
			e.add(f, ErrorTypeForbidden, "a headless service (no cluster IP) cannot have external IPs")
		}
	}
	for i, ing := range s.LoadBalancerIngress {
		f := idx("status.loadBalancer.ingress", i)
		if typ != ServiceTypeLoadBalancer {
			if ing.IPMode != "" {
				e.add(f+".ipMode", ErrorTypeForbidden, "ipMode %q on %s, which is not a load-balancer IP: the service is of type %s", ing.IPMode, ing.IP, typ)
			} else {
				e.add(f, ErrorTypeForbidden, "load-balancer ingress %s on a service of type %s", ing.IP, typ)
			}
			continue
		}
		mode := ing.EffectiveIPMode()
		if mode != IPModeVIP && mode != IPModeProxy {
			e.add(f+".ipMode", ErrorTypeNotSupported, "%q is not one of VIP, Proxy", ing.IPMode)
		}
		checkServiceAddr(e, f+".ip", ing.IP)
	}
	for i, p := range s.LoadBalancerSourceRanges {
		f := idx("spec.loadBalancerSourceRanges", i)
		if typ != ServiceTypeLoadBalancer {
			e.add(f, ErrorTypeForbidden, "source ranges apply only to type LoadBalancer, not %s", typ)
			continue
		}
		switch {
		case !p.IsValid():
			e.add(f, ErrorTypeInvalid, "not a valid CIDR")
		case p.Addr().Zone() != "":
			e.add(f, ErrorTypeInvalid, "%s has an IPv6 zone", p)
		case p.Addr().Is4In6():
			e.add(f, ErrorTypeInvalid, "%s is an IPv4-mapped IPv6 prefix; write it as IPv4", p)
		case p != p.Masked():
			e.add(f, ErrorTypeInvalid, "%s has host bits set (the network is %s)", p, p.Masked())
		}
	}
}

// checkServiceAddr checks an address a node intercepts. It reports whether
// the address is usable for further checks.
func checkServiceAddr(e *errs, field string, ip netip.Addr) bool {
	if !checkAddr(e, field, ip) {
		return false
	}
	if ip.IsLoopback() {
		e.add(field, ErrorTypeInvalid, "%s is a loopback address", ip)
		return false
	}
	return true
}

// checkAddr rejects addresses no engine can program.
func checkAddr(e *errs, field string, ip netip.Addr) bool {
	t, detail, ok := addrProblem(ip)
	if !ok {
		e.addf(field, t, detail)
	}
	return ok
}

// addrProblem says what is wrong with an address no engine can program;
// ok is true when nothing is.
func addrProblem(ip netip.Addr) (t ErrorType, detail string, ok bool) {
	switch {
	case !ip.IsValid():
		return ErrorTypeRequired, "address required", false
	case ip.Zone() != "":
		return ErrorTypeInvalid, ip.String() + " has an IPv6 zone", false
	case ip.Is4In6():
		return ErrorTypeInvalid, ip.String() + " is an IPv4-mapped IPv6 address; write it as IPv4", false
	case ip.IsUnspecified():
		return ErrorTypeInvalid, ip.String() + " is the unspecified address", false
	case ip.IsMulticast():
		return ErrorTypeInvalid, ip.String() + " is a multicast address", false
	}
	return "", "", true
}

func validatePorts(e *errs, s *Service, typ ServiceType, nodePorts PortRange) {
	if len(s.Ports) == 0 && len(s.ClusterIPs) > 0 {
		e.add("spec.ports", ErrorTypeRequired, "a service with a cluster IP needs at least one port")
	}
	type protoPort struct {
		proto Protocol
		port  uint16
	}
	names := map[string]int{}
	ports := map[protoPort]int{}
	nodes := map[protoPort]int{}
	for i, p := range s.Ports {
		f := idx("spec.ports", i)
		switch {
		case p.Name == "" && len(s.Ports) > 1:
			e.add(f+".name", ErrorTypeRequired, "required when the service has more than one port")
		case p.Name != "" && !isDNS1123Label(p.Name):
			e.add(f+".name", ErrorTypeInvalid, "%q is not a DNS-1123 label", p.Name)
		case p.Name != "":
			if j, dup := names[p.Name]; dup {
				e.add(f+".name", ErrorTypeDuplicate, "%q repeats spec.ports[%d].name", p.Name, j)
			}
			names[p.Name] = i
		}
		proto := p.EffectiveProtocol()
		if !proto.Valid() {
			e.add(f+".protocol", ErrorTypeNotSupported, "%q is not one of TCP, UDP, SCTP", p.Protocol)
		}
		if p.Port == 0 {
			e.add(f+".port", ErrorTypeInvalid, "0 is outside 1-65535")
		} else if j, dup := ports[protoPort{proto, p.Port}]; dup {
			e.add(f, ErrorTypeDuplicate, "%d/%s repeats spec.ports[%d]", p.Port, proto, j)
		} else {
			ports[protoPort{proto, p.Port}] = i
		}
		switch {
		case p.TargetPort.Name != "" && p.TargetPort.Number != 0:
			e.add(f+".targetPort", ErrorTypeInvalid, "both a number (%d) and a name (%q); set one", p.TargetPort.Number, p.TargetPort.Name)
		case p.TargetPort.Name != "" && !isIANASvcName(p.TargetPort.Name):
			e.add(f+".targetPort", ErrorTypeInvalid, "%q is not a port name (an IANA service name: at most 15 lower-case letters, digits and '-', with a letter)", p.TargetPort.Name)
		}
		switch {
		case p.NodePort == 0:
			if typ == ServiceTypeNodePort {
				e.add(f+".nodePort", ErrorTypeRequired, "a NodePort service needs a node port on every port")
			}
		case typ != ServiceTypeNodePort && typ != ServiceTypeLoadBalancer:
			e.add(f+".nodePort", ErrorTypeForbidden, "node ports need type NodePort or LoadBalancer, not %s", typ)
		case !nodePorts.Contains(p.NodePort):
			e.add(f+".nodePort", ErrorTypeInvalid, "%d is outside %s", p.NodePort, nodePorts)
		default:
			if j, dup := nodes[protoPort{proto, p.NodePort}]; dup {
				e.add(f+".nodePort", ErrorTypeDuplicate, "%d/%s repeats spec.ports[%d].nodePort", p.NodePort, proto, j)
			}
			nodes[protoPort{proto, p.NodePort}] = i
		}
	}
}

func validatePolicies(e *errs, s *Service, typ ServiceType, nodePorts PortRange) {
	a := s.SessionAffinity
	switch a.Type {
	case "", AffinityNone:
		if a.TimeoutSeconds != 0 {
			e.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", ErrorTypeForbidden, "a timeout needs sessionAffinity ClientIP")
		}
	case AffinityClientIP:
		if a.TimeoutSeconds < 0 || a.TimeoutSeconds > MaxAffinityTimeoutSeconds {
			e.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", ErrorTypeInvalid, "%d is outside 1-%d", a.TimeoutSeconds, MaxAffinityTimeoutSeconds)
		}
	default:
		e.add("spec.sessionAffinity", ErrorTypeNotSupported, "%q is not one of None, ClientIP", a.Type)
	}
	switch s.ExternalTrafficPolicy {
	case "", TrafficPolicyCluster:
	case TrafficPolicyLocal:
		if !s.ExternallyAccessible() {
			e.add("spec.externalTrafficPolicy", ErrorTypeForbidden, "Local needs an externally accessible service (type NodePort or LoadBalancer, or ClusterIP with external IPs)")
		}
	default:
		e.add("spec.externalTrafficPolicy", ErrorTypeNotSupported, "%q is not one of Cluster, Local", s.ExternalTrafficPolicy)
	}
	switch s.InternalTrafficPolicy {
	case "", TrafficPolicyCluster, TrafficPolicyLocal:
	default:
		e.add("spec.internalTrafficPolicy", ErrorTypeNotSupported, "%q is not one of Cluster, Local", s.InternalTrafficPolicy)
	}
	switch s.TrafficDistribution {
	case "", PreferSameZone, PreferClose:
	default:
		e.add("spec.trafficDistribution", ErrorTypeNotSupported, "%q is not one of PreferSameZone, PreferClose", s.TrafficDistribution)
	}
	if hc := s.HealthCheckNodePort; hc != 0 {
		const f = "spec.healthCheckNodePort"
		switch {
		case typ != ServiceTypeLoadBalancer || s.ExternalTrafficPolicy != TrafficPolicyLocal:
			e.add(f, ErrorTypeForbidden, "only a LoadBalancer service with externalTrafficPolicy Local has a health-check node port")
		case !nodePorts.Contains(hc):
			e.add(f, ErrorTypeInvalid, "%d is outside %s", hc, nodePorts)
		default:
			for i, p := range s.Ports {
				if p.NodePort == hc {
					e.add(f, ErrorTypeDuplicate, "%d is also spec.ports[%d].nodePort", hc, i)
				}
			}
		}
	}
}

// ValidateEndpoints checks a service's endpoints and returns a
// *ValidationError listing every problem, or nil: a unicast address
// (loopback is allowed, for user-space proxies), port names empty or
// DNS-1123 labels, unique per name and protocol, ports in 1-65535, weights up to MaxWeight, DNS
// node names, label-value zones.
//
// What Kubernetes produces is valid. Ready together with Terminating is
// accepted: the EndpointSlice controller writes exactly that for a
// terminating pod of a service that publishes not-ready addresses. An
// address may appear in several endpoints: the same endpoint listed by two
// EndpointSlices, or hostNetwork pods sharing their node's address with
// different ports. Resolve merges the endpoints that resolve to the same
// address and port (see Resolver.Resolve).
func ValidateEndpoints(endpoints []Endpoint) error {
	var e errs
	validateEndpoints(&e, endpoints)
	return e.err(func() string { return "endpoints" })
}

// validateEndpoints runs on every sync for every endpoint of every
// service, so it allocates nothing when all is well: field paths are built
// only for a problem.
func validateEndpoints(e *errs, endpoints []Endpoint) {
	for i := range endpoints {
		ep := &endpoints[i]
		f := func(sub string) string { return idx("endpoints", i) + sub }
		if t, detail, ok := addrProblem(ep.Addr); !ok {
			e.addf(f(".addr"), t, detail)
		}
		if ep.Weight > MaxWeight {
			e.add(f(".weight"), ErrorTypeInvalid, "%d is above %d", ep.Weight, MaxWeight)
		}
		if ep.NodeName != "" && !isDNS1123Subdomain(ep.NodeName) {
			e.add(f(".nodeName"), ErrorTypeInvalid, "%q is not a DNS-1123 subdomain", ep.NodeName)
		}
		if ep.Zone != "" && !isLabelValue(ep.Zone) {
			e.add(f(".zone"), ErrorTypeInvalid, "%q is not a label value (at most 63 letters, digits, '-', '_', '.')", ep.Zone)
		}
		for j, p := range ep.Ports {
			pf := func(sub string) string { return idx(idx("endpoints", i)+".ports", j) + sub }
			if p.Name != "" && !isDNS1123Label(p.Name) {
				e.add(pf(".name"), ErrorTypeInvalid, "%q is not a port name (empty, or a DNS-1123 label: a service port name or a container port name)", p.Name)
			}
			proto := p.EffectiveProtocol()
			if !proto.Valid() {
				e.add(pf(".protocol"), ErrorTypeNotSupported, "%q is not one of TCP, UDP, SCTP", p.Protocol)
			}
			if p.Port == 0 {
				e.add(pf(".port"), ErrorTypeInvalid, "0 is outside 1-65535")
			}
			for k := range j {
				if q := ep.Ports[k]; q.Name == p.Name && q.EffectiveProtocol() == proto {
					e.add(pf(".name"), ErrorTypeDuplicate, "%q/%s repeats %s.ports[%d]", p.Name, proto, idx("endpoints", i), k)
					break
				}
			}
		}
	}
}

func isAlnumLower(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// isDNS1123Label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isAlnumLower(s[0]) || !isAlnumLower(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnumLower(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// isDNS1035Label: a DNS-1123 label that starts with a letter.
func isDNS1035Label(s string) bool {
	return isDNS1123Label(s) && s[0] >= 'a' && s[0] <= 'z'
}

// isDNS1123Subdomain: dot-separated DNS-1123 labels, at most 253.
func isDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isDNS1123Label(l) {
			return false
		}
	}
	return true
}

// isIANASvcName: at most 15 of [-a-z0-9], at least one letter, no leading,
// trailing or double '-'.
func isIANASvcName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// isLabelValue: a Kubernetes label value, at most 63 of [-A-Za-z0-9_.],
// starting and ending with an alphanumeric.
func isLabelValue(s string) bool {
	if len(s) > 63 {
		return false
	}
	alnum := func(c byte) bool { return isAlnumLower(c) || c >= 'A' && c <= 'Z' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return s == "" || alnum(s[0]) && alnum(s[len(s)-1])
}
