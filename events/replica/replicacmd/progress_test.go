package replicacmd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events/replica"
)

func TestProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	bar := &progress{w: &buf, label: "rebuild", tty: true, start: time.Now().Add(-2 * time.Second)}
	bar.update(replica.Progress{Done: 500, Total: 1000})
	bar.update(replica.Progress{Done: 600, Total: 1000}) // within redrawEvery: not drawn
	bar.finish()
	out := buf.String()
	if !strings.HasPrefix(out, "\rrebuild [###############...............] 500/1000  50%") || !strings.Contains(out, "events/s  ETA ") {
		t.Errorf("terminal bar = %q", out)
	}
	if !strings.Contains(out, "\rrebuild [##################............] 600/1000  60%") || !strings.HasSuffix(out, "\n") {
		t.Errorf("final bar = %q, want the last state and a newline", out)
	}

	buf.Reset()
	lines := &progress{w: &buf, label: "rebuild", start: time.Now().Add(-time.Second)}
	lines.update(replica.Progress{Done: 100, Total: 400})
	lines.update(replica.Progress{Done: 200, Total: 400}) // within lineEvery: not written
	lines.finish()
	if got := buf.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "rebuild: 100/400 events (25%), ") || strings.Contains(got, "\r") {
		t.Errorf("plain progress = %q, want one line", got)
	}
}
