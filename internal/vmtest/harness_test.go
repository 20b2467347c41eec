package vmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbkit/lbkit/internal/nettest"
)

func TestParseAptDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
	if got, err := ParseAptDepends(out, "linux-image-amd64"); err != nil || got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("got %q, %v", got, err)
	}
	// Other dependencies and alternatives come first in some releases.
	out = "linux-image-amd64\n  Depends: kmod\n |Depends: <linux-image-amd64>\n  Depends: linux-image-6.12.38+deb13-amd64\n  Recommends: firmware\n"
	if got, err := ParseAptDepends(out, "linux-image-amd64"); err != nil || got != "linux-image-6.12.38+deb13-amd64" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := ParseAptDepends("linux-image-amd64\n  Depends: kmod\n", "linux-image-amd64"); err == nil || !strings.Contains(err.Error(), "apt-get update") {
		t.Errorf("no image package: err %v", err)
	}
}

func TestParseAptVersion(t *testing.T) {
	out := "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nVersion: 6.1.0-1\n"
	if got, err := ParseAptVersion(out); err != nil || got != "6.1.192-2" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := ParseAptVersion("Package: x\n"); err == nil {
		t.Error("no Version accepted")
	}
	if safeVersion("1:2.3-4") != "1%3a2.3-4" {
		t.Error("epoch colon not escaped as apt does")
	}
}

// FuzzAptOutput checks that what the apt parsers return is usable as one
// command-line argument and a file name.
func FuzzAptOutput(f *testing.F) {
	f.Add("linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\nVersion: 6.1.192-2\n")
	f.Add(" |Depends: <linux-image-x>\nVersion:  \n")
	f.Fuzz(func(t *testing.T, out string) {
		if pkg, err := ParseAptDepends(out, "linux-image-amd64"); err == nil {
			if !strings.HasPrefix(pkg, "linux-image-") || strings.ContainsAny(pkg, " \t\n") || pkg == "linux-image-amd64" {
				t.Fatalf("package %q", pkg)
			}
		}
		if v, err := ParseAptVersion(out); err == nil {
			if v == "" || strings.ContainsAny(v, " \t\n/") {
				t.Fatalf("version %q", v)
			}
		}
	})
}

func TestModuleListKey(t *testing.T) {
	a := moduleListKey(DefaultModules())
	if a != moduleListKey(DefaultModules()) {
		t.Error("key not stable")
	}
	if a == moduleListKey(append(DefaultModules(), "nf_nat")) {
		t.Error("adding a module keeps the cache key")
	}
}

func TestVMPackages(t *testing.T) {
	without := "example.com/a\t/src/a\ta_test.go \n" +
		"example.com/b\t/src/b\t \n" +
		"example.com/c\t/src/c\tc_test.go x_test.go\n"
	with := "example.com/a\t/src/a\ta_test.go \n" + // the tag adds nothing
		"example.com/b\t/src/b\tvm_test.go \n" + // only a VM test
		"example.com/c\t/src/c\tc_test.go smoke_vm_test.go x_test.go\n" // an external VM test
	got, err := VMPackages(with, without)
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{{ImportPath: "example.com/b", Dir: "/src/b"}, {ImportPath: "example.com/c", Dir: "/src/c"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := VMPackages("garbage\n", ""); err == nil {
		t.Error("malformed go list output accepted")
	}
}

// TestDiscoverFindsThisPackage runs the real `go list` on this module:
// internal/vmtest has smoke_vm_test.go, so it must be found, and
// internal/nettest, which has no VM tests, must not.
func TestDiscoverFindsThisPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command (inside the VM)")
	}
	pkgs, err := DiscoverPackages(t.Context(), ".", []string{"../..."})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, p := range pkgs {
		paths = append(paths, p.ImportPath)
	}
	if !slices.Contains(paths, "github.com/lbkit/lbkit/internal/vmtest") || slices.Contains(paths, "github.com/lbkit/lbkit/internal/nettest") {
		t.Errorf("discovered %v", paths)
	}
}

