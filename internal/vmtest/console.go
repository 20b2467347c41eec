package vmtest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The guest init reports on the serial console with lines of the form
//
//	### lbkit-vm <nonce> <VERB> key=value ... [err=free text to the end]
//
// The nonce is random per run, so test output cannot forge a report and a
// report is recognised even when a test left a partial line before it.
const markerPrefix = "### lbkit-vm "

// Marker verbs, in the order the init prints them.
const (
	VerbInit    = "INIT"    // kernel=<release> uptime=<seconds>
	VerbModule  = "MODULE"  // name=<module> status=FAIL err=<text> (failures only)
	VerbModules = "MODULES" // loaded=<n> failed=<n> elapsed=<duration>
	VerbStart   = "START"   // pkg=<import path>
	VerbExit    = "EXIT"    // pkg=<import path> status=<exit code> elapsed=<duration>
	VerbDone    = "DONE"    // failed=<n>
)

// FormatMarker returns one report line (without newline). kv holds
// key, value pairs; spaces in values are replaced by "_", except in the
// value of a last key "err", which may hold any text up to the end of line.
func FormatMarker(nonce, verb string, kv ...string) string {
	var b strings.Builder
	b.WriteString(markerPrefix + nonce + " " + verb)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if kv[i] == "err" && i+2 == len(kv) {
			v = strings.Map(func(r rune) rune {
				if r == '\n' || r == '\r' {
					return ' '
				}
				return r
			}, v)
		} else {
			v = strings.Map(func(r rune) rune {
				if r <= ' ' {
					return '_'
				}
				return r
			}, v)
		}
		b.WriteString(" " + kv[i] + "=" + v)
	}
	return b.String()
}

// Marker is one parsed report line.
type Marker struct {
	Verb   string
	Fields map[string]string
}

// ParseMarker finds a report line carrying nonce in line. It returns false
// when line holds none (a test's own output, a kernel message, a line with
// another nonce).
func ParseMarker(nonce, line string) (Marker, bool) {
	if nonce == "" {
		return Marker{}, false
	}
	head := markerPrefix + nonce + " "
	i := strings.Index(line, head)
	if i < 0 {
		return Marker{}, false
	}
	rest := strings.TrimRight(line[i+len(head):], "\r\n")
	verb, rest, _ := strings.Cut(rest, " ")
	if verb == "" {
		return Marker{}, false
	}
	m := Marker{Verb: verb, Fields: map[string]string{}}
	for rest != "" {
		if strings.HasPrefix(rest, "err=") {
			m.Fields["err"] = rest[len("err="):]
			break
		}
		var field string
		field, rest, _ = strings.Cut(rest, " ")
		k, v, ok := strings.Cut(field, "=")
		if !ok || k == "" {
			return Marker{}, false
		}
		m.Fields[k] = v
	}
	return m, true
}

// ModuleFailure is a module the guest could not load.
type ModuleFailure struct {
	Name string
	Err  string
}

// BinaryResult is the outcome of one test binary in the guest.
type BinaryResult struct {
	Package string
	// Status is the exit status; 128+n when killed by signal n.
	Status  int
	Elapsed time.Duration
}

// Console turns the guest's console output, line by line, into what the
// init reported. It is not safe for concurrent use.
type Console struct {
	nonce string

	// Init is true once the init started; Kernel is the guest's release.
	Init   bool
	Kernel string
	// ModulesDone is true once the init reported the module load;
	// ModulesLoaded counts the modules loaded.
	ModulesDone    bool
	ModulesLoaded  int
	ModuleFailures []ModuleFailure
	// Running is the package whose binary runs now, if any.
	Running string
	Results []BinaryResult
	// Done is true once the init reported that every binary ran.
	Done bool
	// Bad lists report lines that had the nonce but made no sense.
	Bad []string
}

// NewConsole returns a Console that accepts reports carrying nonce.
func NewConsole(nonce string) *Console { return &Console{nonce: nonce} }

