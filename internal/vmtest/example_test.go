package vmtest_test

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/lbkit/lbkit/internal/vmtest"
)

// Resolve the load order of ipip and bridge from depmod's output.
func ExampleModuleIndex_LoadOrder() {
	deps, _ := vmtest.ParseModulesDep(strings.NewReader(
		"kernel/net/ipv4/ipip.ko: kernel/net/ipv4/tunnel4.ko kernel/net/ipv4/ip_tunnel.ko\n" +
			"kernel/net/ipv4/tunnel4.ko:\n" +
			"kernel/net/ipv4/ip_tunnel.ko:\n" +
			"kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n" +
			"kernel/net/802/stp.ko: kernel/net/llc/llc.ko\n" +
			"kernel/net/llc/llc.ko:\n"))
	ix := &vmtest.ModuleIndex{Modules: deps}
	order, err := ix.LoadOrder([]string{"ipip", "bridge"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range order {
		fmt.Println(m.Name, m.Path)
	}
	// Output:
	// ip_tunnel kernel/net/ipv4/ip_tunnel.ko
	// tunnel4 kernel/net/ipv4/tunnel4.ko
	// ipip kernel/net/ipv4/ipip.ko
	// llc kernel/net/llc/llc.ko
	// stp kernel/net/802/stp.ko
	// bridge kernel/net/bridge/bridge.ko
}

// The guest init reports with marker lines; Console turns them into results.
func ExampleConsole() {
	const nonce = "0123abcd"
	c := vmtest.NewConsole(nonce)
	for _, line := range []string{
		vmtest.FormatMarker(nonce, vmtest.VerbInit, "kernel", "6.1.0-56-amd64"),
		vmtest.FormatMarker(nonce, vmtest.VerbModules, "loaded", "32", "failed", "0"),
		vmtest.FormatMarker(nonce, vmtest.VerbStart, "pkg", "example.com/ipvs"),
		"--- PASS: TestSmoke (0.10s)",
		vmtest.FormatMarker(nonce, vmtest.VerbExit, "pkg", "example.com/ipvs", "status", "0", "elapsed", "1.2s"),
		vmtest.FormatMarker(nonce, vmtest.VerbDone, "failed", "0"),
	} {
		c.Line(line)
	}
	fmt.Println(c.Kernel, c.ModulesLoaded, c.Results)
	fmt.Println("problems:", c.Problems([]string{"example.com/ipvs", "example.com/tunnel"}))
	// Output:
	// 6.1.0-56-amd64 32 [{example.com/ipvs 0 1.2s}]
	// problems: [example.com/tunnel: test binary never ran]
}

// Write a tiny initramfs: parents of a file are created on demand, and
// every header and name is padded to four bytes (5 entries with the
// trailer: 116 + 124 + 116 + 132 + 124 bytes).
func ExampleCPIOWriter() {
	var buf bytes.Buffer
	w := vmtest.NewCPIOWriter(&buf)
	if err := w.AddCharDevice("dev/console", 0o600, 5, 1); err != nil {
		fmt.Println(err)
	}
	if err := w.AddBytes("lbkit/config.json", 0o644, []byte("{}")); err != nil {
		fmt.Println(err)
	}
	if err := w.Close(); err != nil {
		fmt.Println(err)
	}
	fmt.Println(buf.Len(), strings.Count(buf.String(), "070701"))
	// Output:
	// 612 5
}
