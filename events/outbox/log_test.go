package outbox_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events/outbox"
)

// lockedBuffer is a log that the relay's goroutines write while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON lines logged so far with message msg.
func (b *lockedBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	text := b.buf.String()
	b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// The lines about an event name its user and its id, and its stream sequence once stored: the
// line of its publication (at debug), and the line of a failed one.
func TestLogLinesNameTheEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log lockedBuffer
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, PublishTimeout: 300 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	evs := add(t, e.pool, 2)
	eventually(t, "published", published(t, e.pool, 2))
	lines := log.lines(t, "event published")
	if len(lines) != len(evs) {
		t.Fatalf("%d lines event published, want %d: %v", len(lines), len(evs), lines)
	}
	for i, ev := range evs {
		l := lines[i]
		if l["user_id"] != ev.User.ID.String() || l["event_id"] != ev.ID.String() || l["stream_seq"] != float64(i+1) {
			t.Errorf("line %v: want user_id %s, event_id %s, stream_seq %d", l, ev.User.ID, ev.ID, i+1)
		}
	}

	e.srv.Stop()
	late := add(t, e.pool, 1)[0]
	var failed map[string]any
	eventually(t, "a failure of the late event logged", func() bool {
		// (The first publishes may have failed too, before the relay had created the stream.)
		for _, l := range log.lines(t, "publish outbox events, will retry") {
			if l["event_id"] == late.ID.String() {
				failed = l
				return true
			}
		}
		return false
	})
	if failed["user_id"] != late.User.ID.String() {
		t.Errorf("line %v: want user_id %s", failed, late.User.ID)
	}
	e.srv.Start()
	eventually(t, "published after the outage", published(t, e.pool, 3))
}
