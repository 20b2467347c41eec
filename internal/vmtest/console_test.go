package vmtest

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const nonce = "5f0c1a2b3c4d5e6f"

// A console transcript as qemu delivers it: SeaBIOS escapes, CRLF line
// ends, a kernel message, test output, a forged report without the nonce
// and a report appended to a partial line of test output.
var transcript = "\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n" +
	"[    1.261097] random: crng init done\r\n" +
	FormatMarker(nonce, VerbInit, "kernel", "6.1.0-56-amd64", "uptime", "2.10") + "\r\n" +
	FormatMarker(nonce, VerbModule, "name", "ip_vs_twos", "status", "FAIL", "err", "open /lbkit/modules/ip_vs_twos.ko: no such file or directory") + "\r\n" +
	FormatMarker(nonce, VerbModules, "loaded", "31", "failed", "1", "elapsed", "412ms") + "\r\n" +
	FormatMarker(nonce, VerbStart, "pkg", "github.com/lbkit/lbkit/ipvs") + "\r\n" +
	"=== RUN   TestSmoke\r\n" +
	"### lbkit-vm 0000000000000000 EXIT pkg=github.com/lbkit/lbkit/ipvs status=0 elapsed=1s\r\n" +
	"--- FAIL: TestSmoke (0.01s)\r\n" +
	"FAIL\r\n" +
	FormatMarker(nonce, VerbExit, "pkg", "github.com/lbkit/lbkit/ipvs", "status", "1", "elapsed", "1.5s") + "\r\n" +
	FormatMarker(nonce, VerbStart, "pkg", "github.com/lbkit/lbkit/tunnel") + "\r\n" +
	"partial output without newline" + FormatMarker(nonce, VerbExit, "pkg", "github.com/lbkit/lbkit/tunnel", "status", "0", "elapsed", "250ms") + "\r\n" +
	FormatMarker(nonce, VerbDone, "failed", "1") + "\r\n"

func feed(c *Console, text string) {
	for _, l := range strings.Split(text, "\n") {
		c.Line(CleanConsoleLine(l))
	}
}

func TestConsoleTranscript(t *testing.T) {
	c := NewConsole(nonce)
	feed(c, transcript)
	if !c.Init || c.Kernel != "6.1.0-56-amd64" || !c.ModulesDone || c.ModulesLoaded != 31 || !c.Done {
		t.Fatalf("state %+v", c)
	}
	wantFail := []ModuleFailure{{Name: "ip_vs_twos", Err: "open /lbkit/modules/ip_vs_twos.ko: no such file or directory"}}
	if !slices.Equal(c.ModuleFailures, wantFail) {
		t.Errorf("module failures %+v", c.ModuleFailures)
	}
	want := []BinaryResult{
		{Package: "github.com/lbkit/lbkit/ipvs", Status: 1, Elapsed: 1500 * time.Millisecond},
		{Package: "github.com/lbkit/lbkit/tunnel", Status: 0, Elapsed: 250 * time.Millisecond},
	}
	if !slices.Equal(c.Results, want) {
		t.Errorf("results\n got %+v\nwant %+v", c.Results, want)
	}
	problems := c.Problems([]string{"github.com/lbkit/lbkit/ipvs", "github.com/lbkit/lbkit/tunnel", "github.com/lbkit/lbkit/never"})
	wantProblems := []string{
		"module ip_vs_twos failed to load: open /lbkit/modules/ip_vs_twos.ko: no such file or directory",
		"github.com/lbkit/lbkit/ipvs: test binary exited with status 1",
		"github.com/lbkit/lbkit/never: test binary never ran",
	}
	if !slices.Equal(problems, wantProblems) {
		t.Errorf("problems\n got %q\nwant %q", problems, wantProblems)
	}
}

