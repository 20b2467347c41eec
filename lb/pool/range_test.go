package pool

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		in         string
		first      string
		last       string
		wantString string
	}{
		{"192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"},
		{"192.0.2.7/24", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"}, // masked like net.ParseCIDR
		{"  198.51.100.10-198.51.100.20 ", "198.51.100.10", "198.51.100.20", "198.51.100.10-198.51.100.20"},
		{"198.51.100.10 - 198.51.100.20", "198.51.100.10", "198.51.100.20", "198.51.100.10-198.51.100.20"},
		{"203.0.113.0-203.0.113.127", "203.0.113.0", "203.0.113.127", "203.0.113.0/25"},
		{"203.0.113.5-203.0.113.5", "203.0.113.5", "203.0.113.5", "203.0.113.5/32"},
		{"203.0.113.5", "203.0.113.5", "203.0.113.5", "203.0.113.5/32"},
		{"203.0.113.5/32", "203.0.113.5", "203.0.113.5", "203.0.113.5/32"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"},
		{"2001:db8::10-2001:db8::1f", "2001:db8::10", "2001:db8::1f", "2001:db8::10/124"},
		{"2001:db8::10-2001:db8::20", "2001:db8::10", "2001:db8::20", "2001:db8::10-2001:db8::20"},
		{"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
		{"2001:db8::1/128", "2001:db8::1", "2001:db8::1", "2001:db8::1/128"},
	}
	for _, c := range cases {
		r, err := ParseRange(c.in)
		if err != nil {
			t.Errorf("ParseRange(%q): %v", c.in, err)
			continue
		}
		if r.First != a(c.first) || r.Last != a(c.last) {
			t.Errorf("ParseRange(%q) = %v..%v, want %s..%s", c.in, r.First, r.Last, c.first, c.last)
		}
		if got := r.String(); got != c.wantString {
			t.Errorf("ParseRange(%q).String() = %q, want %q", c.in, got, c.wantString)
		}
	}
}

func TestParseRangeErrors(t *testing.T) {
	cases := map[string]string{
		"":                              "empty",
		"   ":                           "empty",
		"192.0.2.0/33":                  "prefix length",
		"192.0.2.20-192.0.2.10":         "start is after end",
		"192.0.2.1-2001:db8::1":         "different address families",
		"192.0.2.1-":                    "end: missing address",
		"-192.0.2.1":                    "start: missing address",
		"192.0.2.1-192.0.2.5-192.0.2.9": "end:",
		"fe80::1%eth0":                  "zoned",
		"fe80::1%eth0-fe80::2":          "zoned",
		"::ffff:192.0.2.1":              "IPv4-mapped",
		"::ffff:192.0.2.0/120":          "IPv4-mapped",
		"not-an-ip":                     "start:",
		"192.0.2.256":                   "",
		"192.0.2/24":                    "",
	}
	for in, want := range cases {
		_, err := ParseRange(in)
		if err == nil {
			t.Errorf("ParseRange(%q) succeeded, want error", in)
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRange(%q) error %T %v is not a *ValidationError matching ErrInvalid", in, err, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRange(%q) error %q does not mention %q", in, err, want)
		}
	}
}

func TestParseRangesNamesIndex(t *testing.T) {
	_, err := ParseRanges("192.0.2.0/24", "2001:db8::/64", "bogus")
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "addresses[2]" || ve.Value != "bogus" {
		t.Fatalf("ParseRanges error = %#v, want field addresses[2] value bogus", err)
	}
	rs, err := ParseRanges("192.0.2.0/30", "2001:db8::1-2001:db8::2")
	if err != nil || len(rs) != 2 || rs[0].size() != 4 || rs[1].size() != 2 {
		t.Fatalf("ParseRanges = %v, %v", rs, err)
	}
}

func TestRangeContainsOverlaps(t *testing.T) {
	r, _ := ParseRange("192.0.2.10-192.0.2.20")
	for ip, want := range map[string]bool{
		"192.0.2.9": false, "192.0.2.10": true, "192.0.2.15": true, "192.0.2.20": true,
		"192.0.2.21": false, "::ffff:192.0.2.15": false, "2001:db8::15": false,
	} {
		if got := r.Contains(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", ip, got, want)
		}
	}
	for s, want := range map[string]bool{
		"192.0.2.0/28": true, "192.0.2.20/32": true, "192.0.2.21-192.0.2.30": false,
		"192.0.2.0-192.0.2.9": false, "192.0.2.0/24": true, "2001:db8::/32": false,
	} {
		o, _ := ParseRange(s)
		if got := r.Overlaps(o); got != want {
			t.Errorf("Overlaps(%s) = %v, want %v", s, got, want)
		}
		if got := o.Overlaps(r); got != want {
			t.Errorf("%s.Overlaps = %v, want %v (symmetry)", s, got, want)
		}
	}
}

func TestRangeSize(t *testing.T) {
	for s, want := range map[string]uint64{
		"192.0.2.0/24": 256, "10.0.0.0/8": 1 << 24, "0.0.0.0/0": 1 << 32,
		"2001:db8::/64": ^uint64(0), "2001:db8::/65": 1 << 63, "2001:db8::/120": 256,
	} {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.size(); got != want {
			t.Errorf("size(%s) = %d, want %d", s, got, want)
		}
	}
}

// FuzzParseRange checks that parsing never panics, that every accepted
// range is well formed, and that String round-trips.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"192.0.2.0/24", "192.0.2.7/24", "192.0.2.10-192.0.2.20", " 192.0.2.1 - 192.0.2.2 ",
		"2001:db8::/64", "2001:db8::1-2001:db8::ff", "::/0", "0.0.0.0/0", "192.0.2.1",
		"fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4-::1", "-", "/", "1.2.3.4/", "1.2.3.4/-1",
		"2001:db8::-2001:db8::", "255.255.255.255/32",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRange(%q) error %v does not match ErrInvalid", s, err)
			}
			return
		}
		if reason := r.check(); reason != "" {
			t.Fatalf("ParseRange(%q) = %v..%v which is invalid: %s", s, r.First, r.Last, reason)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("range %v does not contain its ends", r)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q via %q = %v, %v", s, r.String(), back, err)
		}
		if p, ok := r.Prefix(); ok {
			if RangeFromPrefix(p) != r {
				t.Fatalf("Prefix() of %v = %v whose range differs", r, p)
			}
		}
		// A one-address set of the range must behave like the range.
		f := newFreeSet([]interval{{toU128(r.First), toU128(r.Last)}}, false)
		if lo, ok := f.lowest(); !ok || fromU128(lo, r.Is4()) != r.First {
			t.Fatalf("free set of %v starts at %v", r, fromU128(lo, r.Is4()))
		}
	})
}
