package replica_test

import (
	"context"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestFollowsRecreatedConsumer: when the durable consumer is deleted under a running replica (an
// operator's mistake), the replica declares it again and goes on applying new events.
func TestFollowsRecreatedConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	ctx := context.Background()
	before := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, before)
	if _, err := r.User(ctx, before.ID, 1); err != nil {
		t.Fatalf("User before the deletion: %v", err)
	}

	ops := e.srv.JetStream(t, natstest.Ops)
	if err := ops.DeleteConsumer(ctx, events.StreamName, "test"); err != nil {
		t.Fatalf("DeleteConsumer: %v", err)
	}
	after := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, after)
	if _, err := r.User(ctx, after.ID, 1); err != nil {
		t.Fatalf("User after the consumer was deleted: %v", err)
	}
}

// TestApplyNotQueuedBehindRequests: events are applied while the service's requests hold every
// connection of the pool; the consumer has a connection of its own.
func TestApplyNotQueuedBehindRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := replica.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	check, err := pgxpool.New(ctx, url) // the test's own view of the database
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(check.Close)
	srv := natstest.New(t)
	pub := srv.JetStream(t, natstest.Account)
	r := newReplica(t, replica.Config{Pool: pool, JS: srv.JetStream(t, natstest.Blog), Wait: patience})
	start(t, r)
	first := authtest.NewUser()
	authtest.PublishUser(t, pub, events.UserCreated, first)
	if _, err := r.User(ctx, first.ID, 1); err != nil {
		t.Fatalf("User: %v", err)
	}

	for range pool.Config().MaxConns { // the requests' connections, all busy
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Release)
	}
	if n := pool.Stat().IdleConns(); n != 0 {
		t.Fatalf("pool has %d idle connections, want 0", n)
	}
	second := authtest.NewUser()
	authtest.PublishUser(t, pub, events.UserCreated, second)
	eventually(t, "second user applied", func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var n int
		err := check.QueryRow(ctx, `SELECT count(*) FROM replica_users WHERE id = $1`, second.ID).Scan(&n)
		return err == nil && n == 1
	})
}