// Line consumes one console line and returns the marker it held, if any.
func (c *Console) Line(line string) (Marker, bool) {
	m, ok := ParseMarker(c.nonce, line)
	if !ok {
		return m, false
	}
	bad := func() (Marker, bool) {
		c.Bad = append(c.Bad, line)
		return m, true
	}
	f := m.Fields
	switch m.Verb {
	case VerbInit:
		c.Init = true
		c.Kernel = f["kernel"]
	case VerbModule:
		if f["name"] == "" {
			return bad()
		}
		c.ModuleFailures = append(c.ModuleFailures, ModuleFailure{Name: f["name"], Err: f["err"]})
	case VerbModules:
		n, err := strconv.Atoi(f["loaded"])
		if err != nil {
			return bad()
		}
		c.ModulesDone = true
		c.ModulesLoaded = n
	case VerbStart:
		if f["pkg"] == "" {
			return bad()
		}
		c.Running = f["pkg"]
	case VerbExit:
		status, err := strconv.Atoi(f["status"])
		if err != nil || f["pkg"] == "" {
			return bad()
		}
		elapsed, _ := time.ParseDuration(f["elapsed"])
		c.Results = append(c.Results, BinaryResult{Package: f["pkg"], Status: status, Elapsed: elapsed})
		c.Running = ""
	case VerbDone:
		c.Done = true
	default:
		return bad()
	}
	return m, true
}

// Result returns the reported result of pkg and whether there is one.
func (c *Console) Result(pkg string) (BinaryResult, bool) {
	for _, r := range c.Results {
		if r.Package == pkg {
			return r, true
		}
	}
	return BinaryResult{}, false
}

// Problems compares the reports with the packages the guest was given and
// returns what went wrong, one sentence each; none means every binary ran
// and passed and every module loaded.
func (c *Console) Problems(pkgs []string) []string {
	var p []string
	if !c.Init {
		p = append(p, "the guest init never started (kernel did not boot, or /init failed)")
	}
	for _, f := range c.ModuleFailures {
		p = append(p, fmt.Sprintf("module %s failed to load: %s", f.Name, f.Err))
	}
	if c.Init && !c.ModulesDone {
		p = append(p, "the guest did not finish loading modules")
	}
	for _, pkg := range pkgs {
		r, ok := c.Result(pkg)
		switch {
		case !ok && c.Running == pkg:
			p = append(p, fmt.Sprintf("%s: test binary started but never exited", pkg))
		case !ok:
			p = append(p, fmt.Sprintf("%s: test binary never ran", pkg))
		case r.Status != 0:
			p = append(p, fmt.Sprintf("%s: test binary exited with status %d", pkg, r.Status))
		}
	}
	if c.Init && !c.Done {
		p = append(p, "the guest never reported DONE")
	}
	for _, b := range c.Bad {
		p = append(p, fmt.Sprintf("malformed report line %q", b))
	}
	return p
}

// CleanConsoleLine removes what a terminal would act on from one line of
// guest console output: ANSI escape sequences (SeaBIOS clears the screen
// with them), carriage returns and other control characters but tab.
func CleanConsoleLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == 0x1b:
			i = skipEscape(s, i)
		case ch == '\t' || ch >= 0x20 && ch != 0x7f:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// skipEscape returns the index of the last byte of the escape sequence
// that starts at s[i] (an ESC).
func skipEscape(s string, i int) int {
	if i+1 >= len(s) {
		return i
	}
	switch s[i+1] {
	case '[': // CSI: parameters and intermediates, then a final byte 0x40-0x7e
		j := i + 2
		for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
			j++
		}
		return min(j, len(s)-1)
	case ']': // OSC: up to BEL or ESC \
		j := i + 2
		for j < len(s) {
			if s[j] == 0x07 {
				return j
			}
			if s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\' {
				return j + 1
			}
			j++
		}
		return len(s) - 1
	default: // two-byte sequence such as ESC c
		return i + 1
	}
}
