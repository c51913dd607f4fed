// Package postgres stores the shop's products, orders and idempotency keys in Postgres. It is the
// only package of the shop that knows SQL; it turns database errors into the sentinels of package
// shop.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/shop/internal/shop"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate applies the shop's own migrations (not the replica's).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.Apply(ctx, pool, "shop", migrations, "migrations")
}

// Store reads and writes the shop's tables. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// retries counts transactions run again after a serialization failure or a deadlock. Orders
	// lock in one order, so a steady rate means some statement broke it.
	retries prometheus.Counter
}

// New returns a store on pool; the caller closes the pool. The store's metric
// (shop_transaction_retries_total) is registered on reg unless reg is nil; a store made later on
// the same registry shares the counter.
func New(pool *pgxpool.Pool, reg prometheus.Registerer) *Store {
	retries := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shop_transaction_retries_total",
		Help: "Transactions run again after Postgres aborted them as a serialization failure or a deadlock victim.",
	})
	if reg != nil {
		// The one other error, a collector of this name but another help or type, cannot happen
		// in a registry that only shop's code fills; the counter then counts unexported.
		err := reg.Register(retries)
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if c, ok := are.ExistingCollector.(prometheus.Counter); ok {
				retries = c
			}
		}
	}
	return &Store{pool: pool, retries: retries}
}

// querier runs a query; *pgxpool.Pool and pgx.Tx are both one, so a read can run alone or inside
// a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// maxAttempts bounds how often a transaction is tried when Postgres aborts it as a serialization
// failure or a deadlock victim.
const maxAttempts = 4

// inTx runs fn in a transaction, again (with a short jittered pause) when Postgres aborted it with
// 40001 or 40P01. fn must be safe to run more than once.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || !pg.Retryable(err) {
			return dbError(err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: %d attempts: %w", shop.ErrUnavailable, attempt, err)
		}
		s.retries.Inc()
		pause := time.Duration(attempt)*10*time.Millisecond + rand.N(10*time.Millisecond)
		select {
		case <-ctx.Done():
			// Classified as any other error: a deadline is ErrUnavailable, as when a query hits it.
			return dbError(ctx.Err())
		case <-time.After(pause):
		}
	}
}

// dbError wraps err with shop.ErrUnavailable when it says the database cannot serve right now
// (pg.Unavailable: down, overloaded, a statement or lock timeout), so that the server answers 503
// rather than 500, and leaves the others as they are.
func dbError(err error) error {
	if pg.Unavailable(err) && !errors.Is(err, shop.ErrUnavailable) {
		return fmt.Errorf("%w: %w", shop.ErrUnavailable, err)
	}
	return err
}
