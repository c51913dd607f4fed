package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pg"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// userRow is a row of users without the password hash.
type userRow struct {
	ID          uuid.UUID `db:"id"`
	Email       string    `db:"email"`
	DisplayName string    `db:"display_name"`
	Roles       []string  `db:"roles"`
	Status      string    `db:"status"`
	Version     int64     `db:"version"`
	CreatedAt   time.Time `db:"created_at"`
	UpdatedAt   time.Time `db:"updated_at"`
}

func (r userRow) user() account.User {
	return account.User{
		ID:          r.ID,
		Email:       r.Email,
		DisplayName: r.DisplayName,
		Roles:       r.Roles,
		Status:      r.Status,
		Version:     r.Version,
		CreatedAt:   r.CreatedAt.UTC(),
		UpdatedAt:   r.UpdatedAt.UTC(),
	}
}

const userColumns = `id, email, display_name, roles, status, version, created_at, updated_at`

// queryUser runs a query returning at most one user row; none is account.ErrNotFound.
func queryUser(ctx context.Context, q querier, sql string, args ...any) (account.User, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return account.User{}, err
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[userRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return account.User{}, account.ErrNotFound
	}
	if err != nil {
		return account.User{}, err
	}
	return row.user(), nil
}

// addEvent writes the event of a change of u to the outbox, in the change's transaction.
func addEvent(ctx context.Context, tx pgx.Tx, t events.Type, u account.User) error {
	e, err := events.NewEvent(t, u.Snapshot(), u.UpdatedAt)
	if err != nil {
		return err
	}
	if err := outbox.Add(ctx, tx, e); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// NewUser is what CreateUser stores.
type NewUser struct {
	Email        string
	DisplayName  string
	PasswordHash string
	// Roles are normalised (events.NormalizeRoles); none gives ["user"].
	Roles []string
}

// CreateUser stores an active user at version 1 and its user.created event in one transaction.
// It returns account.ErrEmailTaken when another user has the email, compared case-insensitively.
func (s *Store) CreateUser(ctx context.Context, nu NewUser) (account.User, error) {
	// One clock reading for both times: two calls of clock_timestamp() may differ.
	const q = `INSERT INTO users (id, email, display_name, password_hash, roles, status, version, created_at, updated_at)
		SELECT $1, $2, $3, $4, $5, 'active', 1, t, t FROM clock_timestamp() AS t
		RETURNING ` + userColumns
	id, err := uuid.NewV7()
	if err != nil {
		return account.User{}, fmt.Errorf("new user id: %w", err)
	}
	var u account.User
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		u, err = queryUser(ctx, tx, q, id, nu.Email, nu.DisplayName, nu.PasswordHash, events.NormalizeRoles(nu.Roles))
		if err != nil {
			return err
		}
		return addEvent(ctx, tx, events.UserCreated, u)
	})
	if pg.UniqueViolation(err, "users_email_lower_key") {
		return account.User{}, account.ErrEmailTaken
	}
	if err != nil {
		return account.User{}, dbError("create user", err)
	}
	return u, nil
}

// User returns the user with the given id, or account.ErrNotFound.
func (s *Store) User(ctx context.Context, id uuid.UUID) (account.User, error) {
	const q = `SELECT ` + userColumns + ` FROM users WHERE id = $1`
	u, err := queryUser(ctx, s.pool, q, id)
	if err != nil && !errors.Is(err, account.ErrNotFound) {
		return account.User{}, dbError("get user", err)
	}
	return u, err
}

// UserByEmail returns the user whose email equals email case-insensitively, or
// account.ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (account.User, error) {
	u, _, err := s.Credentials(ctx, email)
	return u, err
}

// Credentials returns the user whose email equals email case-insensitively and their password
// hash, or account.ErrNotFound.
func (s *Store) Credentials(ctx context.Context, email string) (account.User, string, error) {
	const q = `SELECT ` + userColumns + `, password_hash FROM users WHERE lower(email) = lower($1)`
	var (
		r    userRow
		hash string
	)
	err := s.pool.QueryRow(ctx, q, email).Scan(&r.ID, &r.Email, &r.DisplayName, &r.Roles, &r.Status,
		&r.Version, &r.CreatedAt, &r.UpdatedAt, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return account.User{}, "", account.ErrNotFound
	}
	if err != nil {
		return account.User{}, "", dbError("get credentials", err)
	}
	return r.user(), hash, nil
}

