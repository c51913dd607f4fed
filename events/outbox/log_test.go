package outbox_test

import (
	"testing"
	"time"

	"github.com/authmesh/events/logging/logtest"
	"github.com/authmesh/events/outbox"
)

// The lines about an event name its user and its id, and its stream sequence once stored: the
// line of its publication (at debug), and the line of a failed one.
func TestLogLinesNameTheEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log logtest.Buffer
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, PublishTimeout: 300 * time.Millisecond,
		Log: log.Logger()})
	evs := add(t, e.pool, 2)
	eventually(t, "published", published(t, e.pool, 2))
	lines := log.Lines(t, "event published")
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
		for _, l := range log.Lines(t, "publish outbox events, will retry") {
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
