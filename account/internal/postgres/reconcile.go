package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pg"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// HasEvent reports whether the outbox holds the event id, published or not.
func (s *Store) HasEvent(ctx context.Context, id uuid.UUID) (bool, error) {
	ok, err := outbox.Has(ctx, s.pool, id)
	return ok, dbError("has event", err)
}

// AllUsers returns every user, keyed by id.
func (s *Store) AllUsers(ctx context.Context) (map[uuid.UUID]account.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users`)
	if err != nil {
		return nil, dbError("read users", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[userRow])
	if err != nil {
		return nil, dbError("read users", err)
	}
	users := make(map[uuid.UUID]account.User, len(list))
	for _, r := range list {
		users[r.ID] = r.user()
	}
	return users, nil
}

// StreamUser is the newest state of a user in the USERS stream, which ReconcileUser compares the
// database with.
type StreamUser struct {
	events.User
	// Conflict says that the stream holds other states of the user at the same version.
	Conflict bool
	// CreatedAt is when the user was created, as the stream tells (zero: unknown); it is the
	// created_at of a user the database lacks.
	CreatedAt time.Time
}

// Reconciled is what ReconcileUser did.
type Reconciled int

// The outcomes of ReconcileUser.
const (
	// Unchanged: the database was not behind the stream for that user.
	Unchanged Reconciled = iota
	// Bumped: the user's version was set above the stream's, its state kept.
	Bumped
	// RestoredDisabled: the user, unknown to the database, was inserted from the stream, disabled.
	RestoredDisabled
)

// ReconcileUser brings the database's user su.ID above the stream when the database is behind it
// (account.User.Behind), as after a restore from an older backup: the user gets the version
// su.Version+1 with the database's roles and status, which are the truth after a restore, and an
// event carrying that state, in one transaction. A user the database lacks (registered after the
// backup) is inserted from the stream's state, with status disabled, the password hash
// unusableHash (one that no password verifies) and version su.Version+1, and its
// user.status_changed event. So every replica takes the database's state, whose versions grow
// again from there. A user the database is not behind for is left alone: Unchanged, no event.
//
// It returns account.ErrEmailTaken when a user to insert has the email of another user of the
// database.
func (s *Store) ReconcileUser(ctx context.Context, su StreamUser, unusableHash string) (Reconciled, account.User, error) {
	const (
		lock   = `SELECT ` + userColumns + ` FROM users WHERE id = $1 FOR UPDATE`
		bump   = `UPDATE users SET version = $2, updated_at = greatest(clock_timestamp(), updated_at) WHERE id = $1 RETURNING ` + userColumns
		insert = `INSERT INTO users (id, email, display_name, password_hash, roles, status, version, created_at, updated_at)
			SELECT $1, $2, $3, $4, $5, 'disabled', $6, least(COALESCE($7, t), t), t FROM clock_timestamp() AS t
			RETURNING ` + userColumns
	)
	if su.Version >= math.MaxInt64 {
		return Unchanged, account.User{}, fmt.Errorf("reconcile user %s: the stream's version %d leaves no version above it", su.ID, su.Version)
	}
	var (
		done Reconciled
		u    account.User
	)
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		done = Unchanged
		var err error
		u, err = queryUser(ctx, tx, lock, su.ID)
		switch {
		case errors.Is(err, account.ErrNotFound):
			var created *time.Time
			if !su.CreatedAt.IsZero() {
				created = &su.CreatedAt
			}
			u, err = queryUser(ctx, tx, insert, su.ID, su.Email, su.DisplayName, unusableHash,
				events.NormalizeRoles(su.Roles), su.Version+1, created)
			if err != nil {
				return err
			}
			done = RestoredDisabled
			return addEvent(ctx, tx, events.UserStatusChanged, u)
		case err != nil:
			return err
		case !u.Behind(su.User, su.Conflict):
			return nil
		}
		t := events.UserRoleChanged
		if u.Status != su.Status {
			t = events.UserStatusChanged
		}
		if u, err = queryUser(ctx, tx, bump, su.ID, su.Version+1); err != nil {
			return err
		}
		done = Bumped
		return addEvent(ctx, tx, t, u)
	})
	if pg.UniqueViolation(err, "users_email_lower_key") {
		return Unchanged, account.User{}, fmt.Errorf("reconcile user %s: %w", su.ID, account.ErrEmailTaken)
	}
	if err != nil {
		return Unchanged, account.User{}, dbError(fmt.Sprintf("reconcile user %s", su.ID), err)
	}
	return done, u, nil
}
