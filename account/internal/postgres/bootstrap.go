package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ErrStale is returned by ResetAdmin when the user's password hash is no longer the one the
// caller verified: someone (another instance starting beside this one) changed it meanwhile.
var ErrStale = errors.New("user changed meanwhile")

// AdminReset is what ResetAdmin makes of a user: an active admin, with a new password hash if
// Hash is set.
type AdminReset struct {
	ID uuid.UUID
	// Verified is the password hash the caller read and checked the bootstrap password against.
	Verified string
	// Hash, when not empty, replaces the password hash.
	Hash string
	// Revoke, when set, is stored as the only pending signing key, every other key revoked, if the
	// reset changes the password or grants the admin role: the tokens issued before a takeover
	// must stop working.
	Revoke *SealedKey
}

// AdminResult is what ResetAdmin did.
type AdminResult struct {
	User            account.User
	PasswordChanged bool
	AdminGranted    bool
	Activated       bool
	RevokedKeys     int64 // keys revoked
}

// ResetAdmin makes user r.ID an active admin, with password hash r.Hash when set, in one
// transaction with its events (user.role_changed, then user.status_changed, each at the next
// version and with the full state) and, when the password or the roles change, the revocation of
// every signing key (r.Revoke). It returns account.ErrNotFound for an unknown user and ErrStale
// when the stored hash is not r.Verified. A user who is already an active admin with that
// password is left as it is.
func (s *Store) ResetAdmin(ctx context.Context, r AdminReset) (AdminResult, error) {
	const (
		lock     = `SELECT password_hash FROM users WHERE id = $1 FOR UPDATE`
		get      = `SELECT ` + userColumns + ` FROM users WHERE id = $1`
		password = `UPDATE users SET password_hash = $2 WHERE id = $1`
		// As in change: one version per event, the time never going back.
		update = `UPDATE users
			SET roles = $2, status = $3, version = version + 1, updated_at = greatest(clock_timestamp(), updated_at)
			WHERE id = $1
			RETURNING ` + userColumns
	)
	var res AdminResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = AdminResult{}
		var hash string
		err := tx.QueryRow(ctx, lock, r.ID).Scan(&hash)
		if errors.Is(err, pgx.ErrNoRows) {
			return account.ErrNotFound
		}
		if err != nil {
			return err
		}
		if hash != r.Verified {
			return ErrStale
		}
		u, err := queryUser(ctx, tx, get, r.ID)
		if err != nil {
			return err
		}
		if r.Hash != "" && r.Hash != hash {
			if _, err := tx.Exec(ctx, password, r.ID, r.Hash); err != nil {
				return err
			}
			res.PasswordChanged = true
		}
		if !u.HasRole(events.RoleAdmin) {
			roles := events.NormalizeRoles(append(slices.Clone(u.Roles), events.RoleAdmin))
			if u, err = queryUser(ctx, tx, update, r.ID, roles, u.Status); err != nil {
				return err
			}
			if err := addEvent(ctx, tx, events.UserRoleChanged, u); err != nil {
				return err
			}
			res.AdminGranted = true
		}
		if u.Status != events.StatusActive {
			if u, err = queryUser(ctx, tx, update, r.ID, u.Roles, events.StatusActive); err != nil {
				return err
			}
			if err := addEvent(ctx, tx, events.UserStatusChanged, u); err != nil {
				return err
			}
			res.Activated = true
		}
		res.User = u
		if r.Revoke != nil && (res.PasswordChanged || res.AdminGranted) {
			if res.RevokedKeys, err = revokeKeys(ctx, tx, *r.Revoke); err != nil {
				return fmt.Errorf("revoke signing keys: %w", err)
			}
		}
		return nil
	})
	if errors.Is(err, account.ErrNotFound) || errors.Is(err, ErrStale) {
		return AdminResult{}, err
	}
	if err != nil {
		return AdminResult{}, dbError(fmt.Sprintf("reset admin %s", r.ID), err)
	}
	return res, nil
}
