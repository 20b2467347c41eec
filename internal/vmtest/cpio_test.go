package vmtest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// requireCPIO returns the path of GNU cpio, the independent reader the
// archive tests check against (`make deps` installs it).
func requireCPIO(t *testing.T) string {
	t.Helper()
	if InVM() {
		t.Skip("the guest has no cpio; the archive tests run on the host")
	}
	p, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio is not installed (run `make deps`); it is the independent reader these tests need")
	}
	return p
}

func sampleArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4097) // not a multiple of 4 after the +3 below
	big = append(big, "end"...)
	steps := []error{
		w.AddDir("dev", 0o755),
		w.AddCharDevice("dev/console", 0o600, 5, 1),
		w.AddBytes("init", 0o755, []byte("#!/bin/true\n")),
		w.AddBytes("lbkit/tests/a/b/one.test", 0o755, []byte("x")), // parents on demand
		w.AddBytes("lbkit/tests/a/two", 0o644, []byte("two!")),
		w.AddBytes("lbkit/empty", 0o644, nil),
		w.AddFile("lbkit/big", 0o600, int64(len(big)), bytes.NewReader(big)),
		w.AddSymlink("var/run", "../run"),
		w.Close(),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	return buf.Bytes()
}

func TestCPIOListedByGNUCpio(t *testing.T) {
	cpio := requireCPIO(t)
	cmd := exec.Command(cpio, "-itv", "--quiet", "-H", "newc")
	cmd.Stdin = bytes.NewReader(sampleArchive(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	type entry struct{ mode, name string }
	var got []entry
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("odd line %q", line)
		}
		// "-rwxr-xr-x 1 root root 12 Jan 1 1970 init", "lrwxrwxrwx ... var/run -> ../run",
		// "crw------- 1 root root 5, 1 Jan 1 1970 dev/console"
		name := f[len(f)-1]
		if f[len(f)-2] == "->" {
			name = f[len(f)-3] + " -> " + name
		}
		got = append(got, entry{f[0], name})
	}
	want := []entry{
		{"drwxr-xr-x", "dev"},
		{"crw-------", "dev/console"},
		{"-rwxr-xr-x", "init"},
		{"drwxr-xr-x", "lbkit"},
		{"drwxr-xr-x", "lbkit/tests"},
		{"drwxr-xr-x", "lbkit/tests/a"},
		{"drwxr-xr-x", "lbkit/tests/a/b"},
		{"-rwxr-xr-x", "lbkit/tests/a/b/one.test"},
		{"-rw-r--r--", "lbkit/tests/a/two"},
		{"-rw-r--r--", "lbkit/empty"},
		{"-rw-------", "lbkit/big"},
		{"drwxr-xr-x", "var"},
		{"lrwxrwxrwx", "var/run -> ../run"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("cpio -tv listing\n got %q\nwant %q\nraw:\n%s", got, want, out)
	}
	if !strings.Contains(string(out), "5,") {
		t.Errorf("device numbers of dev/console missing from listing:\n%s", out)
	}
}

func TestCPIOExtractedByGNUCpio(t *testing.T) {
	cpio := requireCPIO(t)
	dir := t.TempDir()
	// Extract everything but the device node, which needs root and is
	// checked by the listing test.
	cmd := exec.Command(cpio, "-idm", "--quiet", "-H", "newc", "--no-absolute-filenames", "-f", "dev/console")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(sampleArchive(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	big := append(bytes.Repeat([]byte("0123456789abcdef"), 4097), "end"...)
	for name, want := range map[string][]byte{
		"init":                     []byte("#!/bin/true\n"),
		"lbkit/tests/a/b/one.test": []byte("x"),
		"lbkit/tests/a/two":        []byte("two!"),
		"lbkit/empty":              {},
		"lbkit/big":                big,
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(want))
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode: %v %v", st.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "var/run")); err != nil || target != "../run" {
		t.Errorf("var/run -> %q, %v", target, err)
	}
}

func TestCPIODeterministic(t *testing.T) {
	if !bytes.Equal(sampleArchive(t), sampleArchive(t)) {
		t.Fatal("two archives of the same input differ")
	}
}

func TestCPIORejects(t *testing.T) {
	w := NewCPIOWriter(io.Discard)
	for _, name := range []string{"", ".", "/init", "a/../b", "../x", "a//b", "a/", "nul\x00", "TRAILER!!!"} {
		if err := w.AddBytes(name, 0o644, nil); !errors.Is(err, ErrBadArchiveName) {
			t.Errorf("AddBytes(%q) = %v, want ErrBadArchiveName", name, err)
		}
	}
	if err := w.AddBytes("f", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.AddBytes("f", 0o644, nil); !errors.Is(err, ErrBadArchiveName) {
		t.Errorf("duplicate name: %v", err)
	}
	if err := w.AddBytes("f/g", 0o644, nil); !errors.Is(err, ErrBadArchiveName) {
		t.Errorf("file below a file: %v", err)
	}
	if err := w.AddSymlink("l", ""); !errors.Is(err, ErrBadArchiveName) {
		t.Errorf("empty symlink target: %v", err)
	}
	if err := w.AddFile("short", 0o644, 10, strings.NewReader("abc")); err == nil {
		t.Error("a reader shorter than size was accepted")
	}
	// After a failed write the writer stays failed.
	if err := w.Close(); err == nil {
		t.Error("Close after a failed write succeeded")
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

func TestCPIOWriteErrorIsKept(t *testing.T) {
	w := NewCPIOWriter(&failWriter{after: 1})
	if err := w.AddBytes("a", 0o644, []byte("data")); err == nil {
		t.Fatal("write error not reported")
	}
	if err := w.AddBytes("b", 0o644, nil); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("later call: %v", err)
	}
}
