package main

import (
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/authmesh/events/benchfig"
)

// The plots are plain SVG written by hand: axes with ticks, a grid, one polyline (line, CDF) or
// one bar per series, and a legend under the plot. Readable, with no dependency.

// Geometry, in SVG user units.
const (
	width        = 760
	plotHeight   = 340 // the height of the area inside the axes
	marginLeft   = 76
	marginRight  = 24
	marginTop    = 44
	axisSpace    = 52 // below the plot area: tick labels and the x label
	legendRow    = 18
	charWidth    = 7 // a rough width of one character at the font size, for layout
	maxPoints    = 400
	fontSize     = 12
	tickLength   = 5
	legendSample = 28
	lineHeight   = 14
)

// The colours (Tableau 10, which stay apart for most colour-blind readers) and dash patterns:
// the nth series gets both, so that series stay apart in grey too.
var (
	colours = []string{"#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"}
	dashes  = []string{"", "7 4", "2 3", "9 3 2 3", "4 4", "1 5"}
)

func colour(i int) string { return colours[i%len(colours)] }
func dash(i int) string   { return dashes[i%len(dashes)] }

// drawPlot returns the SVG of p.
func drawPlot(p benchfig.Plot) ([]byte, error) {
	if len(p.Series) == 0 {
		return nil, errors.New("no series")
	}
	switch p.Kind {
	case benchfig.KindLine:
		lines := make([][]point, len(p.Series))
		for i, s := range p.Series {
			if len(s.X) != len(s.Y) {
				return nil, fmt.Errorf("series %q: %d x values for %d y values", s.Name, len(s.X), len(s.Y))
			}
			for j := range s.X {
				lines[i] = append(lines[i], point{s.X[j], s.Y[j]})
			}
		}
		return drawLines(p, lines, false)
	case benchfig.KindCDF:
		lines := make([][]point, len(p.Series))
		for i, s := range p.Series {
			lines[i] = cdf(s.Y)
		}
		return drawLines(p, lines, true)
	case benchfig.KindBar:
		return drawBars(p)
	}
	return nil, fmt.Errorf("unknown kind %q (want %s, %s or %s)", p.Kind, benchfig.KindLine, benchfig.KindCDF, benchfig.KindBar)
}

type point struct{ x, y float64 }

// cdf returns the cumulative distribution of samples: for each value, the share of samples at or
// below it, at most maxPoints points (evenly spaced in rank, the largest kept).
func cdf(samples []float64) []point {
	s := slices.Clone(samples)
	s = slices.DeleteFunc(s, func(v float64) bool { return math.IsNaN(v) })
	slices.Sort(s)
	n := len(s)
	step := max(1, n/maxPoints)
	var pts []point
	for i := 0; i < n; i += step {
		pts = append(pts, point{s[i], float64(i+1) / float64(n)})
	}
	if n > 0 && pts[len(pts)-1].y < 1 {
		pts = append(pts, point{s[n-1], 1})
	}
	return pts
}

// axis maps values onto a length of the picture, linearly or by their logarithm.
type axis struct {
	lo, hi float64
	log    bool
	ticks  []float64
}

// pos returns where v lies on the axis, from 0 (lo) to 1 (hi).
func (a axis) pos(v float64) float64 {
	if a.log {
		return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// linearAxis covers lo..hi with round ticks; it starts at zero when every value is positive and
// zero is not far off, so that heights compare.
func linearAxis(lo, hi float64, fromZero bool) axis {
	if fromZero && lo > 0 {
		lo = 0
	}
	if hi <= lo {
		hi = lo + math.Max(1, math.Abs(lo))
	}
	step := niceStep((hi - lo) / 5)
	a := axis{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step}
	for v := a.lo; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, cleanZero(v, step))
	}
	return a
}

func cleanZero(v, step float64) float64 {
	if math.Abs(v) < step*1e-9 {
		return 0
	}
	return v
}

// niceStep returns 1, 2 or 5 times a power of ten, at least raw.
func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// logAxis covers lo..hi (both positive) with whole decades, ticking each decade, and 2 and 5
// within when there are few decades.
func logAxis(lo, hi float64) axis {
	a := axis{lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi))), log: true}
	if a.hi <= a.lo {
		a.hi = a.lo * 10
	}
	decades := int(math.Round(math.Log10(a.hi / a.lo)))
	for d := a.lo; d <= a.hi*1.0001; d *= 10 {
		a.ticks = append(a.ticks, d)
		if decades <= 3 && d < a.hi/2 {
			a.ticks = append(a.ticks, 2*d, 5*d)
		}
	}
	return a
}

// canvas is an SVG being written.
type canvas struct {
	b      strings.Builder
	height int
}

