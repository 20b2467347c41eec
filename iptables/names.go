package iptables

import (
	"crypto/sha256"
	"encoding/base32"
)

// HashLen is the number of base32 characters of the hash in a hashed chain
// name, as in kube-proxy's KUBE-SVC-/KUBE-SEP- chains.
const HashLen = 16

// DefaultPrefix is the chain prefix lbkit uses so that its chains never
// collide with kube-proxy's "KUBE-" chains on the same node.
const DefaultPrefix = "LBK-"

// ChainNamer derives stable chain names the way kube-proxy names its
// per-service and per-endpoint chains: Prefix + kind + the first 16
// characters of the standard base32 encoding of the SHA-256 of the key.
//
// With Prefix "KUBE-", kind "SVC-" and the key parts
// ("default/kubernetes:https", "tcp"), Name returns kube-proxy's
// "KUBE-SVC-NPX46M4PTMTKRN6Y". The zero value uses DefaultPrefix.
type ChainNamer struct {
	// Prefix starts every name, "LBK-" when empty. Choose one that no other
	// program on the node uses: cleanup removes chains by prefix.
	Prefix string
}

func (n ChainNamer) prefix() string {
	if n.Prefix == "" {
		return DefaultPrefix
	}
	return n.Prefix
}

// Name returns prefix + kind + hash(key...). The key parts are concatenated
// without a separator before hashing, exactly as kube-proxy concatenates the
// service port name, the lower-case protocol and (for endpoint chains) the
// endpoint "addr:port". The error is a *ChainNameError when the result is
// longer than MaxChainNameLen or is not a valid chain name (the prefix and
// kind may use letters, digits, '-', '_' and '.').
func (n ChainNamer) Name(kind string, key ...string) (ChainName, error) {
	// The key is hashed from a stack buffer and the name assembled in
	// another: a sync names one chain per service port and endpoint, so
	// this runs hundreds of thousands of times with one allocation each
	// (the name itself).
	var keyBuf [256]byte
	k := keyBuf[:0]
	for _, part := range key {
		k = append(k, part...)
	}
	sum := sha256.Sum256(k)
	var enc [56]byte // base32 of 32 bytes is 56 characters with padding
	base32.StdEncoding.Encode(enc[:], sum[:])

	p := n.prefix()
	var nameBuf [64]byte
	b := append(nameBuf[:0], p...)
	b = append(b, kind...)
	b = append(b, enc[:HashLen]...)
	name := ChainName(b)
	if err := name.Validate(); err != nil {
		return "", err
	}
	return name, nil
}

// Fixed returns prefix + suffix, for the few well-known chains of a program
// (LBK-SERVICES, LBK-POSTROUTING), checked like Name.
func (n ChainNamer) Fixed(suffix string) (ChainName, error) {
	name := ChainName(n.prefix() + suffix)
	if err := name.Validate(); err != nil {
		return "", err
	}
	return name, nil
}

// Owns reports whether c carries this namer's prefix.
func (n ChainNamer) Owns(c ChainName) bool { return c.HasPrefix(n.prefix()) }
