package main

import (
	"fmt"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/authmesh/events/benchfig"
)

// report returns docs/performance.md: the intro, the summary of every target, then one part per
// section in the order of their IDs.
func report(sections []benchfig.Section, m machine) []byte {
	var b strings.Builder
	b.WriteString("# Performance\n\n")
	b.WriteString("Written by `make bench` (e2e/cmd/perfreport) from the figures that the report benchmarks " +
		"saved in one run; do not edit by hand. Each figure is the median of its runs, with the " +
		"smallest and the largest run beside it. A baseline is measured in the same run as the figure " +
		"held to it, and the ratio is the figure's median over the baseline's. A target met is shown " +
		"with its margin, one missed with its shortfall; a section says what bounds its figures.\n\n")
	fmt.Fprintf(&b, "Measured on %s, with Go %s, on %s. To measure again and rewrite this page:\n\n", m.CPU, m.Go, m.Date)
	b.WriteString("```sh\nmake bench\n```\n\n")
	b.WriteString("Figures taken while other work shares the machine are only indicative.\n\n")

	writeSummary(&b, sections)
	for _, s := range sections {
		writeSection(&b, s)
	}
	return []byte(b.String())
}

// writeSummary writes the table of every figure that has a target.
func writeSummary(b *strings.Builder, sections []benchfig.Section) {
	b.WriteString("## Targets\n\n")
	b.WriteString("| Section | Figure | Median | Baseline | Ratio | Target | Result |\n")
	b.WriteString("| --- | --- | --: | --- | --: | --- | --- |\n")
	rows := 0
	for _, s := range sections {
		for _, f := range s.Figures {
			if f.Target == "" && f.Met == nil {
				continue
			}
			rows++
			link := fmt.Sprintf("[%s](#%s)", cell(s.ID), anchor(title(s)))
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", link, cell(f.Name), withUnit(f.Median, f.Unit),
				cell(f.Baseline), ratioCell(s, f), cell(f.Target), result(s, f))
		}
	}
	if rows == 0 {
		b.WriteString("| | no figure has a target | | | | | |\n")
	}
	b.WriteString("\n")
}

// writeSection writes one section: its figures, their notes, the section's notes, its plots and
// the command that measures it again.
func writeSection(b *strings.Builder, s benchfig.Section) {
	fmt.Fprintf(b, "## %s\n\n", title(s))
	if len(s.Figures) > 0 {
		b.WriteString("| Figure | Median | Min – max | Runs | Baseline | Ratio | Target | Result |\n")
		b.WriteString("| --- | --: | --: | --: | --- | --: | --- | --- |\n")
		for _, f := range s.Figures {
			fmt.Fprintf(b, "| %s | %s | %s | %d | %s | %s | %s | %s |\n", cell(f.Name), withUnit(f.Median, f.Unit),
				spread(f), f.Runs, cell(f.Baseline), ratioCell(s, f), cell(f.Target), result(s, f))
		}
		b.WriteString("\n")
		for _, f := range s.Figures {
			if f.Note != "" {
				fmt.Fprintf(b, "- *%s*: %s\n", f.Name, f.Note)
			}
		}
		if hasFigureNotes(s) {
			b.WriteString("\n")
		}
	}
	for _, n := range s.Notes {
		b.WriteString(strings.TrimSpace(n) + "\n\n")
	}
	for _, p := range s.Plots {
		fmt.Fprintf(b, "![%s](%s)\n\n", p.Title, path.Join(plotDir, p.File))
	}
	if s.Command != "" {
		fmt.Fprintf(b, "Measured by:\n\n```sh\n%s\n```\n\n", s.Command)
	}
}

func hasFigureNotes(s benchfig.Section) bool {
	for _, f := range s.Figures {
		if f.Note != "" {
			return true
		}
	}
	return false
}

// title is a section's heading: its title, or its ID when it has none.
func title(s benchfig.Section) string {
	if s.Title != "" {
		return s.Title
	}
	return s.ID
}

// anchor is the fragment GitHub gives a heading: lower case, punctuation dropped, spaces as
// hyphens.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// cell makes s safe inside a table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

// baseline returns the figure of s that f is compared with.
func baseline(s benchfig.Section, f benchfig.Figure) (benchfig.Figure, bool) {
	if f.Baseline == "" {
		return benchfig.Figure{}, false
	}
	for _, g := range s.Figures {
		if g.Name == f.Baseline {
			return g, true
		}
	}
	return benchfig.Figure{}, false
}

// ratio is f's median over its baseline's, or NaN when there is none.
func ratio(s benchfig.Section, f benchfig.Figure) float64 {
	g, ok := baseline(s, f)
	if !ok || g.Median == 0 {
		return math.NaN()
	}
	return f.Median / g.Median
}

