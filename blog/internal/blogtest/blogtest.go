// Package blogtest sets up what the blog's tests share: a fresh database with the blog's and the
// replica's tables, and a real user replica fed by a private NATS server, so that tests can add
// users the way account does (by publishing events) and read them back through the replica.
// Production code never imports it.
package blogtest

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/servicetest"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// Env is a blog's storage for one test: its own database and its own NATS server.
type Env struct {
	Pool    *pgxpool.Pool
	Store   *postgres.Store
	JS      jetstream.JetStream // connected as account: publishes events
	Replica *replica.Replica
}

// New returns an environment whose replica runs until the test ends.
func New(t testing.TB) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate blog: %v", err)
	}
	if err := replica.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate replica: %v", err)
	}
	ns := natstest.New(t)
	js := ns.JetStream(t, natstest.Account) // publishes, as account does
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		t.Fatalf("stream: %v", err)
	}
	rep, err := replica.New(replica.Config{Pool: pool, JS: ns.JetStream(t, natstest.Blog), Durable: "blog", Log: Discard()})
	if err != nil {
		t.Fatalf("replica: %v", err)
	}
	servicetest.Go(t, rep.Run)
	return &Env{Pool: pool, Store: postgres.New(pool), JS: js, Replica: rep}
}

// Publish publishes an event of type typ carrying u, as account would, and waits until the
// replica holds u at u.Version or later.
func (e *Env) Publish(t testing.TB, typ events.Type, u events.User) {
	t.Helper()
	authtest.PublishUser(t, e.JS, typ, u)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		_, err := e.Replica.User(ctx, u.ID, u.Version)
		if err == nil {
			return
		}
		if !errors.Is(err, replica.ErrLagging) || ctx.Err() != nil {
			t.Fatalf("replica never reached user %s version %d: %v", u.ID, u.Version, err)
		}
	}
}

// NewUser returns a new user with the given roles (RoleUser is always added), already in the
// replica.
func (e *Env) NewUser(t testing.TB, roles ...string) events.User {
	t.Helper()
	u := authtest.NewUser(roles...)
	e.Publish(t, events.UserCreated, u)
	return u
}

// Discard is a logger that writes nothing.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
