// Package postgres is account's storage: users, failed logins and signing keys in the service's
// own Postgres database, and the outbox rows of user events, written in the transaction of the
// change they record. It is the only package that knows SQL.
package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pg"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate applies account's schema and the outbox's to the database of pool.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := migrate.Apply(ctx, pool, "account", migrations, "migrations"); err != nil {
		return err
	}
	if err := outbox.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate outbox: %w", err)
	}
	return nil
}

// Store reads and writes account's tables. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a store on pool, whose schema Migrate has applied.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// dbError wraps err with account.ErrUnavailable when it says the database is down, overloaded or
// too slow (pg.Unavailable), so that the server answers 503 rather than 500.
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	if pg.Unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, account.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
