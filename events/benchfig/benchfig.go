// Package benchfig records the figures of the project's benchmarks, for docs/performance.md.
//
// A benchmark measures, then saves a Section: its figures (each a median with its spread, beside
// the baseline it is held to, measured in the same run) and the data of its plots. Save writes the
// section as JSON into the directory named by BENCH_OUT, and does nothing when BENCH_OUT is unset,
// so the brief runs of `make test` leave no files. `make bench` sets BENCH_OUT, runs every
// benchmark at full scale, then renders the sections into docs/performance.md and its SVG plots
// (e2e/cmd/perfreport).
//
// Scale tells a benchmark how big to run: ScaleSmoke for `make test` (seconds, to keep the code
// from rotting), ScaleFull for `make bench`.
package benchfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// Figure is one measured figure.
type Figure struct {
	// Name says what was measured ("authorized GET /v1/orders, p50 latency").
	Name string `json:"name"`
	// Unit of Median, Min and Max ("µs", "ms", "req/s", "events/s", "MiB", "allocs").
	Unit string `json:"unit"`
	// Median, Min and Max of the samples (or the one measurement, in all three).
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Runs is how many samples Median, Min and Max summarise.
	Runs int `json:"runs"`
	// Baseline names the figure of the same section this one is compared with, if any; the report
	// shows Median / baseline's Median as the ratio.
	Baseline string `json:"baseline,omitempty"`
	// Target states the target ("≥ 0.9 × baseline", "p50 ≤ 5 µs"); empty when there is none.
	Target string `json:"target,omitempty"`
	// Met says whether the target was met, when there is one.
	Met *bool `json:"met,omitempty"`
	// Note explains what bounds the figure, or how it was measured, in a sentence.
	Note string `json:"note,omitempty"`
}

// Series is one line (or one distribution) of a plot.
type Series struct {
	Name string    `json:"name"`
	X    []float64 `json:"x"`
	Y    []float64 `json:"y"`
}

// Plot kinds.
const (
	// KindLine draws each series as a line through its points (X, Y).
	KindLine = "line"
	// KindCDF draws each series' Y values as a cumulative distribution (X unused): the share of
	// samples at or below each value.
	KindCDF = "cdf"
	// KindBar draws one bar per series, of height Y[0].
	KindBar = "bar"
)

// Plot is the data of one picture.
type Plot struct {
	// File is the SVG's file name, unique across sections ("auth-latency.svg").
	File   string   `json:"file"`
	Title  string   `json:"title"`
	Kind   string   `json:"kind"`
	XLabel string   `json:"x_label"`
	YLabel string   `json:"y_label"`
	LogX   bool     `json:"log_x,omitempty"`
	Series []Series `json:"series"`
}

// Section is what one benchmark reports: a section of docs/performance.md.
type Section struct {
	// ID names the JSON file and orders the sections ("1-auth").
	ID    string `json:"id"`
	Title string `json:"title"`
	// Command reproduces the section's figures.
	Command string   `json:"command"`
	Figures []Figure `json:"figures"`
	Plots   []Plot   `json:"plots,omitempty"`
	// Notes are paragraphs of the section: what was found, what bounds a figure.
	Notes []string `json:"notes,omitempty"`
}

// Out is the environment variable that names the directory Save writes into.
const Out = "BENCH_OUT"

// Save writes s as JSON to $BENCH_OUT/<s.ID>.json; it does nothing when BENCH_OUT is unset.
func Save(s Section) error {
	dir := os.Getenv(Out)
	if dir == "" {
		return nil
	}
	if s.ID == "" {
		return errors.New("benchfig: section without an ID")
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("benchfig: encode %s: %w", s.ID, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("benchfig: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, s.ID+".json"), data, 0o644)
}

// Load reads every section saved in dir, ordered by ID.
func Load(dir string) ([]Section, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var out []Section
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s Section
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("benchfig: %s: %w", f, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Of returns the figure named name, unit unit, summarising samples (at least one).
func Of(name, unit string, samples ...float64) Figure {
	if len(samples) == 0 {
		return Figure{Name: name, Unit: unit, Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return Figure{Name: name, Unit: unit, Median: Quantile(s, 0.5), Min: s[0], Max: s[len(s)-1], Runs: len(s)}
}

// Against returns f compared with the figure named baseline, with its target and whether it was
// met.
func (f Figure) Against(baseline, target string, met bool) Figure {
	f.Baseline, f.Target, f.Met = baseline, target, &met
	return f
}

// Goal returns f with a target of its own (no baseline) and whether it was met.
func (f Figure) Goal(target string, met bool) Figure {
	f.Target, f.Met = target, &met
	return f
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of sorted, interpolating between neighbours; NaN
// when sorted is empty.
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// Scales of a benchmark run.
const (
	ScaleSmoke = "smoke"
	ScaleFull  = "full"
)

// Scale is the scale of this run: ScaleFull when BENCH_SCALE is "full", else ScaleSmoke.
func Scale() string {
	if os.Getenv("BENCH_SCALE") == ScaleFull {
		return ScaleFull
	}
	return ScaleSmoke
}

// Full reports whether this run is at full scale.
func Full() bool { return Scale() == ScaleFull }
