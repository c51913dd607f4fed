// Package pg is what every service's Postgres code shares: a pool opened with the session limits
// the services run under, the classes of errors a caller acts upon, and a database URL fit for a
// log. Each store turns these classes into its own domain's sentinels (ErrUnavailable, ErrConflict
// …); the consumer of the replica turns them into ack, retry or dead letter.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes Open. The zero value is what a service runs with.
type Config struct {
	// Unbounded leaves statements, lock waits and idle transactions without the services' session
	// limits (SessionLimits), for operator commands whose statements may be long.
	Unbounded bool
	// MaxConns caps the pool; pgxpool's default when zero.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt; 5 s when zero.
	ConnectTimeout time.Duration
	// PingTimeout bounds Open's check that the database answers; 10 s when zero.
	PingTimeout time.Duration
}

// SessionLimits are the settings of every session of a service (unless its URL sets them): a
// statement that runs 5 s, or waits 2 s for a lock, fails (57014, 55P03: Unavailable) rather than
// hold a request; a transaction left idle 10 s by its client is ended.
var SessionLimits = map[string]string{
	"statement_timeout":                   "5s",
	"lock_timeout":                        "2s",
	"idle_in_transaction_session_timeout": "10s",
}

// Open opens a pool on url as cfg says and checks that the database answers. A bad URL is an error
// naming DATABASE_URL; an unreachable database, one naming it without its password (Redact). The
// caller closes the pool.
func Open(ctx context.Context, url string, cfg Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if !cfg.Unbounded {
		rp := pc.ConnConfig.RuntimeParams
		for k, v := range SessionLimits {
			if _, ok := rp[k]; !ok {
				rp[k] = v
			}
		}
	}
	pc.ConnConfig.ConnectTimeout = orDefault(cfg.ConnectTimeout, 5*time.Second)
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", Redact(url), err)
	}
	pctx, cancel := context.WithTimeout(ctx, orDefault(cfg.PingTimeout, 10*time.Second))
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s unreachable: %w", Redact(url), err)
	}
	return pool, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Redact returns the user, host, port and database of a database URL: no password, no other
// parameter.
func Redact(url string) string {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return "(unparsable database url)"
	}
	c := pc.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// SQLSTATEs the classes below are made of.
const (
	uniqueViolation      = "23505"
	serializationFailure = "40001"
	deadlockDetected     = "40P01"
	queryCanceled        = "57014" // statement_timeout
	lockNotAvailable     = "55P03" // lock_timeout
	adminShutdown        = "57P01"
	crashShutdown        = "57P02"
	cannotConnectNow     = "57P03"
	idleInTransaction    = "25P03" // idle_in_transaction_session_timeout
	undefinedTable       = "42P01"
)

// Unavailable reports whether err means the database cannot serve right now: it is down,
// restarting or refusing connections, out of resources, or too slow (a statement or lock timeout),
// or the connection was lost. The request may succeed later: a service answers 503, not 500.
// Retryable errors (a serialization failure, a deadlock) are Unavailable too, for a caller that
// has retried them enough.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if e, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch {
		case strings.HasPrefix(e.Code, "08"), // connection exception
			strings.HasPrefix(e.Code, "53"), // insufficient resources
			e.Code == queryCanceled, e.Code == lockNotAvailable, e.Code == idleInTransaction,
			e.Code == adminShutdown, e.Code == crashShutdown, e.Code == cannotConnectNow,
			e.Code == serializationFailure, e.Code == deadlockDetected:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	return connectionLost(err) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}

// connectionLost reports whether err says the connection broke: it was closed or reset under a
// statement (the server crashed or was killed, or the network dropped the connection) or used
// after that. The server sends no error then, so no SQLSTATE says it; a transaction that ends on
// it reports the failed rollback's "conn closed" rather than the read that broke.
func connectionLost(err error) bool {
	if errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	_, ok := errors.AsType[*net.OpError](err)
	return ok
}

// Retryable reports whether err aborted a transaction that may succeed if run again at once: a
// serialization failure (40001) or a deadlock (40P01), which Postgres resolves by aborting one of
// the transactions involved.
func Retryable(err error) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (e.Code == serializationFailure || e.Code == deadlockDetected)
}

// UniqueViolation reports whether err is a violation of the unique constraint or index named
// constraint.
func UniqueViolation(err error, constraint string) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && e.Code == uniqueViolation && e.ConstraintName == constraint
}

// DataError reports whether err is a data exception or an integrity constraint violation
// (SQLSTATE classes 22 and 23): the statement's input is at fault, and running it again with the
// same input fails again. Every other error may go away (or is a bug of ours, which retrying does
// not make worse).
func DataError(err error) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (strings.HasPrefix(e.Code, "22") || strings.HasPrefix(e.Code, "23"))
}

// UndefinedTable reports whether err says a table does not exist (42P01): the schema was never
// applied to this database.
func UndefinedTable(err error) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && e.Code == undefinedTable
}