func ratioCell(s benchfig.Section, f benchfig.Figure) string {
	if f.Baseline == "" {
		return ""
	}
	r := ratio(s, f)
	if math.IsNaN(r) {
		return "no such baseline"
	}
	if r >= 0.1 && r < 10 {
		return strconv.FormatFloat(r, 'f', 2, 64) + "×" // ratios read best as 0.94×, 2.31×
	}
	return number(r) + "×"
}

// result says whether f met its target, and by how much when the target's bound can be read:
// "met by 4.4 %", "**missed** by 20.0 %", "**missed**: 22× the bound".
func result(s benchfig.Section, f benchfig.Figure) string {
	if f.Met == nil {
		return ""
	}
	verdict := "met"
	if !*f.Met {
		verdict = "**missed**"
	}
	r, atLeast, ok := toBound(s, f)
	// When the median's side of the bound disagrees with the verdict, the benchmark judged by more
	// than the median (every run, the slowest one): its verdict stands alone.
	if !ok || within(r, atLeast) != *f.Met {
		return verdict
	}
	if !*f.Met && (r >= 2 || r <= 0.5) {
		return fmt.Sprintf("%s: %s× the bound", verdict, number(r))
	}
	return fmt.Sprintf("%s by %.1f %%", verdict, math.Abs(r-1)*100)
}

// within reports whether a figure at r times its bound meets it.
func within(r float64, atLeast bool) bool {
	if atLeast {
		return r >= 1
	}
	return r <= 1
}

// bound is the number a target holds a figure to, read from its text ("≥ 0.9 × baseline",
// "p50 ≤ 5 µs", "≤ 100 MiB").
type bound struct {
	atLeast bool    // ≥ (else ≤)
	value   float64 // in unit, or a ratio when ofBaseline
	ratio   bool    // the bound is on the ratio to the baseline ("× baseline")
	unit    string  // the bound's unit; empty when it is the figure's
}

var boundRE = regexp.MustCompile(`(≥|≤|>=|<=)\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*(×|x\b)?\s*([^\s,;()]*)`)

// parseBound reads the first bound of a target's text.
func parseBound(target string) (bound, bool) {
	m := boundRE.FindStringSubmatch(target)
	if m == nil {
		return bound{}, false
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(m[2], ",", ""), 64)
	if err != nil {
		return bound{}, false
	}
	b := bound{atLeast: m[1] == "≥" || m[1] == ">=", value: v, ratio: m[3] != ""}
	if !b.ratio {
		b.unit = m[4]
	}
	return b, true
}

// toBound is f over its target's bound (or its ratio to the baseline over the bound, when the
// bound is on the ratio). It is unknown when the target cannot be read or its unit is not the
// figure's.
func toBound(s benchfig.Section, f benchfig.Figure) (r float64, atLeast, ok bool) {
	b, ok := parseBound(f.Target)
	if !ok || b.value == 0 {
		return 0, false, false
	}
	v := f.Median
	if b.ratio {
		v = ratio(s, f)
	} else if b.unit != "" && b.unit != f.Unit {
		from, okFrom := unitScale[b.unit]
		to, okTo := unitScale[f.Unit]
		if !okFrom || !okTo || from.dim != to.dim {
			return 0, false, false
		}
		b.value *= from.factor / to.factor
	}
	if math.IsNaN(v) {
		return 0, false, false
	}
	return v / b.value, b.atLeast, true
}

// unitScale converts the units of time and size a target may name into the figure's.
var unitScale = map[string]struct {
	dim    string
	factor float64
}{
	"ns": {"time", 1e-9}, "µs": {"time", 1e-6}, "us": {"time", 1e-6}, "ms": {"time", 1e-3}, "s": {"time", 1},
	"B": {"size", 1}, "KiB": {"size", 1 << 10}, "MiB": {"size", 1 << 20}, "GiB": {"size", 1 << 30},
}

func withUnit(v float64, unit string) string {
	if unit == "" {
		return number(v)
	}
	return number(v) + " " + unit
}

// spread is a figure's min – max, or nothing for a single measurement.
func spread(f benchfig.Figure) string {
	if f.Runs <= 1 || f.Min == f.Max {
		return ""
	}
	return number(f.Min) + " – " + number(f.Max)
}

// number prints v with as many digits as a reader can use: whole numbers with thousands
// separators from 100 up, three significant digits below.
func number(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case a >= 100:
		return thousands(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	case a >= 0.001:
		return strconv.FormatFloat(v, 'f', 2-int(math.Floor(math.Log10(a))), 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// thousands puts commas between the groups of three digits of an integer's digits.
func thousands(digits string) string {
	sign := ""
	if strings.HasPrefix(digits, "-") {
		sign, digits = "-", digits[1:]
	}
	var b strings.Builder
	for i, r := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return sign + b.String()
}
