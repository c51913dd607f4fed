package account

import (
	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Who may do what in account, in one place; the server asks these before it acts. Anyone may
// register, log in and read the public keys; any signed-in, active user may read their own
// profile (the server's Authenticator checks that much); the rest is below. Roles are account's
// own, read from its database at every request. One rule is the store's, since it holds across
// every change at once: no change may leave the system without an active admin (ErrLastAdmin).

// CanAdminister reports whether u may list users and change their roles and status: only an
// admin may.
func CanAdminister(u events.User) bool { return u.HasRole(events.RoleAdmin) }

// CanSeeUser reports whether u may read the user id: themself, or anyone as an admin. To anyone
// else the user does not exist, so that ids reveal nothing.
func CanSeeUser(u events.User, id uuid.UUID) bool {
	return u.ID == id || u.HasRole(events.RoleAdmin)
}
