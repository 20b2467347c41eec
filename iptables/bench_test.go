package iptables

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// bigSync returns a kube-proxy-shaped Sync of about n rules: the chains of
// serviceSync(IPv4, 1000, 10) (31k rules) repeated under distinct names,
// sharing their rule slices so that a million rules fit in little memory.
// Rendering cost does not depend on the sharing.
func bigSync(n int) *Sync {
	base := serviceSync(IPv4, 1000, 10)
	nat := base.Tables[0]
	per := 0
	for _, c := range nat.Chains {
		per += len(c.Rules)
	}
	copies := (n + per - 1) / per
	out := TableSync{Table: TableNAT, Chains: make([]Chain, 0, copies*len(nat.Chains))}
	for k := 0; k < copies; k++ {
		for _, c := range nat.Chains {
			name := c.Name
			if k > 0 {
				name = ChainName(fmt.Sprintf("%.22s-%d", c.Name, k))
			}
			out.Chains = append(out.Chains, Chain{Name: name, Rules: c.Rules})
		}
	}
	return &Sync{Tables: []TableSync{out}}
}

// BenchmarkRender renders about a million rules into a reused Buffer: the
// per-sync cost of the engine (validation included).
func BenchmarkRender(b *testing.B) {
	s := bigSync(1_000_000)
	rules := s.NumRules()
	buf := NewBuffer(IPv4)
	if err := s.Render(buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf.Reset()
		if err := s.Render(buf); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := b.Elapsed()
	b.ReportMetric(float64(rules), "rules/op")
	b.ReportMetric(float64(rules)*float64(b.N)/elapsed.Seconds(), "rules/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N)/float64(rules), "ns/rule")
}

// renderByArgs is the usual alternative to a line buffer: each rule as an
// argument list (what go-iptables callers build), joined into a string,
// written to a bytes.Buffer. It needs quoting too, done the same way.
func renderByArgs(s *Sync, f Family, out *bytes.Buffer) error {
	for _, ts := range s.Tables {
		out.WriteString("*" + string(ts.Table) + "\n")
		for _, c := range ts.Chains {
			out.WriteString(":" + string(c.Name) + " - [0:0]\n")
		}
		for _, c := range ts.Chains {
			for i := range c.Rules {
				args, err := c.Rules[i].Args(f)
				if err != nil {
					return err
				}
				for j, a := range args {
					if strings.ContainsAny(a, " \"'\\") || a == "" {
						args[j] = string(appendQuoted(nil, a))
					}
				}
				out.WriteString("-A " + string(c.Name) + " " + strings.Join(args, " ") + "\n")
			}
		}
		out.WriteString("COMMIT\n")
	}
	return nil
}

// BenchmarkRenderVsArgs renders the same 100k rules with the line buffer
// and with per-rule argument lists in the same iterations, and reports how
// many times faster the buffer is.
func BenchmarkRenderVsArgs(b *testing.B) {
	s := bigSync(100_000)
	rules := float64(s.NumRules())
	buf := NewBuffer(IPv4)
	var alt bytes.Buffer
	var ours, theirs time.Duration
	for b.Loop() {
		t0 := time.Now()
		buf.Reset()
		if err := s.Render(buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		alt.Reset()
		if err := renderByArgs(s, IPv4, &alt); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		ours += t1.Sub(t0)
		theirs += t2.Sub(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Nanoseconds())/n/rules, "buffer-ns/rule")
	b.ReportMetric(float64(theirs.Nanoseconds())/n/rules, "args-ns/rule")
	b.ReportMetric(float64(theirs)/float64(ours), "speedup")
}

// BenchmarkRenderServices renders a kube-proxy-shaped ruleset of 10k
// services with 10 endpoints each (about 310k rules; no sharing), the
// shape the nat package will produce.
func BenchmarkRenderServices10kx10(b *testing.B) {
	s := serviceSync(IPv4, 10000, 10)
	rules := s.NumRules()
	buf := NewBuffer(IPv4)
	if err := s.Render(buf); err != nil { // grow the buffer once, as a long-running syncer does
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := s.Render(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rules), "rules/op")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
}

// BenchmarkParse parses iptables-save text of about 300k rules into typed
// rules, and, in the same iterations, lists only its chain names (what
// ListChains does), reporting the cost of the full parse relative to the
// scan.
func BenchmarkParse(b *testing.B) {
	s := serviceSync(IPv4, 10000, 10)
	buf := NewBuffer(IPv4)
	if err := s.Render(buf); err != nil {
		b.Fatal(err)
	}
	text := buf.Bytes()
	rules := float64(s.NumRules())
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	var parse, scan time.Duration
	for b.Loop() {
		t0 := time.Now()
		d, err := ParseDump(IPv4, text)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		names := ListChainNames(text, DefaultPrefix)
		t2 := time.Now()
		if want := len(d.Tables[0].Chains) + len(d.Tables[1].Chains); len(names) != want {
			b.Fatalf("%d names, %d chains", len(names), want)
		}
		parse += t1.Sub(t0)
		scan += t2.Sub(t1)
	}
	n := float64(b.N)
	b.ReportMetric(rules, "rules/op")
	b.ReportMetric(rules*n/parse.Seconds(), "rules/s")
	b.ReportMetric(float64(parse.Nanoseconds())/n/rules, "parse-ns/rule")
	b.ReportMetric(float64(parse)/float64(scan), "parse/scan")
}
