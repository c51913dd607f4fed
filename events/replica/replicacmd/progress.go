package replicacmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/authmesh/events/replica"
)

const (
	// redrawEvery throttles the bar on a terminal.
	redrawEvery = 200 * time.Millisecond
	// lineEvery is the interval of the plain lines written when the output is not a terminal.
	lineEvery = 2 * time.Second
	barWidth  = 30
)

// progress shows how far a long command is: on a terminal, a bar redrawn in place (events
// done/total, rate, ETA); otherwise a plain line every lineEvery.
type progress struct {
	w     io.Writer
	label string
	tty   bool
	start time.Time
	shown time.Time // when the last line or bar was written
	last  replica.Progress
	drawn bool // a bar is on the terminal's current line
}

func newProgress(w io.Writer, label string) *progress {
	f, ok := w.(*os.File)
	return &progress{
		w:     w,
		label: label,
		tty:   ok && term.IsTerminal(int(f.Fd())),
		start: time.Now(),
	}
}

// update records p and shows it if it is time to.
func (pr *progress) update(p replica.Progress) {
	pr.last = p
	every := lineEvery
	if pr.tty {
		every = redrawEvery
	}
	if time.Since(pr.shown) < every {
		return
	}
	pr.show()
}

// finish shows the final state on a terminal and ends the bar's line.
func (pr *progress) finish() {
	if !pr.drawn {
		return
	}
	pr.show()
	fmt.Fprintln(pr.w)
}

func (pr *progress) show() {
	pr.shown = time.Now()
	elapsed := time.Since(pr.start)
	p := pr.last
	r := rate(p.Done, elapsed)
	eta := "?"
	if r > 0 && p.Total >= p.Done {
		eta = time.Duration(float64(p.Total-p.Done) / r * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	if !pr.tty {
		fmt.Fprintf(pr.w, "%s: %d/%d events (%.0f%%), %.0f events/s, ETA %s\n", pr.label, p.Done, p.Total, pct, r, eta)
		return
	}
	filled := int(pct / 100 * barWidth)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	// \r returns to the start of the line, \x1b[K clears what a longer previous draw left.
	fmt.Fprintf(pr.w, "\r%s [%s] %d/%d %3.0f%%  %.0f events/s  ETA %s\x1b[K", pr.label, bar, p.Done, p.Total, pct, r, eta)
	pr.drawn = true
}
