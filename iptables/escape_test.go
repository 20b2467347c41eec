package iptables

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendQuoted(t *testing.T) {
	// What xtables_save_string prints (and iptables-save 1.8.9 printed in
	// the kernel tests) for each value.
	for in, want := range map[string]string{
		"abc_DEF-09":   "abc_DEF-09",
		"":             `""`,
		"a b":          `"a b"`,
		"x.y":          `"x.y"`,
		"ns/svc:port":  `"ns/svc:port"`,
		`say "hi"`:     `"say \"hi\""`,
		`back\slash`:   `"back\\slash"`,
		`it's`:         `"it\'s"`,
		"ünï":          `"ünï"`,
		`-j ACCEPT`:    `"-j ACCEPT"`,
		`"; COMMIT; "`: `"\"; COMMIT; \""`,
	} {
		if got := string(appendQuoted(nil, in)); got != want {
			t.Errorf("appendQuoted(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestTokenize(t *testing.T) {
	cases := []struct {
		line string
		want []string
	}{
		{"-A X -j ACCEPT", []string{"-A", "X", "-j", "ACCEPT"}},
		{"  -A\tX  ", []string{"-A", "X"}},
		{`--comment "a b"`, []string{"--comment", "a b"}},
		{`--comment ""`, []string{"--comment", ""}},
		{`--comment "a\"b\\c\'d"`, []string{"--comment", `a"b\c'd`}},
		{`a"b c"d e`, []string{"ab cd", "e"}},
		{`back\slash 'single quoted'`, []string{`back\slash`, "'single", "quoted'"}},
	}
	for _, c := range cases {
		toks, err := tokenize(c.line, nil)
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		var got []string
		for _, tk := range toks {
			got = append(got, tk.s)
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
			t.Errorf("tokenize(%q) = %q, want %q", c.line, got, c.want)
		}
		if n := countArgs([]byte(c.line)); n != len(c.want) {
			t.Errorf("countArgs(%q) = %d, want %d", c.line, n, len(c.want))
		}
	}
	for _, bad := range []string{`--comment "open`, "x " + strings.Repeat("y", 1024), `"` + strings.Repeat("y", 1024) + `"`} {
		if _, err := tokenize(bad, nil); err == nil {
			t.Errorf("tokenize(%.20q...) accepted", bad)
		}
	}
}

func TestSanitizeComment(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"a\nb":           `a\nb`,
		"tab\there":      `tab\there`,
		"nul\x00":        `nul\x00`,
		"bad\xffutf8":    `bad\xffutf8`,
		"c1\u0085":       `c1\u0085`,
		`quotes "stay"`:  `quotes "stay"`,
		"-A INPUT\nDROP": `-A INPUT\nDROP`,
	} {
		got := SanitizeComment(in)
		if got != want {
			t.Errorf("SanitizeComment(%q) = %q, want %q", in, got, want)
		}
		if err := validateComment(got); err != nil {
			t.Errorf("SanitizeComment(%q) = %q is not valid: %v", in, got, err)
		}
	}
	long := SanitizeComment(strings.Repeat("é", 200)) // 400 bytes
	if len(long) > MaxCommentLen || !utf8.ValidString(long) || validateComment(long) != nil {
		t.Errorf("long comment sanitized to %d bytes", len(long))
	}
}

// FuzzComment checks that every comment the validator accepts comes back
// unchanged from the renderer's text through iptables-restore's tokenizer,
// as one argument, and that every other string is refused and sanitizes to
// an accepted one.
func FuzzComment(f *testing.F) {
	for _, s := range []string{"", "a", "a b", `"`, `\`, `'`, `\"`, "x\ny", "ü", "\xff", `"; -j DROP #`, "\t", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := Rule{Matches: []Match{Comment(s)}, Target: Accept}
		b := NewBuffer(IPv4)
		_ = b.StartTable(TableFilter)
		err := b.AppendRule("LBK-T", &r)
		if validateComment(s) != nil {
			if err == nil {
				t.Fatalf("comment %q accepted", s)
			}
			sane := SanitizeComment(s)
			if validateComment(sane) != nil || SanitizeComment(sane) != sane {
				t.Fatalf("SanitizeComment(%q) = %q not valid or not stable", s, sane)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid comment %q refused: %v", s, err)
		}
		text := b.String()
		if strings.Count(text, "\n") != 2 {
			t.Fatalf("comment %q broke the line: %q", s, text)
		}
		line := strings.TrimSuffix(strings.SplitN(text, "\n", 2)[1], "\n")
		toks, err := tokenize(line, nil)
		if err != nil {
			t.Fatalf("rendered %q does not tokenize: %v", line, err)
		}
		// -A LBK-T -m comment --comment VALUE -j ACCEPT
		if len(toks) != 8 || toks[5].s != s || toks[6].s != "-j" {
			t.Fatalf("comment %q rendered as %q tokenized to %v", s, line, toks)
		}
		_, back, err := ParseRule(IPv4, line)
		if err != nil || len(back.Matches) != 1 || back.Matches[0] != Comment(s) {
			t.Fatalf("comment %q parsed back as %#v, %v", s, back, err)
		}
	})
}

// FuzzTokenize checks the tokenizer never panics, that offsets are sane and
// that an argument without quotes is its own text.
func FuzzTokenize(f *testing.F) {
	for _, s := range []string{"-A X -j Y", `a"b c"d`, `"\"`, `"`, "\t \n", `""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		toks, err := tokenize(line, nil)
		if err != nil {
			return
		}
		prev := 0
		for _, tk := range toks {
			if tk.start < prev || tk.end < tk.start || tk.end > len(line) {
				t.Fatalf("bad offsets %+v in %q", tk, line)
			}
			prev = tk.end
			if !tk.quoted && tk.s != line[tk.start:tk.end] {
				t.Fatalf("unquoted token %q is not its text %q", tk.s, line[tk.start:tk.end])
			}
		}
		if n := countArgs([]byte(line)); n != len(toks) {
			t.Fatalf("countArgs = %d, tokenize found %d in %q", n, len(toks), line)
		}
	})
}
