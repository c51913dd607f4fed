package postgres_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

const unusable = "$argon2id$unusable"

// lastEvent is the newest event of the outbox.
func lastEvent(t *testing.T, pool *pgxpool.Pool) events.Event {
	t.Helper()
	var payload []byte
	if err := pool.QueryRow(t.Context(), `SELECT payload FROM outbox ORDER BY id DESC LIMIT 1`).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	var e events.Event
	if err := json.Unmarshal(payload, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestReconcileUser(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	bob := mustCreate(t, s, "bob@example.com")
	streamed := bob.Snapshot()

	tests := []struct {
		name    string
		stream  func(u events.User) postgres.StreamUser
		want    postgres.Reconciled
		version int64 // Bob's version after
		typ     events.Type
	}{
		{"same version, same state", func(u events.User) postgres.StreamUser { return postgres.StreamUser{User: u} },
			postgres.Unchanged, 1, ""},
		{"the database ahead", func(u events.User) postgres.StreamUser { u.Version = 0; return postgres.StreamUser{User: u} },
			postgres.Unchanged, 1, ""},
		{"same version, another state", func(u events.User) postgres.StreamUser {
			u.Roles = []string{"user", "admin"}
			return postgres.StreamUser{User: u}
		}, postgres.Bumped, 2, events.UserRoleChanged},
		{"same version, several states", func(u events.User) postgres.StreamUser {
			u.Version = 2
			return postgres.StreamUser{User: u, Conflict: true}
		}, postgres.Bumped, 3, events.UserRoleChanged},
		{"a higher version, disabled", func(u events.User) postgres.StreamUser {
			u.Version, u.Status = 7, events.StatusDisabled
			return postgres.StreamUser{User: u}
		}, postgres.Bumped, 8, events.UserStatusChanged},
		{"again: nothing to do", func(u events.User) postgres.StreamUser {
			u.Version, u.Status = 7, events.StatusDisabled
			return postgres.StreamUser{User: u}
		}, postgres.Unchanged, 8, ""},
	}
	for _, tt := range tests {
		before := outboxCount(t, pool)
		got, u, err := s.ReconcileUser(ctx, tt.stream(streamed), unusable)
		if err != nil {
			t.Fatalf("%s: ReconcileUser: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s: ReconcileUser = %v, want %v", tt.name, got, tt.want)
		}
		now, err := s.User(ctx, bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		// The database's state is kept, whatever the stream's.
		want := bob.Snapshot()
		want.Version = tt.version
		if diff := cmp.Diff(want, now.Snapshot()); diff != "" {
			t.Errorf("%s: bob (-want +got):\n%s", tt.name, diff)
		}
		written := outboxCount(t, pool) - before
		switch {
		case tt.typ == "" && written != 0:
			t.Errorf("%s: %d events written, want none", tt.name, written)
		case tt.typ != "":
			e := lastEvent(t, pool)
			if written != 1 || e.Type != tt.typ || !cmp.Equal(e.User, now.Snapshot()) || u.Version != tt.version {
				t.Errorf("%s: %d events, the last %s %+v; want one %s carrying %+v", tt.name, written, e.Type, e.User, tt.typ, now.Snapshot())
			}
		}
	}
}

func TestReconcileUserRestoresDisabled(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	created := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	cid := postgres.StreamUser{
		User: events.User{ID: uuid.New(), Email: "Cid@example.com", DisplayName: "Cid", Roles: []string{"user", "moderator"},
			Status: events.StatusActive, Version: 2},
		CreatedAt: created,
	}
	got, u, err := s.ReconcileUser(ctx, cid, unusable)
	if err != nil || got != postgres.RestoredDisabled {
		t.Fatalf("ReconcileUser(unknown user) = %v, %v; want RestoredDisabled", got, err)
	}
	want := cid.User
	want.Status, want.Version = events.StatusDisabled, 3
	if diff := cmp.Diff(want, u.Snapshot()); diff != "" {
		t.Errorf("restored user (-want +got):\n%s", diff)
	}
	if !u.CreatedAt.Equal(created) {
		t.Errorf("created_at %v, want the stream's %v", u.CreatedAt, created)
	}
	_, hash, err := s.Credentials(ctx, "cid@example.com")
	if err != nil || hash != unusable {
		t.Errorf("password hash %q (%v), want the unusable one", hash, err)
	}
	if e := lastEvent(t, pool); e.Type != events.UserStatusChanged || !cmp.Equal(e.User, want) {
		t.Errorf("event %s %+v, want user.status_changed carrying %+v", e.Type, e.User, want)
	}
	if got, _, err := s.ReconcileUser(ctx, cid, unusable); err != nil || got != postgres.Unchanged {
		t.Errorf("ReconcileUser again = %v, %v; want Unchanged", got, err)
	}

	// A user of the stream whose email another user of the database has: not inserted.
	before := outboxCount(t, pool)
	dup := postgres.StreamUser{User: events.User{ID: uuid.New(), Email: "CID@EXAMPLE.COM", DisplayName: "Other",
		Roles: []string{"user"}, Status: events.StatusActive, Version: 1}}
	if _, _, err := s.ReconcileUser(ctx, dup, unusable); !errors.Is(err, account.ErrEmailTaken) {
		t.Errorf("ReconcileUser(email taken) error = %v, want ErrEmailTaken", err)
	}
	if _, err := s.User(ctx, dup.ID); !errors.Is(err, account.ErrNotFound) || outboxCount(t, pool) != before {
		t.Errorf("a refused restore wrote something: user lookup %v, %d events", err, outboxCount(t, pool)-before)
	}
}