func newCanvas(title string, height int) *canvas {
	c := &canvas{height: height}
	fmt.Fprintf(&c.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`+"\n",
		width, height, width, height, fontSize)
	fmt.Fprintf(&c.b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	c.text(width/2, 24, "middle", title, `font-size="15" font-weight="bold"`)
	return c
}

func (c *canvas) text(x, y float64, anchor, s string, attrs ...string) {
	fmt.Fprintf(&c.b, `<text x="%s" y="%s" text-anchor="%s"`, f1(x), f1(y), anchor)
	for _, a := range attrs {
		c.b.WriteString(" " + a)
	}
	c.b.WriteString(">")
	_ = xml.EscapeText(&c.b, []byte(s)) // a strings.Builder does not fail
	c.b.WriteString("</text>\n")
}

func (c *canvas) line(x1, y1, x2, y2 float64, stroke string) {
	fmt.Fprintf(&c.b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`+"\n", f1(x1), f1(y1), f1(x2), f1(y2), stroke)
}

func (c *canvas) bytes() []byte {
	c.b.WriteString("</svg>\n")
	return []byte(c.b.String())
}

// area is the plot's rectangle inside the axes.
type area struct{ left, top, right, bottom float64 }

func (r area) x(a axis, v float64) float64 { return r.left + a.pos(v)*(r.right-r.left) }
func (r area) y(a axis, v float64) float64 { return r.bottom - a.pos(v)*(r.bottom-r.top) }

// axes draws the grid, the ticks and their labels, the frame, and the axis labels. A nil xs is a
// bar chart's: no x ticks.
func (c *canvas) axes(r area, xs *axis, ys axis, xLabel, yLabel string) {
	for _, t := range ys.ticks {
		y := r.y(ys, t)
		c.line(r.left, y, r.right, y, "#e4e4e4")
		c.line(r.left-tickLength, y, r.left, y, "#333")
		c.text(r.left-tickLength-3, y+4, "end", tick(t))
	}
	if xs != nil {
		for _, t := range xs.ticks {
			x := r.x(*xs, t)
			c.line(x, r.top, x, r.bottom, "#eeeeee")
			c.line(x, r.bottom, x, r.bottom+tickLength, "#333")
			c.text(x, r.bottom+tickLength+13, "middle", tick(t))
		}
	}
	fmt.Fprintf(&c.b, `<rect x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#333"/>`+"\n",
		f1(r.left), f1(r.top), f1(r.right-r.left), f1(r.bottom-r.top))
	if xLabel != "" {
		c.text((r.left+r.right)/2, r.bottom+38, "middle", xLabel)
	}
	if yLabel != "" {
		cy := (r.top + r.bottom) / 2
		c.text(18, cy, "middle", yLabel, fmt.Sprintf(`transform="rotate(-90 18 %s)"`, f1(cy)))
	}
}

// legend draws one entry per series under the plot, wrapping into rows, from the top y.
func (c *canvas) legend(names []string, top float64, bars bool) {
	x, y := float64(marginLeft), top
	for i, name := range names {
		w := float64(legendSample + 8 + charWidth*len([]rune(name)) + 18)
		if x+w > width-marginRight && x > marginLeft {
			x, y = marginLeft, y+legendRow
		}
		if bars {
			fmt.Fprintf(&c.b, `<rect x="%s" y="%s" width="%d" height="10" fill="%s"/>`+"\n", f1(x), f1(y-9), legendSample, colour(i))
		} else {
			fmt.Fprintf(&c.b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2.5"%s/>`+"\n",
				f1(x), f1(y-4), f1(x+legendSample), f1(y-4), colour(i), dashAttr(i))
		}
		c.text(x+legendSample+6, y, "start", name)
		x += w
	}
}

// legendRows is how many rows legend takes for names.
func legendRows(names []string) int {
	rows, x := 1, float64(marginLeft)
	for _, name := range names {
		w := float64(legendSample + 8 + charWidth*len([]rune(name)) + 18)
		if x+w > width-marginRight && x > marginLeft {
			rows, x = rows+1, marginLeft
		}
		x += w
	}
	return rows
}

func dashAttr(i int) string {
	if d := dash(i); d != "" {
		return fmt.Sprintf(` stroke-dasharray="%s"`, d)
	}
	return ""
}

func names(p benchfig.Plot) []string {
	out := make([]string, len(p.Series))
	for i, s := range p.Series {
		out[i] = s.Name
	}
	return out
}

