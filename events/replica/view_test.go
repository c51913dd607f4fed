package replica_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/replica"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// lookupNow returns r's user id at any version, failing the test on an error.
func lookupNow(t *testing.T, r *replica.Replica, id uuid.UUID) events.User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	u, err := r.User(ctx, id, 1)
	if err != nil {
		t.Fatalf("User(%s): %v", id, err)
	}
	return u
}

// Two instances of a service on one durable consumer and one database: whichever applies a change,
// both views drop the user, so a revoked role is not honoured by either once the change reached
// it, and never again after.
func TestViewTwoInstancesSeeEveryChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := bus.EnsureStream(context.Background(), e.pub); err != nil {
		t.Fatal(err)
	}
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "blog", Metrics: regA})
	b := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "blog", Metrics: regB})
	start(t, a)
	start(t, b)
	eventually(t, "both listeners up", func() bool { return a.Listening() && b.Listening() })

	users := make([]events.User, 40)
	for i := range users {
		users[i] = authtest.NewUser(events.RoleAdmin)
		authtest.PublishUser(t, e.pub, events.UserCreated, users[i])
	}
	// Both instances look every user up until a whole pass is answered from their views (the
	// notifications of the creations may drop a user read before they arrived).
	for name, reg := range map[string]*prometheus.Registry{"a": regA, "b": regB} {
		r := map[string]*replica.Replica{"a": a, "b": b}[name]
		eventually(t, "instance "+name+" answers a whole pass from its view", func() bool {
			before := metric(t, reg, "replica_lookups_total", "result", "view")
			for _, u := range users {
				if got := lookupNow(t, r, u.ID); !slices.Contains(got.Roles, events.RoleAdmin) {
					t.Fatalf("user %s before the change: roles %v, want admin", u.ID, got.Roles)
				}
			}
			return metric(t, reg, "replica_lookups_total", "result", "view")-before == float64(len(users))
		})
	}

	for i := range users {
		users[i].Roles, users[i].Version = []string{events.RoleUser}, 2
		authtest.PublishUser(t, e.pub, events.UserRoleChanged, users[i])
	}
	revoked := func(r *replica.Replica) bool {
		for _, u := range users {
			if got := lookupNow(t, r, u.ID); got.Version != 2 || slices.Contains(got.Roles, events.RoleAdmin) {
				return false
			}
		}
		return true
	}
	eventually(t, "both instances honour the revocation", func() bool { return revoked(a) && revoked(b) })
	for round := range 20 {
		for name, r := range map[string]*replica.Replica{"a": a, "b": b} {
			if !revoked(r) {
				t.Fatalf("round %d: instance %s honours a revoked role again", round, name)
			}
		}
	}
	// A token issued after the change asks for version 2: a view holding version 1 would not
	// answer it, so it must be at 2 already.
	for _, u := range users {
		for _, r := range []*replica.Replica{a, b} {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			got, err := r.User(ctx, u.ID, 2)
			cancel()
			if err != nil || got.Version != 2 {
				t.Fatalf("User(%s, 2) = version %d, %v; want 2", u.ID, got.Version, err)
			}
		}
	}
}

// viewed returns a running replica whose view holds a new user with roles (the user's first
// lookup is the view's store).
func viewed(t *testing.T, roles ...string) (env, *replica.Replica, events.User) {
	t.Helper()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	start(t, r)
	eventually(t, "listener up", r.Listening)
	u := authtest.NewUser(roles...)
	authtest.PublishUser(t, e.pub, events.UserCreated, u)
	lookupNow(t, r, u.ID)
	return e, r, u
}

// setRole changes a user's row behind the replica's back, without the NOTIFY every change of the
// replica sends: a change whose notification was lost.
func setRole(t *testing.T, e env, id uuid.UUID, version int64, roles ...string) {
	t.Helper()
	const update = `UPDATE replica_users SET roles = $2, version = $3 WHERE id = $1`
	if _, err := e.pool.Exec(context.Background(), update, id, roles, version); err != nil {
		t.Fatal(err)
	}
}

// listenerPID returns the backend pid of the replica's LISTEN connection; 0 when there is none.
func listenerPID(t *testing.T, e env) (pid int32) {
	t.Helper()
	const q = `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN replica_users'`
	if err := e.pool.QueryRow(context.Background(), q).Scan(&pid); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return pid
}

// While the listener is down, notifications are lost: the view is emptied and not used until the
// listener is back, so a change made meanwhile is seen.
func TestViewResetWhenListenerDown(t *testing.T) {
	t.Parallel()
	e, r, u := viewed(t, events.RoleAdmin)
	if got := lookupNow(t, r, u.ID); !slices.Contains(got.Roles, events.RoleAdmin) {
		t.Fatalf("roles %v, want admin", got.Roles)
	}

	listener := func() int32 { return listenerPID(t, e) }
	var first int32
	eventually(t, "listener connection seen", func() bool { first = listener(); return first != 0 })
	if _, err := e.pool.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	setRole(t, e, u.ID, 2, events.RoleUser)
	eventually(t, "listener back", func() bool {
		pid := listener()
		return pid != 0 && pid != first && r.Listening()
	})
	// Checked once the listener is back: while it is down the view is not used at all.
	if got := lookupNow(t, r, u.ID); slices.Contains(got.Roles, events.RoleAdmin) {
		t.Errorf("after the listener came back: roles %v, the change made while it was down is not seen", got.Roles)
	}
}

// A rebuild's swap notifies "*": every user of the view is read again.
func TestViewResetBySwap(t *testing.T) {
	t.Parallel()
	e, r, u := viewed(t, events.RoleAdmin)

	setRole(t, e, u.ID, 2, events.RoleUser)
	if _, err := e.pool.Exec(context.Background(), `SELECT pg_notify('replica_users', '*')`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the swapped-in row is seen", func() bool {
		return !slices.Contains(lookupNow(t, r, u.ID).Roles, events.RoleAdmin)
	})
}

// A user whose event is dead-lettered is stale at once, even when the view holds them.
func TestViewDropsDeadLetteredUser(t *testing.T) {
	t.Parallel()
	e, r, u := viewed(t)
	lookupNow(t, r, u.ID)

	publishRaw(t, e.pub, fmt.Sprintf("users.role_changed.%s", u.ID), []byte("{not json"))
	eventually(t, "the user is stale", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.User(ctx, u.ID, 1)
		return errors.Is(err, replica.ErrStale)
	})
}