func TestConsoleIncompleteRuns(t *testing.T) {
	pkgs := []string{"example.com/a"}
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"no boot", "SeaBIOS\r\nBooting from ROM...\r\n", []string{
			"the guest init never started (kernel did not boot, or /init failed)",
			"example.com/a: test binary never ran",
		}},
		{"hung test", FormatMarker(nonce, VerbInit) + "\n" + FormatMarker(nonce, VerbModules, "loaded", "3") + "\n" +
			FormatMarker(nonce, VerbStart, "pkg", "example.com/a") + "\n=== RUN   TestHang\n", []string{
			"example.com/a: test binary started but never exited",
			"the guest never reported DONE",
		}},
		{"all good", FormatMarker(nonce, VerbInit) + "\n" + FormatMarker(nonce, VerbModules, "loaded", "3") + "\n" +
			FormatMarker(nonce, VerbExit, "pkg", "example.com/a", "status", "0") + "\n" + FormatMarker(nonce, VerbDone) + "\n", nil},
		{"garbled report", FormatMarker(nonce, VerbInit) + "\n" + FormatMarker(nonce, VerbModules, "loaded", "3") + "\n" +
			FormatMarker(nonce, VerbExit, "pkg", "example.com/a", "status", "zero") + "\n" + FormatMarker(nonce, VerbDone) + "\n", []string{
			"example.com/a: test binary never ran",
			`malformed report line "### lbkit-vm 5f0c1a2b3c4d5e6f EXIT pkg=example.com/a status=zero"`,
		}},
	} {
		c := NewConsole(nonce)
		feed(c, tc.text)
		if got := c.Problems(pkgs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: problems\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestFormatMarkerKeepsOneLine(t *testing.T) {
	line := FormatMarker(nonce, VerbModule, "name", "a b\nc", "err", "first\nsecond line")
	if strings.ContainsAny(line, "\r\n") {
		t.Fatalf("marker spans lines: %q", line)
	}
	m, ok := ParseMarker(nonce, line)
	if !ok || m.Fields["name"] != "a_b_c" || m.Fields["err"] != "first second line" {
		t.Fatalf("parsed %+v %v from %q", m, ok, line)
	}
	if _, ok := ParseMarker("", line); ok {
		t.Error("an empty nonce matched")
	}
}

func TestCleanConsoleLine(t *testing.T) {
	for in, want := range map[string]string{
		"\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16)\r": "SeaBIOS (version 1.16)",
		"--- PASS: TestX (0.00s)\r":                    "--- PASS: TestX (0.00s)",
		"a\tb\x00c\x7f":                                "a\tbc",
		"\x1b]0;title\x07text":                         "text",
		"\x1b[1;31mred\x1b[0m":                         "red",
		"trailing escape \x1b":                         "trailing escape ",
		"unterminated \x1b[12":                         "unterminated ",
	} {
		if got := CleanConsoleLine(in); got != want {
			t.Errorf("CleanConsoleLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzConsole feeds arbitrary console text and checks that the parser never
// accepts a report without the nonce, and that a well-formed report after
// the garbage is still understood.
func FuzzConsole(f *testing.F) {
	f.Add(transcript)
	f.Add("### lbkit-vm " + nonce + " EXIT pkg= status=1\n")
	f.Add("### lbkit-vm " + nonce + "  \x1b[2J\n")
	f.Fuzz(func(t *testing.T, text string) {
		c := NewConsole(nonce)
		for _, l := range strings.Split(text, "\n") {
			clean := CleanConsoleLine(l)
			if strings.ContainsAny(clean, "\x1b\r") {
				t.Fatalf("CleanConsoleLine left control bytes in %q", clean)
			}
			m, ok := c.Line(clean)
			if ok && !strings.Contains(clean, markerPrefix+nonce+" ") {
				t.Fatalf("line %q parsed as %+v without the nonce", clean, m)
			}
		}
		before := len(c.Results)
		c.Line(FormatMarker(nonce, VerbExit, "pkg", "example.com/fuzz", "status", "3", "elapsed", "1s"))
		if len(c.Results) != before+1 || c.Results[before] != (BinaryResult{Package: "example.com/fuzz", Status: 3, Elapsed: time.Second}) {
			t.Fatalf("report after fuzz input not understood: %+v", c.Results)
		}
	})
}
