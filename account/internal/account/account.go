// Package account is the vocabulary of the account service: users, the rules their fields
// follow, the limits on failed logins, and the errors the other packages share. It knows
// nothing of HTTP or SQL.
package account

import (
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

// Errors shared by the store and the server.
var (
	// ErrNotFound means no user has the given id or email.
	ErrNotFound = errors.New("user not found")
	// ErrEmailTaken means another user has the email, compared case-insensitively.
	ErrEmailTaken = errors.New("email taken")
	// ErrLastAdmin means a change would leave no active admin, and nobody could administer users
	// any more.
	ErrLastAdmin = errors.New("the last active admin")
	// ErrUnavailable means the database could not answer in time; the request may be retried.
	ErrUnavailable = errors.New("database unavailable")
)

// User is an account as the service stores and shows it. The password hash is not part of it: it
// is read only by the login (see postgres.Store.Credentials).
type User struct {
	ID          uuid.UUID
	Email       string
	DisplayName string
	Roles       []string
	Status      string
	Version     int64
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Snapshot is the state of u carried by the events about it.
func (u User) Snapshot() events.User {
	return events.User{
		ID:          u.ID,
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Roles:       u.Roles,
		Status:      u.Status,
		Version:     u.Version,
	}
}

// HasRole reports whether u holds role r.
func (u User) HasRole(r string) bool { return u.Snapshot().HasRole(r) }

// ActiveAdmin reports whether u can administer users: an admin whose status is active.
func (u User) ActiveAdmin() bool { return u.HasRole(events.RoleAdmin) && u.Snapshot().Active() }

// Cursor is the position after which a page of users starts: the sort key of the last user seen
// (lists are oldest first: CreatedAt, then ID). The zero Cursor starts from the first user.
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// Page is the page of a list a request asks for: at most Limit items after After, or from the
// start when After is nil.
type Page struct {
	Limit int
	After *Cursor
}

// Field limits.
const (
	MinPassword    = 8   // characters (runes)
	MaxPassword    = 128 // characters (runes)
	MaxDisplayName = 100 // characters (runes), after trimming
	MaxEmail       = 254 // bytes (RFC 5321 path limit)
)

// FieldError names one invalid field and says what is wrong with it.
type FieldError struct {
	Field   string
	Message string
}

// ValidateEmail reports what is wrong with email as an account's address, or "" when nothing is:
// it must be a bare address (no display name, no angle brackets, no surrounding space) that
// net/mail accepts.
func ValidateEmail(email string) string {
	switch {
	case email == "":
		return "is required"
	case len(email) > MaxEmail:
		return fmt.Sprintf("must be at most %d bytes", MaxEmail)
	case strings.IndexFunc(email, unicode.IsControl) >= 0:
		return "must not contain control characters"
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Name != "" || addr.Address != email {
		return "must be an email address such as name@example.com"
	}
	return ""
}

// ValidatePassword reports what is wrong with password as a new password, or "" when nothing is.
// Length is counted in characters; the password is neither trimmed nor normalised.
func ValidatePassword(password string) string {
	n := utf8.RuneCountInString(password)
	if n < MinPassword || n > MaxPassword {
		return fmt.Sprintf("must be %d to %d characters", MinPassword, MaxPassword)
	}
	return ""
}

// NormalizeDisplayName returns name as it is stored: without surrounding white space.
func NormalizeDisplayName(name string) string { return strings.TrimSpace(name) }

// ValidateDisplayName reports what is wrong with name (already normalised), or "".
func ValidateDisplayName(name string) string {
	n := utf8.RuneCountInString(name)
	switch {
	case n < 1 || n > MaxDisplayName:
		return fmt.Sprintf("must be 1 to %d characters after trimming spaces", MaxDisplayName)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "must not contain control characters"
	}
	return ""
}

// Registration is what a new user gives.
type Registration struct {
	Email       string
	Password    string
	DisplayName string
}

// Validate returns the invalid fields of r, or none. It expects DisplayName normalised.
func (r Registration) Validate() []FieldError {
	var errs []FieldError
	for _, f := range []struct{ field, msg string }{
		{"email", ValidateEmail(r.Email)},
		{"password", ValidatePassword(r.Password)},
		{"display_name", ValidateDisplayName(r.DisplayName)},
	} {
		if f.msg != "" {
			errs = append(errs, FieldError{Field: f.field, Message: f.msg})
		}
	}
	return errs
}

// LoginLimit bounds failed logins: at most Max failures of one key within Window; once reached,
// logins for that key are refused until the oldest of those failures leaves the window.
type LoginLimit struct {
	Scope  string // what the key is: "email" or "address"
	Max    int
	Window time.Duration
}

// The login limits of the contract.
var (
	// EmailLimit applies per account, keyed by the lower-cased email (known or not).
	EmailLimit = LoginLimit{Scope: "email", Max: 10, Window: 15 * time.Minute}
	// AddressLimit applies per client address.
	AddressLimit = LoginLimit{Scope: "address", Max: 100, Window: time.Minute}
)

// Behind reports whether u, the database's state of a user, is behind s, the newest state of that
// user in the USERS stream: the stream holds a higher version, or the same version in another
// state, or (conflict) in several states. Either way the stream holds a version of the user that
// this database did not make, as after a restore from a backup older than the stream; the next
// change would publish a version that every replica ignores as stale. A database ahead of the
// stream (events not yet published) is not behind.
func (u User) Behind(s events.User, conflict bool) bool {
	switch {
	case s.Version > u.Version:
		return true
	case s.Version < u.Version:
		return false
	}
	return conflict || !SameState(u.Snapshot(), s)
}

// SameState reports whether a and b are the same state of a user, their versions aside.
func SameState(a, b events.User) bool {
	return a.ID == b.ID && a.Email == b.Email && a.DisplayName == b.DisplayName &&
		slices.Equal(a.Roles, b.Roles) && a.Status == b.Status
}
