package blackbox

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// event is an event as the contract publishes it.
type event struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurred_at"`
	User       struct {
		ID          string   `json:"id"`
		Email       string   `json:"email"`
		DisplayName string   `json:"display_name"`
		Roles       []string `json:"roles"`
		Status      string   `json:"status"`
		Version     int      `json:"version"`
	} `json:"user"`
}

// TestUserEvents reads a new user's events from the USERS stream, with an ephemeral ordered
// consumer (the durable consumers of blog and shop are left alone): users.created.<id> at
// version 1, then users.role_changed and users.status_changed, each with the full state, the
// next version, and Nats-Msg-Id = the event id.
func TestUserEvents(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect(system.natsURL, nats.Timeout(3*time.Second), nats.MaxReconnects(0))
	if err != nil {
		if !system.own {
			t.Skipf("NATS at %s unreachable (set NATS_URL): %v", system.natsURL, err)
		}
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	u := newUser(t, "Evelyn")
	setRoles(t, u, "user", "moderator")
	setStatus(t, u, "disabled")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "USERS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"users.*." + u.ID}})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	want := []struct {
		subject, typ string
		roles        []string
		status       string
	}{
		{"users.created.", "user.created", []string{"user"}, "active"},
		{"users.role_changed.", "user.role_changed", []string{"moderator", "user"}, "active"},
		{"users.status_changed.", "user.status_changed", []string{"moderator", "user"}, "disabled"},
	}
	for i, w := range want {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("event %d (%s) did not arrive within 10s", i+1, w.typ)
		}
		if err != nil {
			t.Fatalf("event %d: %v", i+1, err)
		}
		if err := system.events.Check(msg.Subject(), msg.Headers(), msg.Data()); err != nil {
			t.Error(err)
		}
		if msg.Subject() != w.subject+u.ID {
			t.Errorf("event %d on %s, want %s%s", i+1, msg.Subject(), w.subject, u.ID)
		}
		var e event
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			t.Fatalf("event %d: %v: %s", i+1, err, msg.Data())
		}
		id, err := uuid.Parse(e.ID)
		if err != nil || id.Version() != 7 {
			t.Errorf("event %d: id %q, want a UUID v7", i+1, e.ID)
		}
		if got := msg.Headers().Get(nats.MsgIdHdr); got != e.ID {
			t.Errorf("event %d: Nats-Msg-Id %q, want the event id %q", i+1, got, e.ID)
		}
		if e.Type != w.typ || e.OccurredAt.IsZero() {
			t.Errorf("event %d: type %q occurred_at %v, want %s and a time", i+1, e.Type, e.OccurredAt, w.typ)
		}
		roles := map[string]bool{}
		for _, r := range e.User.Roles {
			roles[r] = true
		}
		wantRoles := map[string]bool{}
		for _, r := range w.roles {
			wantRoles[r] = true
		}
		if e.User.ID != u.ID || e.User.Email != u.Email || e.User.DisplayName != u.Name || e.User.Status != w.status ||
			e.User.Version != i+1 || len(roles) != len(wantRoles) || len(e.User.Roles) != len(w.roles) {
			t.Errorf("event %d: user %+v, want %s %s %q, roles %v, status %s, version %d", i+1, e.User, u.ID, u.Email, u.Name, w.roles, w.status, i+1)
		}
		for r := range wantRoles {
			if !roles[r] {
				t.Errorf("event %d: roles %v, want %v", i+1, e.User.Roles, w.roles)
			}
		}
	}
}
