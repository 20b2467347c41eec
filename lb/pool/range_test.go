package pool

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		if !assert.NoError(t, err, "ParseRange(%q)", c.in) {
			continue
		}
		msg := []any{"ParseRange(%q) = %v..%v, want %s..%s", c.in, r.First, r.Last, c.first, c.last}
		assert.Equal(t, a(c.first), r.First, msg...)
		assert.Equal(t, a(c.last), r.Last, msg...)
		assert.Equal(t, c.wantString, r.String(), "ParseRange(%q).String()", c.in)
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
		if !assert.Error(t, err, "ParseRange(%q) succeeded, want error", in) {
			continue
		}
		var ve *ValidationError
		assert.ErrorAs(t, err, &ve, "ParseRange(%q)", in)
		assert.ErrorIs(t, err, ErrInvalid, "ParseRange(%q)", in)
		assert.ErrorContains(t, err, want, "ParseRange(%q)", in)
	}
}

func TestParseRangesNamesIndex(t *testing.T) {
	_, err := ParseRanges("192.0.2.0/24", "2001:db8::/64", "bogus")
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "addresses[2]", ve.Field, "ParseRanges error = %#v", err)
	require.Equal(t, "bogus", ve.Value, "ParseRanges error = %#v", err)
	rs, err := ParseRanges("192.0.2.0/30", "2001:db8::1-2001:db8::2")
	require.NoError(t, err)
	require.Len(t, rs, 2, "ParseRanges = %v", rs)
	require.Equal(t, uint64(4), rs[0].size(), "ParseRanges = %v", rs)
	require.Equal(t, uint64(2), rs[1].size(), "ParseRanges = %v", rs)
}

func TestRangeContainsOverlaps(t *testing.T) {
	r, _ := ParseRange("192.0.2.10-192.0.2.20")
	for ip, want := range map[string]bool{
		"192.0.2.9": false, "192.0.2.10": true, "192.0.2.15": true, "192.0.2.20": true,
		"192.0.2.21": false, "::ffff:192.0.2.15": false, "2001:db8::15": false,
	} {
		assert.Equal(t, want, r.Contains(netip.MustParseAddr(ip)), "Contains(%s)", ip)
	}
	for s, want := range map[string]bool{
		"192.0.2.0/28": true, "192.0.2.20/32": true, "192.0.2.21-192.0.2.30": false,
		"192.0.2.0-192.0.2.9": false, "192.0.2.0/24": true, "2001:db8::/32": false,
	} {
		o, _ := ParseRange(s)
		assert.Equal(t, want, r.Overlaps(o), "Overlaps(%s)", s)
		assert.Equal(t, want, o.Overlaps(r), "%s.Overlaps (symmetry)", s)
	}
}

func TestRangeSize(t *testing.T) {
	for s, want := range map[string]uint64{
		"192.0.2.0/24": 256, "10.0.0.0/8": 1 << 24, "0.0.0.0/0": 1 << 32,
		"2001:db8::/64": ^uint64(0), "2001:db8::/65": 1 << 63, "2001:db8::/120": 256,
	} {
		r, err := ParseRange(s)
		require.NoError(t, err)
		assert.Equal(t, want, r.size(), "size(%s)", s)
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
