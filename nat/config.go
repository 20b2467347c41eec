package nat

import (
	"fmt"
	"net/netip"
	"regexp"

	"github.com/lbkit/lbkit/lb"
)

// DefaultMasqueradeMark is the packet-mark bit lbkit uses to flag a
// connection for masquerading. kube-proxy uses 0x4000; lbkit uses another
// bit by default so that both can run on one node.
const DefaultMasqueradeMark uint32 = 0x0040_0000

// DefaultPrefix starts every chain, table and set name lbkit creates.
const DefaultPrefix = "LBK-"

// Config is the node-level configuration of the compiler: who this node is
// and how traffic that crosses it is treated.
type Config struct {
	// Node is this node; its name decides which endpoints are local.
	Node lb.Node

	// Prefix starts every chain name ("LBK-" by default), so that lbkit
	// never collides with a kube-proxy on the same node. It must be 2-8
	// characters of [A-Z0-9-] ending in '-', and not "KUBE-". An IPTables
	// syncer owns (and its full syncs and Cleanup delete) every chain
	// whose name starts with its prefix, so two syncers on one node need
	// prefixes neither of which starts the other ("LBK-" and "LBK-2-"
	// would clash; "LBK-" and "LBKB-" do not). An NFTables syncer ignores
	// the prefix: it owns its whole table, so two of them need two tables.
	Prefix string

	// MasqueradeMark is the single mark bit that flags a connection for
	// masquerading in POSTROUTING (DefaultMasqueradeMark when zero).
	MasqueradeMark uint32

	// ClusterCIDRs are the pod networks, at most one per IP family (as
	// kube-proxy's --cluster-cidr). Traffic to a cluster IP from outside
	// them is masqueraded, so that replies come back through this node,
	// and external traffic from inside them is treated as cluster traffic
	// under a Local external policy. Empty means no such rules.
	ClusterCIDRs []netip.Prefix

	// MasqueradeAll masquerades all traffic to cluster IPs.
	MasqueradeAll bool

	// NodePortAddresses restricts node ports to local addresses inside
	// these prefixes; empty means every local address of the node, as
	// kube-proxy's default.
	NodePortAddresses []netip.Prefix

	// RandomFully asks for MASQUERADE --random-fully (fully randomized
	// source ports), as kube-proxy does when the kernel supports it.
	RandomFully bool

	// Validation tunes service validation (the node port range).
	Validation lb.ValidateOptions
}

var prefixRE = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,6}-$`)

// withDefaults returns c with zero fields filled in.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MasqueradeMark == 0 {
		c.MasqueradeMark = DefaultMasqueradeMark
	}
	return c
}

func (c Config) validate() error {
	var fe []*lb.FieldError
	add := func(field, format string, args ...any) {
		fe = append(fe, &lb.FieldError{Field: field, Type: lb.ErrorTypeInvalid, Detail: fmt.Sprintf(format, args...)})
	}
	switch {
	case !prefixRE.MatchString(c.Prefix):
		add("config.prefix", "%q must be 2-8 characters of [A-Z0-9-] ending in '-'", c.Prefix)
	case c.Prefix == "KUBE-":
		add("config.prefix", "%q belongs to kube-proxy", c.Prefix)
	}
	if m := c.MasqueradeMark; m&(m-1) != 0 {
		add("config.masqueradeMark", "%#x must be a single bit", m)
	}
	seenFamily := map[lb.IPFamily]int{}
	for i, p := range c.ClusterCIDRs {
		if !p.IsValid() || p != p.Masked() {
			add(fmt.Sprintf("config.clusterCIDRs[%d]", i), "%s is not a canonical prefix", p)
			continue
		}
		fam := lb.PrefixFamily(p)
		if j, dup := seenFamily[fam]; dup {
			add(fmt.Sprintf("config.clusterCIDRs[%d]", i), "a second %s cluster CIDR (the first is clusterCIDRs[%d]); at most one per family", fam, j)
		}
		seenFamily[fam] = i
	}
	for i, p := range c.NodePortAddresses {
		if !p.IsValid() || p != p.Masked() {
			add(fmt.Sprintf("config.nodePortAddresses[%d]", i), "%s is not a canonical prefix", p)
		}
	}
	if len(fe) == 0 {
		return nil
	}
	return &lb.ValidationError{Object: "nat.Config", Errors: fe}
}
