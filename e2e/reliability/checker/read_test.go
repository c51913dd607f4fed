package checker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
)

// ReadStream reads every message back, in order, decoded, and counts the undecodable apart.
func TestReadStream(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	js := srv.JetStream(t, natstest.Account)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	var want []events.Event
	for range 5 {
		u := authtest.NewUser()
		want = append(want, authtest.PublishUser(t, js, events.UserCreated, u))
	}
	if _, err := js.Publish(ctx, "users.created.garbage", []byte("{")); err != nil {
		t.Fatal(err)
	}
	want = append(want, authtest.PublishUser(t, js, events.UserCreated, authtest.NewUser()))

	got, bad, err := ReadStream(ctx, srv.JetStream(t, natstest.Ops))
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 || len(got) != len(want) {
		t.Fatalf("read %d events and %d undecodable, want %d and 1", len(got), bad, len(want))
	}
	for i, e := range got {
		if e.ID != want[i].ID {
			t.Errorf("event %d is %s, want %s", i, e.ID, want[i].ID)
		}
	}
	if got[len(got)-1].Seq != 7 {
		t.Errorf("last seq %d, want 7", got[len(got)-1].Seq)
	}
}

// ReadStates reads a replica's users as the checker compares them.
func TestReadStates(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := replica.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	u := authtest.NewUser(events.RoleAdmin)
	u.Version = 3
	const insert = `INSERT INTO replica_users (id, email, display_name, roles, status, version, stream_seq)
		VALUES ($1, $2, $3, $4, $5, $6, 1)`
	if _, err := pool.Exec(ctx, insert, u.ID, u.Email, u.DisplayName, u.Roles, u.Status, u.Version); err != nil {
		t.Fatal(err)
	}
	states, err := ReadStates(ctx, pool, ReplicaUsers)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := states[u.ID]
	if len(states) != 1 || !ok || !s.equal(State{Roles: u.Roles, Status: u.Status, Version: 3}) {
		b, _ := json.Marshal(states)
		t.Fatalf("states %s, want %v", b, u)
	}
}