// drawLines draws one polyline per series; a CDF's y axis is the share, 0 to 1.
func drawLines(p benchfig.Plot, lines [][]point, isCDF bool) ([]byte, error) {
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for i := range lines {
		lines[i] = slices.DeleteFunc(lines[i], func(pt point) bool {
			return math.IsNaN(pt.x) || math.IsNaN(pt.y) || math.IsInf(pt.x, 0) || math.IsInf(pt.y, 0) || (p.LogX && pt.x <= 0)
		})
		for _, pt := range lines[i] {
			xlo, xhi = math.Min(xlo, pt.x), math.Max(xhi, pt.x)
			ylo, yhi = math.Min(ylo, pt.y), math.Max(yhi, pt.y)
		}
	}
	if math.IsInf(xlo, 1) {
		return nil, errors.New("no point to draw")
	}
	var xs, ys axis
	if p.LogX {
		xs = logAxis(xlo, xhi)
	} else {
		xs = linearAxis(xlo, xhi, false)
	}
	yLabel := p.YLabel
	if isCDF {
		ys = linearAxis(0, 1, true)
		if yLabel == "" {
			yLabel = "share at or below"
		}
	} else {
		ys = linearAxis(ylo, yhi, true)
	}

	rows := legendRows(names(p))
	height := marginTop + plotHeight + axisSpace + rows*legendRow + 12
	c := newCanvas(p.Title, height)
	r := area{left: marginLeft, top: marginTop, right: width - marginRight, bottom: marginTop + plotHeight}
	c.axes(r, &xs, ys, p.XLabel, yLabel)
	for i, pts := range lines {
		if len(pts) > maxPoints && !isCDF { // a CDF is thinned already
			pts = thin(pts)
		}
		var b strings.Builder
		for j, pt := range pts {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(f1(r.x(xs, pt.x)) + "," + f1(r.y(ys, pt.y)))
		}
		fmt.Fprintf(&c.b, `<polyline class="series" fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>`,
			colour(i), dashAttr(i), b.String())
		_ = xml.EscapeText(&c.b, []byte(p.Series[i].Name))
		c.b.WriteString("</title></polyline>\n")
	}
	c.legend(names(p), float64(marginTop+plotHeight+axisSpace+14), false)
	return c.bytes(), nil
}

// thin keeps at most maxPoints of pts, evenly spaced, the first and last included.
func thin(pts []point) []point {
	out := make([]point, 0, maxPoints)
	for i := range maxPoints {
		out = append(out, pts[i*(len(pts)-1)/(maxPoints-1)])
	}
	return out
}

// drawBars draws one bar per series, of height Y[0], labelled with its value; the series' names
// are in the legend and under the bars.
func drawBars(p benchfig.Plot) ([]byte, error) {
	vals := make([]float64, len(p.Series))
	hi := 0.0
	for i, s := range p.Series {
		if len(s.Y) == 0 || math.IsNaN(s.Y[0]) {
			return nil, fmt.Errorf("series %q has no value", s.Name)
		}
		vals[i] = s.Y[0]
		hi = math.Max(hi, s.Y[0])
	}
	lo := math.Min(0, slices.Min(vals))
	ys := linearAxis(lo, hi*1.08, true) // room for the value above the highest bar

	// Each bar is named under it, on up to four lines; when a name does not fit, the legend names
	// them all in full.
	slot := float64(width-marginLeft-marginRight) / float64(len(vals))
	labels := make([][]string, len(vals))
	cut, lines := false, 1
	for i, s := range p.Series {
		var c bool
		labels[i], c = wrap(s.Name, int(slot*0.95/charWidth), 4)
		cut, lines = cut || c, max(lines, len(labels[i]))
	}
	labelSpace := tickLength + 13 + lines*lineHeight
	if p.XLabel != "" {
		labelSpace += lineHeight + 6
	}
	height := marginTop + plotHeight + labelSpace + 12
	if cut {
		height += legendRows(names(p))*legendRow + 8
	}
	c := newCanvas(p.Title, height)
	r := area{left: marginLeft, top: marginTop, right: width - marginRight, bottom: marginTop + plotHeight}
	c.axes(r, nil, ys, "", p.YLabel)
	if p.XLabel != "" {
		c.text((r.left+r.right)/2, r.bottom+float64(labelSpace)-4, "middle", p.XLabel)
	}
	barWidth := math.Min(slot*0.6, 90)
	zero := r.y(ys, 0)
	for i, v := range vals {
		x := r.left + slot*float64(i) + (slot-barWidth)/2
		y := r.y(ys, v)
		top, h := math.Min(y, zero), math.Abs(zero-y)
		fmt.Fprintf(&c.b, `<path class="series" fill="%s" d="M%s %s h%s v%s h-%s Z"><title>`,
			colour(i), f1(x), f1(top), f1(barWidth), f1(h), f1(barWidth))
		_ = xml.EscapeText(&c.b, []byte(p.Series[i].Name))
		c.b.WriteString("</title></path>\n")
		c.text(x+barWidth/2, top-5, "middle", tick(v))
		for j, line := range labels[i] {
			c.text(x+barWidth/2, r.bottom+tickLength+13+float64(j*lineHeight), "middle", line)
		}
	}
	if cut {
		c.legend(names(p), float64(marginTop+plotHeight+labelSpace+14), true)
	}
	return c.bytes(), nil
}

// wrap breaks name into lines of at most width characters, at spaces, keeping at most maxLines;
// cut reports whether anything was left out (a word too long, or too many lines).
func wrap(name string, width, maxLines int) (lines []string, cut bool) {
	for _, w := range strings.Fields(name) {
		if r := []rune(w); len(r) > width {
			w, cut = string(r[:max(width-1, 1)])+"…", true
		}
		if n := len(lines); n > 0 && len([]rune(lines[n-1]))+1+len([]rune(w)) <= width {
			lines[n-1] += " " + w
			continue
		}
		lines = append(lines, w)
	}
	if len(lines) > maxLines {
		lines, cut = lines[:maxLines], true
		lines[maxLines-1] += "…"
	}
	return lines, cut
}

// tick prints a tick's value briefly: 2k, 1.5M, 0.25.
func tick(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// f1 prints a coordinate with one decimal.
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
