// Package postgres is account's storage: users, failed logins and signing keys in the service's
// own Postgres database, and the outbox rows of user events, written in the transaction of the
// change they record. It is the only package that knows SQL.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/outbox"
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

// SQLSTATEs the store translates.
const (
	uniqueViolation       = "23505"
	queryCanceled         = "57014" // statement_timeout
	lockNotAvailable      = "55P03" // lock_timeout
	serializationFailure  = "40001"
	deadlockDetected      = "40P01"
	adminShutdown         = "57P01"
	cannotConnectNow      = "57P03"
	tooManyConnections    = "53300"
	idleInTransactionTerm = "25P03"
)

// dbError wraps err with account.ErrUnavailable when it says the database is down, overloaded or
// too slow, so that the server answers 503 rather than 500.
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, account.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case queryCanceled, lockNotAvailable, serializationFailure, deadlockDetected,
			adminShutdown, cannotConnectNow, tooManyConnections, idleInTransactionTerm:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}
