package postgres

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/jackc/pgx/v5"
)

// Logins are counted on the database's clock, so that every instance counts alike, and before
// their password is checked, so that a burst of simultaneous attempts cannot all slip under a
// limit while their hashes are computed: each attempt is a pending row of login_failures from the
// moment it is let through, counted like a failure; a failed login then marks its row as a
// failure, a successful one deletes it. A row left pending longer than stalePending (its instance
// died, or could not write) is taken for a failure, which errs on the safe side.

// stalePending is how long an attempt may stay pending before it is taken for a failure: far
// longer than a login takes (a hashing slot is waited for 2 s, a statement 5 s).
const stalePending = time.Minute

// inFlightWait is the Retry-After of a login refused because attempts in flight fill the limit:
// they settle within seconds, and those that succeed free their place.
const inFlightWait = time.Second

// LoginKey is a key counted under a limit: a user, an email or a client address.
type LoginKey struct {
	Limit account.LoginLimit
	Key   string
}

// digest is what a login_failures row stores for k: a digest, so that the table holds no emails
// or addresses, its rows have a fixed size whatever the client sent, and any string (even one
// Postgres cannot store as text) can be a key.
func (k LoginKey) digest() [sha256.Size]byte {
	return sha256.Sum256([]byte(k.Limit.Scope + "\x00" + k.Key))
}

// LoginAttempt is a login let through by BeginLogin. It counts as a failure under each of its
// keys until ForgetLogin forgets it; FailLogin makes it one.
type LoginAttempt struct {
	ids []int64
	// Counts are, per key in the order given to BeginLogin, the attempts and failures of the key
	// within its window, this one included.
	Counts []int
}

// BeginLogin counts a login attempt under every key, atomically. When a key already has
// Limit.Max failures and attempts in flight within its window, it records nothing and returns how
// long that key (the longest, if several) stays refused: when failures alone fill the limit, the
// time until the oldest of the last Limit.Max of them leaves the window, at least a second; else
// inFlightWait. Otherwise it records the attempt, pending, under every key and returns it, with a
// zero wait.
//
// Each key is locked (a transaction-level advisory lock on its digest) from the count to the
// insert, so concurrent attempts for one key are let through one at a time and never more than
// Limit.Max. Keys are locked in a fixed order, so attempts sharing two keys cannot deadlock.
func (s *Store) BeginLogin(ctx context.Context, keys []LoginKey) (LoginAttempt, time.Duration, error) {
	const (
		// The two-key form of the advisory lock cannot collide with the one-bigint locks of the
		// shared libraries; a collision of two digests only makes their attempts wait in turn.
		lock = `SELECT pg_advisory_xact_lock(hashtext('account.login'), $1)`
		// The failures and attempts in flight within the window, and when the Limit.Max-th newest
		// failure leaves it (NULL when there are fewer failures).
		count = `SELECT count(*)::int,
			extract(epoch FROM (array_agg(failed_at ORDER BY failed_at DESC)
				FILTER (WHERE NOT pending OR failed_at <= now() - make_interval(secs => $5)))[$4]
				+ make_interval(secs => $3) - now())::float8
			FROM login_failures
			WHERE scope = $1 AND key = $2 AND failed_at > now() - make_interval(secs => $3)`
		insert = `INSERT INTO login_failures (scope, key, failed_at, pending) VALUES ($1, $2, now(), true) RETURNING id`
	)
	type locked struct {
		LoginKey
		digest string
		lockID int32
	}
	ks := make([]locked, len(keys))
	for i, k := range keys {
		d := k.digest()
		ks[i] = locked{k, hex.EncodeToString(d[:]), int32(binary.BigEndian.Uint32(d[:4]))}
	}
	order := slices.SortedFunc(slices.Values(ks), func(a, b locked) int { return cmp.Compare(a.lockID, b.lockID) })

	var (
		a    LoginAttempt
		wait time.Duration
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, k := range order {
			if _, err := tx.Exec(ctx, lock, k.lockID); err != nil {
				return err
			}
		}
		a.Counts = make([]int, len(ks))
		for i, k := range ks {
			var secs *float64
			err := tx.QueryRow(ctx, count, k.Limit.Scope, k.digest, k.Limit.Window.Seconds(), k.Limit.Max,
				stalePending.Seconds()).Scan(&a.Counts[i], &secs)
			if err != nil {
				return err
			}
			switch {
			case secs != nil: // failures fill the limit
				wait = max(wait, time.Duration(*secs*float64(time.Second)), time.Second)
			case a.Counts[i] >= k.Limit.Max:
				wait = max(wait, inFlightWait)
			}
		}
		if wait > 0 {
			return nil // nothing written
		}
		a.ids = make([]int64, len(ks))
		for i, k := range ks {
			if err := tx.QueryRow(ctx, insert, k.Limit.Scope, k.digest).Scan(&a.ids[i]); err != nil {
				return err
			}
			a.Counts[i]++
		}
		return nil
	})
	if err != nil {
		return LoginAttempt{}, 0, dbError("begin login", err)
	}
	if wait > 0 {
		return LoginAttempt{}, wait, nil
	}
	return a, 0, nil
}

// FailLogin records attempt a as a failed login (a wrong password, an unknown email).
func (s *Store) FailLogin(ctx context.Context, a LoginAttempt) error {
	const q = `UPDATE login_failures SET pending = false WHERE id = ANY ($1)`
	if _, err := s.pool.Exec(ctx, q, a.ids); err != nil {
		return dbError("record login failure", err)
	}
	return nil
}

// ForgetLogin forgets attempt a: the login succeeded, or ended without checking the password (the
// hasher was busy, the client went away), which is no failure.
func (s *Store) ForgetLogin(ctx context.Context, a LoginAttempt) error {
	const q = `DELETE FROM login_failures WHERE id = ANY ($1)`
	if _, err := s.pool.Exec(ctx, q, a.ids); err != nil {
		return dbError("forget login attempt", err)
	}
	return nil
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
