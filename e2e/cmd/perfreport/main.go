// Command perfreport renders the sections that the report benchmarks saved (events/benchfig) into
// docs/performance.md and its plots:
//
//	go run ./e2e/cmd/perfreport -in tmp/bench -out docs
//
// It writes <out>/performance.md and one SVG per plot in <out>/performance/, after removing the
// SVGs of an earlier run from that folder, so that no picture outlives the figures it was drawn
// from. `make bench` runs it after the benchmarks.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/authmesh/events/benchfig"
)

func main() {
	in := flag.String("in", "tmp/bench", "the folder the benchmarks saved their sections in (BENCH_OUT)")
	out := flag.String("out", "docs", "the folder to write performance.md and performance/*.svg into")
	flag.Parse()
	if err := run(*in, *out, thisMachine(time.Now())); err != nil {
		fmt.Fprintln(os.Stderr, "perfreport:", err)
		os.Exit(1)
	}
}

// plotDir is the folder of the SVGs, beside performance.md.
const plotDir = "performance"

// run renders the sections saved in in into out.
func run(in, out string, m machine) error {
	sections, err := benchfig.Load(in)
	if err != nil {
		return err
	}
	if len(sections) == 0 {
		return fmt.Errorf("no sections in %s: run the report benchmarks first (make bench)", in)
	}
	svgs, err := drawAll(sections)
	if err != nil {
		return err
	}
	dir := filepath.Join(out, plotDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.svg"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	for name, svg := range svgs {
		if err := os.WriteFile(filepath.Join(dir, name), svg, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(out, "performance.md"), report(sections, m), 0o644)
}

// drawAll draws every plot of sections, by file name; two plots may not share a name.
func drawAll(sections []benchfig.Section) (map[string][]byte, error) {
	svgs := map[string][]byte{}
	for _, s := range sections {
		for _, p := range s.Plots {
			if p.File == "" || filepath.Base(p.File) != p.File || !strings.HasSuffix(p.File, ".svg") {
				return nil, fmt.Errorf("section %s: plot %q: the file must be a plain name ending in .svg", s.ID, p.File)
			}
			if _, dup := svgs[p.File]; dup {
				return nil, fmt.Errorf("section %s: plot file %s is used twice", s.ID, p.File)
			}
			svg, err := drawPlot(p)
			if err != nil {
				return nil, fmt.Errorf("section %s: plot %s: %w", s.ID, p.File, err)
			}
			svgs[p.File] = svg
		}
	}
	return svgs, nil
}

// machine is what the report says about where the figures were measured.
type machine struct {
	CPU  string // model and count, "AMD EPYC, 2 CPUs"
	Go   string // the toolchain, "go1.26.8"
	Date string // the day of the run, "2026-12-02"
}

// thisMachine describes the machine perfreport runs on: make bench renders right after measuring.
func thisMachine(now time.Time) machine {
	cpu, err := cpuModel("/proc/cpuinfo")
	if err != nil {
		cpu = fmt.Sprintf("unknown CPU (%v), %d CPUs", err, runtime.NumCPU())
	}
	return machine{CPU: cpu, Go: runtime.Version(), Date: now.UTC().Format(time.DateOnly)}
}

// cpuModel reads the model name and the number of processors from a /proc/cpuinfo.
func cpuModel(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	model, n := "", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(val)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if n == 0 {
		return "", errors.New("no processor listed")
	}
	if model == "" {
		model = "unknown model"
	}
	return fmt.Sprintf("%s, %d CPUs", model, n), nil
}
