package replica_test

import (
	"fmt"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/logging/logtest"
	"github.com/authmesh/events/replica"
)

// The lines about an event name its user, its id and its stream sequence: those of an event
// applied (at debug) and of one that cannot be.
func TestLogLinesNameTheEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log logtest.Buffer
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js,
		Log: log.Logger()})

	good := authtest.NewUser()
	goodEvent := authtest.PublishUser(t, e.pub, events.UserCreated, good)
	// Postgres refuses the NUL: the batch is applied one by one and the event dead-lettered.
	nul := authtest.NewUser()
	nul.DisplayName = "a\x00b"
	nulEvent := authtest.PublishUser(t, e.pub, events.UserCreated, nul)

	start(t, r)
	eventually(t, "both handled", func() bool { return applied(t, e.pool) == 2 })

	check := func(msg string, u events.User, ev events.Event, seq uint64) {
		t.Helper()
		var found []map[string]any
		eventually(t, fmt.Sprintf("a line %q", msg), func() bool {
			found = log.Lines(t, msg)
			return len(found) > 0
		})
		for _, l := range found {
			if l["user_id"] != u.ID.String() || l["event_id"] != ev.ID.String() || l["stream_seq"] != float64(seq) {
				t.Errorf("line %v: want user_id %s, event_id %s, stream_seq %d", l, u.ID, ev.ID, seq)
			}
		}
	}
	check("event committed", good, goodEvent, 1)
	check("event cannot be applied, dead-lettered", nul, nulEvent, 2)
	batch := log.Lines(t, "apply batch, applying its events one by one")
	if len(batch) == 0 || batch[0]["first_stream_seq"] == nil || batch[0]["last_stream_seq"] != 2.0 {
		t.Errorf("batch lines %v: want first_stream_seq and last_stream_seq 2", batch)
	}
}
