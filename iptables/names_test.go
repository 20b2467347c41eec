package iptables

import (
	"errors"
	"strings"
	"testing"
)

func TestChainNamerKubeProxyVectors(t *testing.T) {
	// Chain names kube-proxy creates on every cluster (visible in any
	// `iptables-save -t nat` of a node): servicePortChainName hashes the
	// service port name followed by the lower-case protocol.
	kube := ChainNamer{Prefix: "KUBE-"}
	for _, c := range []struct {
		port, proto string
		want        ChainName
	}{
		{"default/kubernetes:https", "tcp", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		{"kube-system/kube-dns:dns", "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU"},
		{"kube-system/kube-dns:dns-tcp", "tcp", "KUBE-SVC-ERIFXISQEP7F7OF4"},
		{"kube-system/kube-dns:metrics", "tcp", "KUBE-SVC-JD5MR3NA4I4DYORP"},
	} {
		got, err := kube.Name("SVC-", c.port, c.proto)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("Name(SVC-, %q, %q) = %s, want %s", c.port, c.proto, got, c.want)
		}
		// Splitting the key differently hashes the same bytes.
		joined, _ := kube.Name("SVC-", c.port+c.proto)
		if joined != got {
			t.Errorf("key parts are not concatenated: %s vs %s", joined, got)
		}
	}
}

func TestChainNamerPrefix(t *testing.T) {
	var n ChainNamer // default prefix
	a, err := n.Name("SVC-", "default/web:http", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(a), "LBK-SVC-") || len(a) != len("LBK-SVC-")+HashLen {
		t.Errorf("name %s", a)
	}
	if !n.Owns(a) || (ChainNamer{Prefix: "KUBE-"}).Owns(a) {
		t.Errorf("Owns wrong for %s", a)
	}
	b, _ := n.Name("SVC-", "default/web:http", "udp")
	if a == b {
		t.Errorf("protocol not in the hash")
	}
	again, _ := n.Name("SVC-", "default/web:http", "tcp")
	if again != a {
		t.Errorf("not stable: %s vs %s", again, a)
	}
	fixed, err := n.Fixed("SERVICES")
	if err != nil || fixed != "LBK-SERVICES" {
		t.Errorf("Fixed = %s, %v", fixed, err)
	}
}

func TestChainNameLimit(t *testing.T) {
	// 12 bytes of prefix and kind leave exactly 28.
	n := ChainNamer{Prefix: "LBKIT-"}
	name, err := n.Name("SEPXY-", "k")
	if err != nil {
		t.Fatalf("28 bytes refused: %v", err)
	}
	if len(name) != MaxChainNameLen {
		t.Fatalf("len %d", len(name))
	}
	_, err = n.Name("SEPXYZ-", "k")
	var cne *ChainNameError
	if !errors.As(err, &cne) || !errors.Is(err, ErrChainNameTooLong) {
		t.Fatalf("29 bytes: err = %v", err)
	}
	if len(cne.Name) != 29 {
		t.Errorf("error names %q", cne.Name)
	}
	if _, err := (ChainNamer{Prefix: "LB K-"}).Name("SVC-", "k"); !errors.Is(err, ErrChainNameInvalid) {
		t.Errorf("space in prefix: %v", err)
	}
}

func TestChainNameValidate(t *testing.T) {
	ok := []ChainName{"LBK-SVC-ABC", "a", "KUBE-SEP-SXIVWICOYRO3J4NJ", "ufw-before-input", "x.y_z", ChainName(strings.Repeat("A", 28))}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", c, err)
		}
	}
	bad := map[ChainName]error{
		"":                                 ErrChainNameInvalid,
		ChainName(strings.Repeat("A", 29)): ErrChainNameTooLong,
		"-X":                               ErrChainNameInvalid,
		"a b":                              ErrChainNameInvalid,
		"a\nb":                             ErrChainNameInvalid,
		`a"b`:                              ErrChainNameInvalid,
		"a'b":                              ErrChainNameInvalid,
		"!a":                               ErrChainNameInvalid,
		"ACCEPT":                           ErrChainNameInvalid,
		"DNAT":                             ErrChainNameInvalid,
		"PREROUTING":                       ErrChainNameBuiltin,
		"ü":                                ErrChainNameInvalid,
	}
	for c, want := range bad {
		err := c.Validate()
		var cne *ChainNameError
		if !errors.As(err, &cne) || !errors.Is(err, want) {
			t.Errorf("%q: err = %v, want %v", c, err, want)
		}
	}
}
