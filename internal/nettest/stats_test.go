package nettest

import (
	"errors"
	"math"
	"net/netip"
	"testing"
)

func TestGammaQMatchesChiSquareTables(t *testing.T) {
	// Critical values of the chi-square distribution from standard tables:
	// the survival function at these points is the significance level.
	cases := []struct {
		df   int
		stat float64
		p    float64
	}{
		{1, 3.841459, 0.05},
		{1, 6.634897, 0.01},
		{2, 9.210340, 0.01},
		{3, 11.344867, 0.01},
		{5, 11.070498, 0.05},
		{9, 21.665994, 0.01},
		{10, 23.209251, 0.01},
		{99, 134.642, 0.01},
		{4, 0.297110, 0.99},
	}
	for _, c := range cases {
		got := gammaQ(float64(c.df)/2, c.stat/2)
		if math.Abs(got-c.p) > 1e-5 {
			t.Errorf("Q(df=%d, %v) = %.8f, want %.8f", c.df, c.stat, got, c.p)
		}
	}
	// With two degrees of freedom the survival function is exp(-x/2).
	for _, x := range []float64{0.1, 1, 5, 20, 60} {
		if got, want := gammaQ(1, x/2), math.Exp(-x/2); math.Abs(got-want) > 1e-12*math.Max(1, want) {
			t.Errorf("Q(1, %v/2) = %g, want %g", x, got, want)
		}
	}
}

func TestChiSquare(t *testing.T) {
	even := map[string]float64{"a": 1, "b": 1, "c": 1}
	r, err := ChiSquare(map[string]int{"a": 1000, "b": 1000, "c": 1000}, even)
	if err != nil || r.Stat != 0 || r.DF != 2 || r.P != 1 {
		t.Fatalf("perfect split: %+v, %v", r, err)
	}
	// 1000/1000/1300: chi2 = 2*(100^2/1100) + 200^2/1100 = 54.5
	r, err = ChiSquare(map[string]int{"a": 1000, "b": 1000, "c": 1300}, even)
	if err != nil || math.Abs(r.Stat-60000.0/1100) > 1e-9 || r.P > 1e-10 {
		t.Fatalf("skewed split: %+v, %v", r, err)
	}
	// Weights 1:2:3 with counts exactly proportional.
	r, err = ChiSquare(map[string]int{"a": 500, "b": 1000, "c": 1500}, map[string]float64{"a": 1, "b": 2, "c": 3})
	if err != nil || r.Stat > 1e-9 {
		t.Fatalf("weighted split: %+v, %v", r, err)
	}
	// A backend that got nothing still counts as a category.
	r, err = ChiSquare(map[string]int{"a": 10, "b": 10}, even)
	if err != nil || r.DF != 2 || r.P > 0.01 {
		t.Fatalf("missing category: %+v, %v", r, err)
	}
	if _, err := ChiSquare(map[string]int{"a": 5, "x": 1}, even); err == nil {
		t.Error("traffic to an unweighted backend must be an error")
	}
	if _, err := ChiSquare(map[string]int{"a": 5}, map[string]float64{"a": 1, "b": 0}); err == nil {
		t.Error("a zero weight must be an error")
	}
	if _, err := ChiSquare(nil, even); err == nil {
		t.Error("no observations must be an error")
	}
}

func TestParseReply(t *testing.T) {
	r, err := ParseReply("be1 [2001:db8::1]:4242\n")
	if err != nil || r.Backend != "be1" || r.Source.String() != "[2001:db8::1]:4242" {
		t.Fatalf("got %+v, %v", r, err)
	}
	r, err = ParseReply("be2 192.0.2.1:80")
	if err != nil || r.Source.Addr().String() != "192.0.2.1" {
		t.Fatalf("got %+v, %v", r, err)
	}
	for _, bad := range []string{"", "be1", "be1 nonsense", " 192.0.2.1:80"} {
		if _, err := ParseReply(bad); err == nil {
			t.Errorf("ParseReply(%q) succeeded", bad)
		}
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add("be1 192.0.2.1:80\n")
	f.Add("x [::1]:1")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReply(s)
		if err != nil {
			return
		}
		if r.Backend == "" || !r.Source.IsValid() {
			t.Fatalf("ParseReply(%q) = %+v without error", s, r)
		}
	})
}

func TestNthAddr(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	if a := nthAddr(p, 1); a.String() != "192.0.2.1" {
		t.Errorf("1st = %v", a)
	}
	if a := nthAddr(p, 254); a.String() != "192.0.2.254" {
		t.Errorf("254th = %v", a)
	}
	if a := nthAddr(p, 255); a.IsValid() {
		t.Errorf("the broadcast address must not be handed out, got %v", a)
	}
	if a := nthAddr(netip.MustParsePrefix("2001:db8::/64"), 300); a.String() != "2001:db8::12c" {
		t.Errorf("300th v6 = %v", a)
	}
}

func TestTopologyValidation(t *testing.T) {
	cases := map[string]Topology{
		"no hosts":        {},
		"long host name":  {Hosts: []HostSpec{{Name: "a-very-long-hostname"}}},
		"bad host name":   {Hosts: []HostSpec{{Name: "Bad_Name"}}},
		"duplicate host":  {Hosts: []HostSpec{{Name: "a"}, {Name: "a"}}},
		"unknown segment": {Hosts: []HostSpec{{Name: "a", Segments: []string{"nope"}}}},
		"dup segment":     {Segments: []Segment{{Name: "lan"}, {Name: "lan"}}, Hosts: []HostSpec{{Name: "a"}}},
		"v6 as v4":        {Segments: []Segment{{Name: "lan", Prefix4: netip.MustParsePrefix("2001:db8::/64")}}, Hosts: []HostSpec{{Name: "a"}}},
		"too many hosts":  {Segments: []Segment{{Name: "tiny", Prefix4: netip.MustParsePrefix("192.0.2.0/30")}}, Hosts: []HostSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}}},
	}
	for name, topo := range cases {
		_, err := Build(topo)
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: got %v, want *ValidationError", name, err)
		}
	}
}
