package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStatusSet(t *testing.T) {
	for in, want := range map[string]string{
		"200":                "200",
		"200-299":            "200-299",
		" 200 - 204 , 301 ":  "200-204,301",
		"304,200-299,300":    "200-300,304",
		"500-503,400,501":    "400,500-503",
		"100-599":            "100-599",
		"204,204":            "204",
		"200-250,240-260,99": "",
		"":                   "",
		"2xx":                "",
		"299-200":            "",
		"600":                "",
		"+200":               "",
		"200,":               "",
		"0200":               "",
	} {
		set, err := ParseStatusSet(in)
		if want == "" {
			if !errors.Is(err, ErrStatusSet) {
				t.Errorf("ParseStatusSet(%q) = %v, %v; want an ErrStatusSet", in, set, err)
			}
			continue
		}
		if err != nil || set.String() != want {
			t.Errorf("ParseStatusSet(%q) = %v, %v; want %s", in, set, err, want)
		}
	}
	if s := Statuses(301, 200, 302); s.String() != "200,301-302" || !s.Contains(302) || s.Contains(303) {
		t.Errorf("Statuses: %v", s)
	}
	var def StatusSet
	if !def.Contains(200) || !def.Contains(399) || def.Contains(400) || def.Contains(199) || def.String() != "200-399" {
		t.Error("the nil set is not 200-399")
	}
}

func FuzzParseStatusSet(f *testing.F) {
	for _, s := range []string{"200", "200-299,304", " 200 - 204 , 301 ", "500-503,400,501", "2xx", "", ",", "599-100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseStatusSet(s)
		if err != nil {
			if !errors.Is(err, ErrStatusSet) {
				t.Fatalf("error %v does not wrap ErrStatusSet", err)
			}
			return
		}
		if len(set) == 0 {
			t.Fatal("parsed to an empty set")
		}
		if err := set.validate(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(set); i++ {
			if set[i].Lo <= set[i-1].Hi+1 {
				t.Fatalf("%v is not normalized", set)
			}
		}
		again, err := ParseStatusSet(set.String())
		if err != nil || !slices.Equal(again, set) {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, set, set.String(), again, err)
		}
		// Contains agrees with the items as written.
		for code := 100; code <= 599; code++ {
			in := false
			for item := range strings.SplitSeq(s, ",") {
				lo, hi, isRange := strings.Cut(item, "-")
				a, _ := strconv.Atoi(strings.TrimSpace(lo))
				b := a
				if isRange {
					b, _ = strconv.Atoi(strings.TrimSpace(hi))
				}
				in = in || code >= a && code <= b
			}
			if set.Contains(code) != in {
				t.Fatalf("%q: Contains(%d) = %v", s, code, !in)
			}
		}
	})
}

// FuzzReadResponse feeds arbitrary bytes to the HTTP check's response
// reader: it must not panic or hang, and it may only pass a response whose
// status line carries an accepted code.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 503 Service Unavailable\r\n\r\n",
		"HTTP/1.0 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 301 Moved\r\nConnection: close\r\nLocation: /\r\n\r\n",
		"SSH-2.0-OpenSSH\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		req := &http.Request{Method: http.MethodGet}
		if head {
			req.Method = http.MethodHead
		}
		reusable, err := readResponse(bufio.NewReader(bytes.NewReader(data)), req, defaultStatusSet, true)
		if err != nil {
			if reusable {
				t.Fatal("a failed read left the connection reusable")
			}
			var se *StatusError
			if errors.As(err, &se) && defaultStatusSet.Contains(se.Code) {
				t.Fatalf("StatusError for accepted code %d", se.Code)
			}
			return
		}
		// The first status line is accepted, or an interim 1xx one that a
		// later accepted status line follows.
		lines := strings.Split(string(data), "\n")
		first, ok := statusCode(lines[0])
		if !ok || !defaultStatusSet.Contains(first) && (first < 100 || first > 199 || first == 101) {
			t.Fatalf("passed a response with status line %q", lines[0])
		}
		if !defaultStatusSet.Contains(first) && !slices.ContainsFunc(lines[1:], func(l string) bool {
			code, ok := statusCode(l)
			return ok && defaultStatusSet.Contains(code)
		}) {
			t.Fatalf("passed %q, where no status line carries an accepted code", data)
		}
	})
}