func TestTestFlagsArgs(t *testing.T) {
	got := TestFlags{Run: "TestSmoke/IPVS", Skip: "Fuzz", Count: 2, Short: true, Failfast: true, Timeout: 9 * time.Minute, Extra: []string{"-test.benchtime=1x"}}.Args()
	want := []string{"-test.v=true", "-test.paniconexit0", "-test.run=TestSmoke/IPVS", "-test.skip=Fuzz", "-test.count=2",
		"-test.short=true", "-test.failfast=true", "-test.timeout=9m0s", "-test.benchtime=1x"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := (TestFlags{}).Args(); !slices.Equal(got, []string{"-test.v=true", "-test.paniconexit0"}) {
		t.Errorf("zero flags: %q", got)
	}
}

func TestGuestEnv(t *testing.T) {
	got := GuestEnv([]string{"HOME=/home/me", "LBKIT_REQUIRE_KERNEL=1", "LBKIT_IN_VM=0", "GOTRACEBACK=all", "PATH=/host", "LBKIT_X=y=z", "junk"})
	want := []string{"LBKIT_IN_VM=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp", "LBKIT_REQUIRE_KERNEL=1", "GOTRACEBACK=all", "LBKIT_X=y=z"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestExitStatus runs this test binary as a child that exits or kills
// itself (the guest has no shell to do it with).
func TestExitStatus(t *testing.T) {
	switch os.Getenv("LBKIT_VMTEST_EXIT_CHILD") {
	case "":
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	default:
		code, _ := strconv.Atoi(os.Getenv("LBKIT_VMTEST_EXIT_CHILD"))
		os.Exit(code)
	}
	for how, want := range map[string]int{"0": 0, "3": 3, "kill": 128 + 9} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExitStatus$")
		cmd.Env = append(os.Environ(), "LBKIT_VMTEST_EXIT_CHILD="+how)
		_ = cmd.Run()
		if got := ExitStatus(cmd.ProcessState); got != want {
			t.Errorf("%s: status %d, want %d", how, got, want)
		}
	}
	if ExitStatus(nil) != -1 {
		t.Error("nil state")
	}
}

func TestMachineArgs(t *testing.T) {
	m := Machine{Kernel: "/k", Initrd: "/i", MemoryMB: 512, CPUs: 2, Accel: AccelTCG, Append: "lbkit.debug=1"}
	want := []string{"-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot", "-accel", "tcg", "-m", "512", "-smp", "2",
		"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0 panic=-1 quiet loglevel=3 lbkit.debug=1"}
	if got := m.Args(); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	m.Accel = AccelKVM
	if got := m.Args(); !slices.Contains(got, "kvm") || !slices.Contains(got, "host") {
		t.Errorf("kvm args %q", got)
	}
}

func TestRunRejectsBadAccel(t *testing.T) {
	if _, err := Run(t.Context(), Options{Accel: "hvf"}); err == nil || !strings.Contains(err.Error(), "hvf") {
		t.Errorf("err %v", err)
	}
}

// TestWriteInitramfs builds an initramfs from stand-in files and reads it
// back with GNU cpio: layout, the config the init will read, testdata.
func TestWriteInitramfs(t *testing.T) {
	cpio := requireCPIO(t)
	src := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := InitramfsSpec{
		Init: write("init", "init-binary"),
		Modules: []KernelModule{
			{Name: "libcrc32c", Path: write("mods/00-libcrc32c.ko", "ko0")},
			{Name: "ip_vs", Path: write("mods/01-ip_vs.ko", "ko1")},
		},
		Tests: []GuestBinary{
			{Package: Package{ImportPath: "example.com/x/ipvs", Dir: filepath.Join(src, "pkg")}, Binary: write("ipvs.test", "bin")},
		},
		Args:  []string{"-test.v=true"},
		Env:   []string{"LBKIT_IN_VM=1"},
		Nonce: "abc",
	}
	write("pkg/testdata/golden/one.txt", "golden")
	if err := os.Symlink("one.txt", filepath.Join(src, "pkg/testdata/golden/link")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	cfg, err := WriteInitramfs(&buf, spec)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := GuestConfig{
		Nonce:   "abc",
		Modules: []GuestModule{{Name: "libcrc32c", Path: "/lbkit/modules/00-libcrc32c.ko"}, {Name: "ip_vs", Path: "/lbkit/modules/01-ip_vs.ko"}},
		Tests:   []GuestTest{{Package: "example.com/x/ipvs", Binary: "/lbkit/bin/00-ipvs.test", Dir: "/lbkit/src/example.com/x/ipvs", Args: []string{"-test.v=true"}}},
		Env:     []string{"LBKIT_IN_VM=1"},
	}
	if a, b := mustJSON(t, cfg), mustJSON(t, wantCfg); a != b {
		t.Errorf("config\n got %s\nwant %s", a, b)
	}

	dir := t.TempDir()
	cmd := exec.Command(cpio, "-idm", "--quiet", "-H", "newc", "--no-absolute-filenames", "-f", "dev/console")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for name, want := range map[string]string{
		"init":                      "init-binary",
		"lbkit/modules/01-ip_vs.ko": "ko1",
		"lbkit/bin/00-ipvs.test":    "bin",
		"lbkit/src/example.com/x/ipvs/testdata/golden/one.txt": "golden",
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	var stored GuestConfig
	data, err := os.ReadFile(filepath.Join(dir, GuestConfigPath))
	if err != nil || json.Unmarshal(data, &stored) != nil || mustJSON(t, stored) != mustJSON(t, wantCfg) {
		t.Errorf("stored config %s, %v", data, err)
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp"} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
			t.Errorf("mount point %s: %v", d, err)
		}
	}
	if target, _ := os.Readlink(filepath.Join(dir, "lbkit/src/example.com/x/ipvs/testdata/golden/link")); target != "one.txt" {
		t.Errorf("testdata symlink -> %q", target)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init not executable: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots qemu; not a -short test")
	}
	if InVM() {
		t.Skip("a test of the host side of the harness; the guest has no qemu")
	}
	if _, err := exec.LookPath(QEMUBinary); err != nil {
		nettest.SkipOrFail(t, "vmtest: %s is not installed (run `make deps`)", QEMUBinary)
	}
}

// TestQEMUHungGuestIsKilled boots a real guest that hangs (firmware with
// nothing to boot) and checks that the timeout kills it and that the
// result says what happened, with the console tail and no escape codes.
func TestQEMUHungGuestIsKilled(t *testing.T) {
	requireQEMU(t)
	var out bytes.Buffer
	start := time.Now()
	b, err := runQEMU(t.Context(), Machine{Accel: AccelTCG, MemoryMB: 64, CPUs: 1}, "n0nce", 4*time.Second, 0, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the 4s timeout took %v to end the guest", took)
	}
	if !b.TimedOut || b.Exit.IsZero() {
		t.Errorf("TimedOut %v, exit %v", b.TimedOut, b.Exit)
	}
	problems := b.Console.Problems([]string{"example.com/a"})
	if len(problems) == 0 || !strings.Contains(problems[0], "never started") {
		t.Errorf("problems %q", problems)
	}
	tail := strings.Join(b.Tail, "\n")
	if !strings.Contains(tail, "SeaBIOS") || strings.Contains(out.String(), "\x1b") {
		t.Errorf("tail %q; streamed %q", tail, out.String())
	}
}

// TestQEMUNoSignOfLife checks the KVM fallback trigger on a real guest that
// never starts an init: the liveness deadline ends it early with
// errNoLife, and its console is not streamed.
func TestQEMUNoSignOfLife(t *testing.T) {
	requireQEMU(t)
	var out bytes.Buffer
	start := time.Now()
	_, err := runQEMU(t.Context(), Machine{Accel: AccelTCG, MemoryMB: 64, CPUs: 1}, "n0nce", time.Minute, 2*time.Second, &out, io.Discard)
	if !errors.Is(err, errNoLife) {
		t.Fatalf("err %v, want errNoLife", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the 2s liveness deadline took %v", took)
	}
	if out.Len() != 0 {
		t.Errorf("console of a dead trial was streamed: %q", out.String())
	}
}
