package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/jackc/pgx/v5"
)

// Failed logins are counted on the database's clock, so that every instance counts alike.

// failureKey is what a login_failures row stores for key: a digest, so that the table holds no
// emails or addresses, its rows have a fixed size whatever the client sent, and any string (even
// one Postgres cannot store as text) can be a key.
func failureKey(l account.LoginLimit, key string) string {
	sum := sha256.Sum256([]byte(l.Scope + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// LoginRetryAfter reports how long logins for key stay refused under limit l: zero when key has
// fewer than l.Max failures within l.Window, else the time until the oldest of its last l.Max
// failures leaves the window.
func (s *Store) LoginRetryAfter(ctx context.Context, l account.LoginLimit, key string) (time.Duration, error) {
	const q = `SELECT extract(epoch FROM failed_at + make_interval(secs => $3) - now())::float8
		FROM login_failures
		WHERE scope = $1 AND key = $2 AND failed_at > now() - make_interval(secs => $3)
		ORDER BY failed_at DESC
		OFFSET $4 LIMIT 1`
	var secs float64
	err := s.pool.QueryRow(ctx, q, l.Scope, failureKey(l, key), l.Window.Seconds(), l.Max-1).Scan(&secs)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, dbError("login throttle", err)
	}
	return max(time.Duration(secs*float64(time.Second)), time.Second), nil
}

// RecordLoginFailure records a failed login for key under limit l and returns the number of
// failures of key within l.Window, this one included.
func (s *Store) RecordLoginFailure(ctx context.Context, l account.LoginLimit, key string) (int, error) {
	// The SELECT does not see the row the same statement inserts, hence the + 1.
	const q = `WITH ins AS (INSERT INTO login_failures (scope, key, failed_at) VALUES ($1, $2, now()))
		SELECT count(*) + 1 FROM login_failures
		WHERE scope = $1 AND key = $2 AND failed_at > now() - make_interval(secs => $3)`
	var n int
	if err := s.pool.QueryRow(ctx, q, l.Scope, failureKey(l, key), l.Window.Seconds()).Scan(&n); err != nil {
		return 0, dbError("record login failure", err)
	}
	return n, nil
}

// PruneLoginFailures deletes failures older than keep, which must be at least the longest window
// of any limit, and returns how many it deleted.
func (s *Store) PruneLoginFailures(ctx context.Context, keep time.Duration) (int64, error) {
	const q = `DELETE FROM login_failures WHERE failed_at < now() - make_interval(secs => $1)`
	tag, err := s.pool.Exec(ctx, q, keep.Seconds())
	if err != nil {
		return 0, dbError("prune login failures", err)
	}
	return tag.RowsAffected(), nil
}