// statusCode returns the code of an HTTP/1.x status line.
func statusCode(line string) (int, bool) {
	proto, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	code, err := strconv.Atoi(rest[:min(3, len(rest))])
	return code, strings.HasPrefix(proto, "HTTP/") && err == nil
}

// FuzzHTTPRequest checks that every HTTP check that validates serializes
// to exactly one well-formed request carrying what was asked for: no field
// can smuggle a header or a second request.
func FuzzHTTPRequest(f *testing.F) {
	f.Add("GET", "/healthz", "backend.example", "X-Probe", "1", false)
	f.Add("HEAD", "/a?b=c&d", "[::1]:8080", "Accept", "*/*", true)
	f.Add("GET", "/a\r\nX: y", "h", "X", "a\r\nb", false)
	f.Add("POST", "/", "h\r\n\r\nGET / HTTP/1.1", "Host", "evil", false)
	f.Fuzz(func(t *testing.T, method, path, host, key, val string, closeConn bool) {
		c := HTTP{Addr: netipAP("192.0.2.1:80"), Method: method, Path: path, Host: host, DisableKeepAlive: closeConn}
		if key != "" {
			c.Header = http.Header{key: {val}}
		}
		ck := textproto.CanonicalMIMEHeaderKey(key)
		if c.validate() != nil {
			return
		}
		if key != "" && (ck == "Host" || ck == "Content-Length" || ck == "Transfer-Encoding") {
			t.Fatalf("header %q accepted", key)
		}
		p := c.clone().newProber(&shared{}).(*httpProber)
		br := bufio.NewReader(bytes.NewReader(p.raw))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("%+v serialized to %q, which does not parse: %v", c, p.raw, err)
		}
		if _, err := br.Peek(1); err != io.EOF {
			t.Fatalf("%q holds more than one request", p.raw)
		}
		wantMethod, wantPath, wantHost := cmpOr(method, "GET"), cmpOr(path, "/"), cmpOr(host, "192.0.2.1:80")
		if req.Method != wantMethod || req.RequestURI != wantPath || req.Host != wantHost || req.Close != closeConn {
			t.Fatalf("%q parsed as %s %s host %s close %v", p.raw, req.Method, req.RequestURI, req.Host, req.Close)
		}
		if key == "" || ck == "Connection" {
			return
		}
		if got := req.Header.Get(key); got != strings.Trim(val, " \t") {
			t.Fatalf("header %q: sent %q, parsed %q", key, val, got)
		}
	})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FuzzTargetValidate checks that a target that validates is normalized
// into something the scheduler can run.
func FuzzTargetValidate(f *testing.F) {
	f.Add("a", int64(time.Second), int64(0), 0, 0, uint8(0), 0.0)
	f.Add("b", int64(1), int64(-1), -1, 2, uint8(2), 0.5)
	f.Add("", int64(0), int64(0), 0, 0, uint8(9), math.NaN())
	check := Func(func(context.Context) error { return nil })
	f.Fuzz(func(t *testing.T, id string, interval, timeout int64, rise, fall int, initial uint8, jitter float64) {
		tg := Target{ID: id, Check: check, Interval: time.Duration(interval), Timeout: time.Duration(timeout),
			Rise: rise, Fall: fall, Initial: State(initial), Jitter: jitter}
		nt, err := tg.normalize()
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) || ve.Field == "" {
				t.Fatalf("error %v is not a ValidationError naming a field", err)
			}
			return
		}
		if nt.ID != id || nt.Interval < MinInterval || nt.Timeout <= 0 || nt.Rise < 1 || nt.Fall < 1 ||
			!nt.Initial.valid() || !(nt.Jitter >= 0 && nt.Jitter < 1) {
			t.Fatalf("%+v normalized to %+v", tg, nt)
		}
		// The scheduler's arithmetic must stay positive.
		c := New(Options{})
		if d := c.nextDue(nt, time.Unix(0, 0), time.Unix(0, 0)); d.Before(time.Unix(0, 0)) {
			t.Fatalf("next check due in the past: %v", d)
		}
		if d := c.firstDue(time.Unix(0, 0), nt.Interval); d.Before(time.Unix(0, 0)) || !d.Before(time.Unix(0, 0).Add(nt.Interval)) {
			t.Fatalf("first check due at %v for interval %v", d, nt.Interval)
		}
	})
}
