package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmesh/events/benchfig"
	"github.com/google/go-cmp/cmp"
)

// section is a small fabricated section with a baseline, a met and a missed target, and one plot
// of each kind.
func section() benchfig.Section {
	base := benchfig.Of("no-auth POST /v1/posts", "req/s", 5000, 5200, 4800)
	auth := benchfig.Of("authorized POST /v1/posts", "req/s", 4700, 4600, 4750).
		Against(base.Name, "≥ 0.9 × baseline", true)
	p50 := benchfig.Of("auth overhead, p50", "µs", 6, 7, 5.5).Goal("p50 ≤ 5 µs", false)
	p50.Note = "bounded by the replica lookup"
	return benchfig.Section{
		ID:      "1-test",
		Title:   "1. A test section",
		Command: "go test ./x -bench Report",
		Figures: []benchfig.Figure{base, auth, p50},
		Notes:   []string{"What bounds it."},
		Plots: []benchfig.Plot{
			{File: "1-test-line.svg", Title: "Lines", Kind: benchfig.KindLine, XLabel: "users", YLabel: "events/s", LogX: true,
				Series: []benchfig.Series{
					{Name: "full", X: []float64{1e3, 1e4, 1e5}, Y: []float64{9e4, 8e4, 7e4}},
					{Name: "last per subject", X: []float64{1e3, 1e4, 1e5}, Y: []float64{2e5, 1.9e5, 1.8e5}},
				}},
			{File: "1-test-cdf.svg", Title: "Latency", Kind: benchfig.KindCDF, XLabel: "ms", LogX: true,
				Series: []benchfig.Series{
					{Name: "authorized", Y: []float64{1.2, 0.9, 3, 2.2, 1.1}},
					{Name: "no-auth", Y: []float64{1, 0.8, 2.5}},
					{Name: "synchronous", Y: []float64{4, 6, 5.5, 9}},
				}},
			{File: "1-test-bar.svg", Title: "Bars <&>", Kind: benchfig.KindBar, YLabel: "MiB",
				Series: []benchfig.Series{{Name: "account", Y: []float64{30}}, {Name: "blog", Y: []float64{16}}}},
		},
	}
}

func TestRun(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	t.Setenv(benchfig.Out, in)
	if err := benchfig.Save(section()); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(out, plotDir, "old.svg")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("<svg/>"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := run(in, out, machine{CPU: "Test CPU, 2 CPUs", Go: "go1.26", Date: "2026-12-02"}); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "performance.md"))
	if err != nil {
		t.Fatal(err)
	}

	wantRows := []string{
		// the summary
		"| [1-test](#1-a-test-section) | authorized POST /v1/posts | 4,700 req/s | no-auth POST /v1/posts | 0.94× | ≥ 0.9 × baseline | met by 4.4 % |",
		"| [1-test](#1-a-test-section) | auth overhead, p50 | 6.00 µs |  |  | p50 ≤ 5 µs | **missed** by 20.0 % |",
		// the section's table
		"| no-auth POST /v1/posts | 5,000 req/s | 4,800 – 5,200 | 3 |  |  |  |  |",
		"| authorized POST /v1/posts | 4,700 req/s | 4,600 – 4,750 | 3 | no-auth POST /v1/posts | 0.94× | ≥ 0.9 × baseline | met by 4.4 % |",
		"| auth overhead, p50 | 6.00 µs | 5.50 – 7.00 | 3 |  |  | p50 ≤ 5 µs | **missed** by 20.0 % |",
	}
	var rows []string
	for _, l := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(l, "| [1-test]") || strings.Contains(l, " req/s |") || strings.HasPrefix(l, "| auth overhead") {
			rows = append(rows, l)
		}
	}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("table rows (-want +got):\n%s\n%s", diff, md)
	}
	for _, want := range []string{
		"Test CPU, 2 CPUs", "go1.26", "2026-12-02", "make bench", "## 1. A test section", "What bounds it.",
		"- *auth overhead, p50*: bounded by the replica lookup", "![Latency](performance/1-test-cdf.svg)",
		"```sh\ngo test ./x -bench Report\n```",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("performance.md lacks %q:\n%s", want, md)
		}
	}

	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale plot is still there (stat: %v)", err)
	}
	for _, p := range section().Plots {
		svg, err := os.ReadFile(filepath.Join(out, plotDir, p.File))
		if err != nil {
			t.Fatal(err)
		}
		series, err := countSeries(svg)
		if err != nil {
			t.Errorf("%s does not parse as XML: %v\n%s", p.File, err, svg)
			continue
		}
		if series != len(p.Series) {
			t.Errorf("%s draws %d series, want %d", p.File, series, len(p.Series))
		}
	}
}

// countSeries parses svg and counts the polylines and paths that draw a series.
func countSeries(svg []byte) (int, error) {
	d := xml.NewDecoder(bytes.NewReader(svg))
	n := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		se, ok := tok.(xml.StartElement)
		if !ok || (se.Name.Local != "polyline" && se.Name.Local != "path") {
			continue
		}
		for _, a := range se.Attr {
			if a.Name.Local == "class" && a.Value == "series" {
				n++
			}
		}
	}
}

func TestRunRefusesNothing(t *testing.T) {
	if err := run(t.TempDir(), t.TempDir(), machine{}); err == nil {
		t.Error("run with no sections: no error, want one")
	}
}

func TestNumber(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{41230.4, "41,230"}, {1234567, "1,234,567"}, {123.6, "124"}, {45.67, "45.7"}, {3.14159, "3.14"},
		{0.123456, "0.123"}, {0.0042, "0.00420"}, {0, "0"}, {-2500, "-2,500"},
	}
	for _, tt := range tests {
		if got := number(tt.v); got != tt.want {
			t.Errorf("number(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestResult(t *testing.T) {
	s := section()
	tests := []struct {
		name string
		f    benchfig.Figure
		want string
	}{
		{"ratio at least, met", s.Figures[1], "met by 4.4 %"},
		{"at most, missed", s.Figures[2], "**missed** by 20.0 %"},
		{"at most, other unit", benchfig.Of("p99", "µs", 2500).Goal("p99 ≤ 10 ms", true), "met by 75.0 %"},
		{"MiB", benchfig.Of("rss", "MiB", 30).Goal("≤ 40 MiB idle", true), "met by 25.0 %"},
		{"far off", benchfig.Of("p50", "µs", 110).Goal("p50 ≤ 5 µs", false), "**missed**: 22.0× the bound"},
		{"units apart", benchfig.Of("rss", "MiB", 30).Goal("≤ 40 ms", true), "met"},
		{"no bound", benchfig.Of("x", "ms", 1).Goal("as low as it goes", false), "**missed**"},
		{"no target", benchfig.Of("x", "ms", 1), ""},
		{"judged by more than the median", benchfig.Of("slowest", "s", 1, 2, 9).Goal("≤ 3 s", false), "**missed**"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := result(s, tt.f); got != tt.want {
				t.Errorf("result(%q, %q) = %q, want %q", tt.f.Name, tt.f.Target, got, tt.want)
			}
		})
	}
}