// ListUsers returns at most limit users after cursor, oldest first (ties broken by id).
func (s *Store) ListUsers(ctx context.Context, after account.Cursor, limit int) ([]account.User, error) {
	const q = `SELECT ` + userColumns + ` FROM users
		WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2)
		ORDER BY created_at, id
		LIMIT $3`
	var at *time.Time
	if !after.CreatedAt.IsZero() {
		at = &after.CreatedAt
	}
	rows, err := s.pool.Query(ctx, q, at, after.ID, limit)
	if err != nil {
		return nil, dbError("list users", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[userRow])
	if err != nil {
		return nil, dbError("list users", err)
	}
	users := make([]account.User, len(list))
	for i, r := range list {
		users[i] = r.user()
	}
	return users, nil
}

// SetRoles replaces the roles of user id (normalised: "user" is always kept), increments its
// version and records a user.role_changed event, all in one transaction. It returns
// account.ErrNotFound for an unknown user, and account.ErrLastAdmin, changing nothing, when it
// would take the admin role from the last active admin. Roles must be known (events.ValidRole).
func (s *Store) SetRoles(ctx context.Context, id uuid.UUID, roles []string) (account.User, error) {
	return s.change(ctx, id, events.UserRoleChanged, func(u *account.User) bool {
		u.Roles = events.NormalizeRoles(roles)
		return true
	})
}

// SetStatus sets the status of user id, increments its version and records a
// user.status_changed event, all in one transaction. It returns account.ErrNotFound for an unknown
// user, and account.ErrLastAdmin, changing nothing, when it would disable the last active admin.
// The status must be known (events.ValidStatus).
func (s *Store) SetStatus(ctx context.Context, id uuid.UUID, status string) (account.User, error) {
	return s.change(ctx, id, events.UserStatusChanged, func(u *account.User) bool {
		u.Status = status
		return true
	})
}

// GrantRole adds role to user id if the user lacks it, as SetRoles does; a user who holds it
// already is returned unchanged, without a new version or event.
func (s *Store) GrantRole(ctx context.Context, id uuid.UUID, role string) (account.User, error) {
	return s.change(ctx, id, events.UserRoleChanged, func(u *account.User) bool {
		if u.HasRole(role) {
			return false
		}
		u.Roles = events.NormalizeRoles(append(u.Roles, role))
		return true
	})
}

// lockAdmins serialises the changes that take an active admin away, between instances: each
// counts the admins left only once the previous one has committed, so two admins demoting each
// other at once cannot both succeed. The two-key form cannot collide with the one-bigint locks of
// the shared libraries.
const lockAdmins = `SELECT pg_advisory_xact_lock(hashtext('account'), hashtext('active_admins'))`

// change locks user id, lets mutate change its roles or status, and when mutate reports a change,
// stores it with the next version and records an event of type t, in one transaction. Locking
// the row first makes the versions of one user strictly sequential.
//
// A change that makes an active admin anything else also takes lockAdmins, and is refused with
// account.ErrLastAdmin when no other active admin would remain. The lock is taken after the row
// lock and its holder waits for nothing else, so the two cannot deadlock. The transaction is READ
// COMMITTED whatever the server's default, so that the count, a statement started after the lock
// was granted, sees every change committed before it.
func (s *Store) change(ctx context.Context, id uuid.UUID, t events.Type, mutate func(*account.User) bool) (account.User, error) {
	const (
		lock   = `SELECT ` + userColumns + ` FROM users WHERE id = $1 FOR UPDATE`
		others = `SELECT EXISTS (SELECT 1 FROM users
			WHERE id <> $1 AND status = 'active' AND 'admin' = ANY (roles))`
		update = `UPDATE users
			SET roles = $2, status = $3, version = version + 1, updated_at = greatest(clock_timestamp(), updated_at)
			WHERE id = $1
			RETURNING ` + userColumns
	)
	var u account.User
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		var err error
		if u, err = queryUser(ctx, tx, lock, id); err != nil {
			return err
		}
		wasAdmin := u.ActiveAdmin()
		if !mutate(&u) {
			return nil
		}
		if wasAdmin && !u.ActiveAdmin() {
			if _, err := tx.Exec(ctx, lockAdmins); err != nil {
				return err
			}
			var ok bool
			if err := tx.QueryRow(ctx, others, id).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				return account.ErrLastAdmin
			}
		}
		if u, err = queryUser(ctx, tx, update, id, u.Roles, u.Status); err != nil {
			return err
		}
		return addEvent(ctx, tx, t, u)
	})
	if errors.Is(err, account.ErrNotFound) || errors.Is(err, account.ErrLastAdmin) {
		return account.User{}, err
	}
	if err != nil {
		return account.User{}, dbError(fmt.Sprintf("change user %s", id), err)
	}
	return u, nil
}
