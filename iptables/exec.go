package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Cmd is one external command for a Runner.
type Cmd struct {
	// Name is the binary, "iptables-nft-restore" for instance; a Runner
	// looks it up on PATH.
	Name   string
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Runner runs the iptables binaries (iptables-restore, iptables-save and
// iptables --version) for a Client. Inject one to run them through sudo,
// nsenter or a test wrapper.
//
// Run must return nil when the command exits with status 0. When it ran and
// exited non-zero, the returned error must have an ExitCode() int method
// (*exec.ExitError has one); when the binary is missing it should wrap
// exec.ErrNotFound.
type Runner interface {
	Run(ctx context.Context, cmd *Cmd) error
}

// ExecRunner is the default Runner: os/exec on the calling goroutine. The
// child is forked from the calling thread, so a caller that locked its
// goroutine to a thread switched into another network namespace programs
// that namespace.
type ExecRunner struct{}

// Run implements Runner. When ctx is done the command is killed.
func (ExecRunner) Run(ctx context.Context, c *Cmd) error {
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd.Run()
}

// exitCode returns the exit status carried by err, 0 when there is none.
func exitCode(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 0
}

// run executes name with args and stdin, returning stdout. A failure is
// returned with the trimmed stderr.
func run(ctx context.Context, r Runner, name string, args []string, stdin io.Reader) ([]byte, string, error) {
	var stdout, stderr bytes.Buffer
	err := r.Run(ctx, &Cmd{Name: name, Args: args, Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	if err != nil && errors.Is(err, exec.ErrNotFound) {
		err = fmt.Errorf("%w: %s: %w", ErrBinaryNotFound, name, err)
	}
	return stdout.Bytes(), string(bytes.TrimSpace(stderr.Bytes())), err
}

// blamedLine returns the first line number iptables-restore blames in its
// stderr, 0 when none. The tools print, depending on backend and failure:
//
//	Error occurred at line: 7                       (the tool could not parse it)
//	iptables-restore: line 4 failed                 (legacy: the kernel refused)
//	iptables-nft-restore: line 2 failed: ...        (nft: unknown chain)
//	line 3: CHAIN_DEL failed (Device or resource busy): chain X   (nft)
//	iptables-restore: COMMIT expected at line 9
//
// There is no errno or structured output for this, so the text is parsed.
func blamedLine(stderr string) int {
	best, bestAt := 0, -1
	try := func(marker string, atLineStart bool) {
		from := 0
		for {
			i := strings.Index(stderr[from:], marker)
			if i < 0 {
				return
			}
			i += from
			from = i + len(marker)
			if atLineStart && i > 0 && stderr[i-1] != '\n' {
				continue
			}
			j := from
			for j < len(stderr) && stderr[j] >= '0' && stderr[j] <= '9' {
				j++
			}
			if j == from {
				continue
			}
			if bestAt < 0 || i < bestAt {
				n, err := strconv.Atoi(stderr[from:j])
				if err == nil {
					best, bestAt = n, i
				}
			}
			return
		}
	}
	try("Error occurred at line: ", false)
	try(": line ", false)
	try("line ", true)
	try("at line ", false)
	return best
}

// lineInfo returns line n (1-based) of text and the table it belongs to
// (the last "*table" line before it).
func lineInfo(text []byte, n int) (string, Table) {
	var table Table
	for i := 1; len(text) > 0; i++ {
		line := text
		if j := bytes.IndexByte(text, '\n'); j >= 0 {
			line, text = text[:j], text[j+1:]
		} else {
			text = nil
		}
		if len(line) > 0 && line[0] == '*' {
			table = Table(line[1:])
		}
		if i == n {
			return string(line), table
		}
	}
	return "", table
}

// newRestoreError builds the RestoreError of a failed restore of text.
func newRestoreError(f Family, text []byte, stderr string, err error) *RestoreError {
	e := &RestoreError{Family: f, Stderr: stderr, Err: err, ExitCode: exitCode(err)}
	if n := blamedLine(stderr); n > 0 {
		e.Line = n
		e.Text, e.Table = lineInfo(text, n)
	}
	return e
}

// Version is the version of the iptables tools and the backend they use.
type Version struct {
	Major, Minor, Patch int
	Backend             Backend
}

// String returns "1.8.9 (nf_tables)".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d (%s)", v.Major, v.Minor, v.Patch, v.Backend)
}

// parseVersion parses the output of iptables --version. Tools that print
// no backend are legacy (iptables before 1.8 had only that one).
func parseVersion(out string) (Version, error) {
	var v Version
	i := strings.Index(out, " v")
	if i < 0 {
		return v, fmt.Errorf("iptables: no version in %q", out)
	}
	rest := out[i+2:]
	if j := strings.IndexAny(rest, " \n"); j >= 0 {
		rest = out[i+2 : i+2+j]
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("iptables: no version in %q", out)
	}
	nums := [3]*int{&v.Major, &v.Minor, &v.Patch}
	for k, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("iptables: no version in %q", out)
		}
		*nums[k] = n
	}
	switch {
	case strings.Contains(out, "(nf_tables)"):
		v.Backend = BackendNFT
	case strings.Contains(out, "(legacy)") || !strings.Contains(out, "("):
		v.Backend = BackendLegacy
	default:
		return v, fmt.Errorf("iptables: unknown backend in %q", out)
	}
	return v, nil
}
