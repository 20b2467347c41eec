package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/vmtest"
)

func TestParseArgs(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseArgs([]string{"-run", "IPVS", "-count", "2", "-timeout", "3m", "-accel", "tcg", "-modules", "nf_nat,fou",
		"./ipvs/...", "./tunnel", "--", "-test.benchtime=1x", "./not-a-package"}, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	if o.Flags.Run != "IPVS" || o.Flags.Count != 2 || o.Timeout != 3*time.Minute || o.Accel != "tcg" {
		t.Errorf("options %+v", o)
	}
	if !slices.Equal(o.Patterns, []string{"./ipvs/...", "./tunnel"}) || !slices.Equal(o.Flags.Extra, []string{"-test.benchtime=1x", "./not-a-package"}) {
		t.Errorf("patterns %q, extra %q", o.Patterns, o.Flags.Extra)
	}
	want := append(vmtest.DefaultModules(), "nf_nat", "fou")
	if !slices.Equal(o.Kernel.Modules, want) {
		t.Errorf("modules %q", o.Kernel.Modules)
	}
	if o, _ := parseArgs(nil, &stderr); o.Kernel.Modules != nil || o.Accel != vmtest.AccelAuto || o.Timeout != 10*time.Minute {
		t.Errorf("defaults %+v", o)
	}
}

func TestRunExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-no-such-flag"}, &out, &errOut); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
	if code := run([]string{"-h"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-kernel-package") {
		t.Errorf("-h: exit %d, usage %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"-q", "-accel", "hvf"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `"hvf"`) {
		t.Errorf("bad accelerator: exit %d, %q", code, errOut.String())
	}
}

func TestReport(t *testing.T) {
	const nonce = "n"
	c := vmtest.NewConsole(nonce)
	c.Line(vmtest.FormatMarker(nonce, vmtest.VerbInit))
	c.Line(vmtest.FormatMarker(nonce, vmtest.VerbModules, "loaded", "1"))
	c.Line(vmtest.FormatMarker(nonce, vmtest.VerbExit, "pkg", "example.com/a", "status", "0", "elapsed", "1.5s"))
	c.Line(vmtest.FormatMarker(nonce, vmtest.VerbExit, "pkg", "example.com/b", "status", "1", "elapsed", "2s"))
	res := &vmtest.Result{
		Packages: []string{"example.com/a", "example.com/b", "example.com/c"},
		Kernel:   &vmtest.Kernel{Package: "linux-image-x", Version: "1", Release: "6.1.0-x"},
		Accel:    vmtest.AccelTCG,
		Console:  c,
		Problems: c.Problems([]string{"example.com/a", "example.com/b", "example.com/c"}),
		Tail:     []string{"--- FAIL: TestB (0.00s)"},
	}
	var out, errOut bytes.Buffer
	report(&out, &errOut, res, time.Second)
	wantOut := "\nok  \texample.com/a\t1.500s\t(in VM)\n" +
		"FAIL\texample.com/b\t2.000s\t(in VM, exit status 1)\n" +
		"FAIL\texample.com/c\t(in VM, never finished)\n" +
		"FAIL\n"
	if out.String() != wantOut {
		t.Errorf("stdout\n got %q\nwant %q", out.String(), wantOut)
	}
	for _, want := range []string{"example.com/b: test binary exited with status 1", "example.com/c: test binary never ran",
		"the guest never reported DONE", "  | --- FAIL: TestB (0.00s)", "accel tcg"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}
