package shop

import (
	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Who may do what in the shop, in one place; the server asks these before it acts. Anyone, signed
// in or not, may read the catalogue, and any signed-in, active user may place an order (the
// server's Authenticator checks that much); the rest is below. Roles are those of the replica of
// account's users.

// CanManageCatalogue reports whether u may add products and change them: only an admin may.
func CanManageCatalogue(u events.User) bool { return u.HasRole(events.RoleAdmin) }

// CanSeeOrder reports whether u may see o: its owner or an admin. To anyone else the order does not
// exist, so that order ids reveal nothing.
func CanSeeOrder(u events.User, o Order) bool {
	return o.UserID == u.ID || u.HasRole(events.RoleAdmin)
}

// CanListOrdersOf reports whether u may list the orders of the user userID: their own, or anyone's
// as an admin.
func CanListOrdersOf(u events.User, userID uuid.UUID) bool {
	return userID == u.ID || u.HasRole(events.RoleAdmin)
}

// CanListAllOrders reports whether u may list every user's orders at once: only an admin may.
func CanListAllOrders(u events.User) bool { return u.HasRole(events.RoleAdmin) }
