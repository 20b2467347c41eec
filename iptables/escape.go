package iptables

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxCommentLen is the longest comment the kernel keeps (XT_MAX_COMMENT_LEN
// 256 including the NUL). iptables silently truncates longer comments, so
// lbkit rejects them instead.
const MaxCommentLen = 255

// maxParamLen is the longest single argument iptables-restore's tokenizer
// accepts (a 1024-byte buffer including the NUL).
const maxParamLen = 1023

// needsQuote reports whether iptables-save would quote s: it prints a value
// bare only when it is non-empty and made of [A-Za-z0-9_-]
// (xtables_save_string).
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return true
		}
	}
	return false
}

// appendQuoted appends s the way iptables-save prints a string value: bare
// when it is made of [A-Za-z0-9_-], otherwise in double quotes with '"',
// '\' and '\” escaped by a backslash. iptables-restore's tokenizer reads
// that back to s exactly, as long as s has no newline and no NUL, which the
// validators reject.
func appendQuoted(b []byte, s string) []byte {
	if !needsQuote(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\', '\'':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// validateComment checks a comment for the comment match. Quotes,
// backslashes and any printable UTF-8 are fine (they are escaped); control
// characters (newline, carriage return, tab, NUL, DEL, ...) and invalid
// UTF-8 are rejected, because iptables-restore reads one rule per line and
// has no escape for a newline, and an operator reading iptables-save output
// must not be fooled by a comment. Longer than MaxCommentLen is rejected
// because iptables would truncate it silently.
func validateComment(s string) error {
	if len(s) > MaxCommentLen {
		return fmt.Errorf("%d bytes, the kernel keeps at most %d", len(s), MaxCommentLen)
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("invalid UTF-8 at byte %d", i)
			}
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("control character %q at byte %d", r, i)
		}
	}
	return nil
}

// SanitizeComment turns any string, a service name from an API for
// instance, into a comment the comment match accepts: control characters
// and invalid UTF-8 are replaced by their Go escape (a newline becomes the
// two characters `\n`), and the result is cut to MaxCommentLen bytes on a
// character boundary. Quotes and backslashes are kept: the renderer escapes
// them. SanitizeComment(s) == s for every valid comment.
func SanitizeComment(s string) string {
	if validateComment(s) == nil {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece []byte
		switch {
		case r == utf8.RuneError && size == 1:
			piece = fmt.Appendf(nil, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			q := strconv.QuoteRune(r) // 'x' with Go escapes
			piece = []byte(q[1 : len(q)-1])
		default:
			piece = []byte(s[i : i+size])
		}
		if len(out)+len(piece) > MaxCommentLen {
			break
		}
		out = append(out, piece...)
		i += size
	}
	return string(out)
}

// token is one argument of a rule line as iptables-restore splits it.
type token struct {
	s      string // the value, quotes removed and escapes resolved
	quoted bool   // the argument had a quoted part
	start  int    // byte offset of the argument's first byte in the line
	end    int    // byte offset just after the argument's last byte
}

// tokenize splits a rule line the way iptables-restore does
// (add_param_to_argv): arguments are separated by spaces or tabs; a double
// quote opens a quoted part anywhere in an argument, inside which a
// backslash takes the next byte literally and spaces do not separate;
// outside quotes a backslash is an ordinary byte and single quotes mean
// nothing. Unlike iptables-restore, an unterminated quote and an argument
// longer than 1023 bytes are errors here rather than silently accepted or
// fatal.
func tokenize(line string, toks []token) ([]token, error) {
	toks = toks[:0]
	i := 0
	for i < len(line) {
		c := line[i]
		if c == ' ' || c == '\t' || c == '\n' {
			i++
			continue
		}
		start := i
		// Fast path: an argument with no quote is a substring.
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\n' && line[j] != '"' {
			j++
		}
		if j == len(line) || line[j] != '"' {
			if j-start > maxParamLen {
				return toks, fmt.Errorf("argument at byte %d longer than %d bytes", start, maxParamLen)
			}
			toks = append(toks, token{s: line[start:j], start: start, end: j})
			i = j
			continue
		}
		// Slow path: build the value.
		buf := make([]byte, 0, 32)
		buf = append(buf, line[start:j]...)
		var sc argScanner
		for i = j; i < len(line); i++ {
			sep, keep := sc.step(line[i])
			if sep {
				break
			}
			if keep {
				buf = append(buf, line[i])
			}
			if len(buf) > maxParamLen {
				return toks, fmt.Errorf("argument at byte %d longer than %d bytes", start, maxParamLen)
			}
		}
		if sc.inQuote {
			return toks, fmt.Errorf("unterminated quote in argument at byte %d", start)
		}
		toks = append(toks, token{s: string(buf), quoted: true, start: start, end: i})
	}
	return toks, nil
}

// argScanner is the state of iptables-restore's tokenizer within a line.
type argScanner struct{ inQuote, escaped bool }

// step consumes byte c and reports whether it separates arguments and
// whether it belongs to the argument's value.
func (s *argScanner) step(c byte) (sep, keep bool) {
	switch {
	case s.inQuote && s.escaped:
		s.escaped = false
		return false, true
	case s.inQuote && c == '\\':
		s.escaped = true
		return false, false
	case s.inQuote && c == '"':
		s.inQuote = false
		return false, false
	case s.inQuote:
		return false, true
	case c == '"':
		s.inQuote = true
		return false, false
	case c == ' ' || c == '\t' || c == '\n':
		return true, false
	}
	return false, true
}

// countArgs counts the arguments of a rendered line the way tokenize would,
// without allocating.
func countArgs(line []byte) int {
	n := 0
	inArg := false
	var sc argScanner
	for _, c := range line {
		if sep, _ := sc.step(c); sep {
			inArg = false
			continue
		}
		if !inArg {
			inArg = true
			n++
		}
	}
	return n
}

// validateSpec checks the free-form option text of a RawMatch or RawTarget:
// it must tokenize (balanced quotes, arguments of at most 1023 bytes) and
// hold no control character, so that it cannot end the line or swallow
// what follows it.
func validateSpec(spec string) error {
	for i := 0; i < len(spec); i++ {
		if c := spec[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("control character %q at byte %d", c, i)
		}
	}
	if _, err := tokenize(spec, nil); err != nil {
		return err
	}
	return nil
}
