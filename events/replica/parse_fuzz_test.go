package replica

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// FuzzParse: whatever a message of the stream holds, parse judges it without panicking; what it
// accepts is a valid event of the user its subject names, and encodes and parses back to itself.
// The consumer, rebuilds, verify and dead-letter retries all judge messages by parse.
func FuzzParse(f *testing.F) {
	u := events.User{ID: uuid.MustParse("0192f0a0-0000-7000-8000-000000000001"), Email: "a@example.com",
		DisplayName: "A", Roles: []string{events.RoleUser}, Status: events.StatusActive, Version: 1}
	e, err := events.NewEvent(events.UserCreated, u, time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	good, err := json.Marshal(e)
	if err != nil {
		f.Fatal(err)
	}
	subject := e.Subject()
	f.Add(subject, good)
	f.Add("users.role_changed."+u.ID.String(), good)
	f.Add("users.created."+uuid.NewString(), good)
	f.Add("users.created", good)
	f.Add(subject, []byte(`{not json`))
	f.Add(subject, []byte(`{}`))
	f.Add(subject, []byte(`null`))
	f.Add(subject, []byte(`{"id":"x","type":"user.created","user":{"id":"`+u.ID.String()+`","version":-1}}`))
	f.Add(subject, []byte(`{"id":"0192f0a0-0000-7000-8000-000000000002","type":"user.exploded","occurred_at":"2026-11-28T09:00:00Z","user":{}}`))
	f.Add(subject, append(good[:len(good)-1], []byte(`,"extra":{"nested":[1,2,3]}}`)...))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		e, reason := parse(subject, data)
		if reason != "" {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("parse accepted an invalid event: %v", err)
		}
		if id, ok := events.SubjectUser(subject); !ok || id != e.User.ID {
			t.Fatalf("parse accepted subject %q for user %s", subject, e.User.ID)
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("encode accepted event: %v", err)
		}
		back, reason := parse(subject, again)
		if reason != "" {
			t.Fatalf("the accepted event, encoded again, is refused: %s", reason)
		}
		if diff := cmp.Diff(e, back); diff != "" {
			t.Fatalf("round trip (-first +again):\n%s", diff)
		}
	})
}
