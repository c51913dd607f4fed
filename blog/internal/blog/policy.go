package blog

import "github.com/authmesh/events"

// Who may do what on the blog, in one place; the server asks these before it acts. Anyone, signed
// in or not, may read posts, and any signed-in, active user may write one (the server's
// Authenticator checks that much); the rest is below. Roles are those of the replica of account's
// users.

// CanEdit reports whether u may change p: only its author may.
func CanEdit(u events.User, p Post) bool { return u.ID == p.AuthorID }

// CanDelete reports whether u may delete p: its author, a moderator or an admin.
func CanDelete(u events.User, p Post) bool {
	return u.ID == p.AuthorID || u.HasRole(events.RoleModerator) || u.HasRole(events.RoleAdmin)
}
