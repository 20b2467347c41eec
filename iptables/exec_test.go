package iptables

import (
	"errors"
	"os/exec"
	"testing"
)

func TestBlamedLine(t *testing.T) {
	// stderr of iptables-restore 1.8.9 (legacy and nf_tables) for refused
	// inputs, as seen in the kernel tests.
	for stderr, want := range map[string]int{
		"iptables-restore: line 22 failed": 22,
		"iptables-restore v1.8.9 (legacy): Couldn't load target `LBK-NOPE':No such file or directory\n\nError occurred at line: 7\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.": 7,
		"iptables-nft-restore v1.8.9 (nf_tables): \nline 19: RULE_APPEND failed (Invalid argument): rule in chain LBK-SEP\nline 20: RULE_APPEND failed (Invalid argument): rule in chain LBK-SEP":                19,
		"iptables-nft-restore: line 2 failed: No chain/target/match by that name.":                                                             2,
		"iptables-nft-restore v1.8.9 (nf_tables): \nline 3: CHAIN_DEL failed (Device or resource busy): chain LBK-B":                           3,
		"iptables-restore: COMMIT expected at line 3":                                                                                          3,
		"Bad argument `*nat'\nError occurred at line: 3\nTry `iptables-nft-restore -h' or 'iptables-nft-restore --help' for more information.": 3,
		"iptables-restore v1.8.9 (legacy): Can't set policy `ACCEPT' on `LBK-A' line 2: Bad built-in chain name":                               0,
		"Another app is currently holding the xtables lock. Stopped waiting after 1s.":                                                         0,
		"": 0,
	} {
		if got := blamedLine(stderr); got != want {
			t.Errorf("blamedLine(%q) = %d, want %d", stderr, got, want)
		}
	}
}

type exitErr int

func (e exitErr) Error() string { return "exit" }
func (e exitErr) ExitCode() int { return int(e) }

func TestNewRestoreError(t *testing.T) {
	text := []byte("*nat\n:LBK-A - [0:0]\nCOMMIT\n*filter\n:LBK-F - [0:0]\n-A LBK-F -j LBK-NOPE\nCOMMIT\n")
	e := newRestoreError(IPv6, text, "Error occurred at line: 6", exitErr(2))
	if e.Line != 6 || e.Text != "-A LBK-F -j LBK-NOPE" || e.Table != TableFilter || e.ExitCode != 2 || e.Family != IPv6 {
		t.Errorf("%+v", e)
	}
	if !errors.Is(e, ErrRestore) {
		t.Error("not ErrRestore")
	}
	var ee exitErr
	if !errors.As(e, &ee) {
		t.Error("cause not unwrapped")
	}
	want := `iptables: ip6tables-restore failed in table filter at line 6 "-A LBK-F -j LBK-NOPE" (exit status 2): Error occurred at line: 6`
	if e.Error() != want {
		t.Errorf("Error() = %s", e.Error())
	}
	if e := newRestoreError(IPv4, text, "who knows", exitErr(1)); e.Line != 0 || e.Text != "" {
		t.Errorf("no line: %+v", e)
	}
	if e := newRestoreError(IPv4, text, "COMMIT expected at line 99", exitErr(1)); e.Line != 99 || e.Text != "" {
		t.Errorf("line past the end: %+v", e)
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]Version{
		"iptables v1.8.9 (nf_tables)\n":   {1, 8, 9, BackendNFT},
		"iptables v1.8.9 (legacy)\n":      {1, 8, 9, BackendLegacy},
		"ip6tables v1.8.10 (legacy)":      {1, 8, 10, BackendLegacy},
		"iptables v1.6.1\n":               {1, 6, 1, BackendLegacy},
		"iptables-nft v1.8.7 (nf_tables)": {1, 8, 7, BackendNFT},
	} {
		got, err := parseVersion(out)
		if err != nil || got != want {
			t.Errorf("parseVersion(%q) = %v, %v; want %v", out, got, err, want)
		}
	}
	for _, bad := range []string{"", "iptables", "iptables v1.8", "iptables v1.8.9 (bpf)", "iptables vx.y.z"} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) accepted", bad)
		}
	}
}

func TestBackendBinaries(t *testing.T) {
	for _, c := range []struct {
		b    Backend
		f    Family
		tool string
		want string
	}{
		{BackendAuto, IPv4, "-restore", "iptables-restore"},
		{BackendLegacy, IPv4, "-restore", "iptables-legacy-restore"},
		{BackendNFT, IPv6, "-save", "ip6tables-nft-save"},
		{BackendLegacy, IPv6, "", "ip6tables-legacy"},
	} {
		if got := c.b.binary(c.f, c.tool); got != c.want {
			t.Errorf("%v %v %q = %s, want %s", c.b, c.f, c.tool, got, c.want)
		}
	}
}

func TestMissingBinary(t *testing.T) {
	_, _, err := run(t.Context(), ExecRunner{}, "lbkit-no-such-iptables-restore", nil, nil)
	if !errors.Is(err, ErrBinaryNotFound) || !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}
