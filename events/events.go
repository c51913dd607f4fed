// Package events holds the contracts that the services share: the user events that account
// publishes on JetStream, their subjects, and the names of the stream, consumers and key-value
// bucket that carry them. It is the only thing a service knows about another.
//
// Every event carries the full state of the user after the change and a per-user version that
// grows by one with every change, so a consumer converges whatever the order, number or timing of
// deliveries: it applies an event only when the event's version is newer than what it holds.
package events

import (
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Names fixed by the contract.
const (
	// StreamName is the JetStream stream that keeps the history of every user change.
	StreamName = "USERS"
	// StreamSubjects is the subject filter of StreamName.
	StreamSubjects = "users.>"
	// KeysBucket is the key-value bucket where account publishes its public keys.
	KeysBucket = "auth"
	// KeysKey is the key in KeysBucket whose value is the JWKS document.
	KeysKey = "jwks"
	// DuplicateWindow is the stream's de-duplication window for Nats-Msg-Id.
	DuplicateWindow = 20 * time.Minute
)

// Type names the kind of change an event records.
type Type string

// The event types.
const (
	UserCreated       Type = "user.created"
	UserRoleChanged   Type = "user.role_changed"
	UserStatusChanged Type = "user.status_changed"
)

// Known reports whether t is one of the event types of the contract.
func (t Type) Known() bool {
	switch t {
	case UserCreated, UserRoleChanged, UserStatusChanged:
		return true
	}
	return false
}

// Subject returns the subject an event of type t about user id is published on,
// e.g. users.role_changed.<id>.
func Subject(t Type, id uuid.UUID) string {
	return "users." + strings.TrimPrefix(string(t), "user.") + "." + id.String()
}

// SubjectUser returns the user id named by a subject of the USERS stream. It works for any
// message of the stream, even one whose payload cannot be decoded.
func SubjectUser(subject string) (uuid.UUID, bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 3 || parts[0] != "users" {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(parts[2])
	return id, err == nil
}

// Roles and statuses.
const (
	RoleUser      = "user"
	RoleModerator = "moderator"
	RoleAdmin     = "admin"

	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// Roles lists every role, in the order they are stored and shown.
var Roles = []string{RoleUser, RoleModerator, RoleAdmin}

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool { return slices.Contains(Roles, r) }

// ValidStatus reports whether s is a known status.
func ValidStatus(s string) bool { return s == StatusActive || s == StatusDisabled }

// NormalizeRoles returns roles sorted in the canonical order of Roles, without duplicates and
// always with RoleUser. It does not check that the roles are known.
func NormalizeRoles(roles []string) []string {
	out := []string{RoleUser}
	for _, r := range Roles[1:] {
		if slices.Contains(roles, r) {
			out = append(out, r)
		}
	}
	for _, r := range roles {
		if !ValidRole(r) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// User is the full state of a user after a change, as every event carries it.
type User struct {
	ID          uuid.UUID `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Roles       []string  `json:"roles"`
	Status      string    `json:"status"`
	Version     int64     `json:"version"`
}

// HasRole reports whether the user holds role r.
func (u User) HasRole(r string) bool { return slices.Contains(u.Roles, r) }

// Active reports whether the user's status is active.
func (u User) Active() bool { return u.Status == StatusActive }

// Event is the envelope of every message on the USERS stream.
type Event struct {
	ID         uuid.UUID `json:"id"`
	Type       Type      `json:"type"`
	OccurredAt time.Time `json:"occurred_at"`
	User       User      `json:"user"`
}

// NewEvent returns an event of type t carrying u, with a new time-ordered id (UUIDv7), occurring
// at now in UTC to the microsecond (the precision of Postgres and of the contract's example).
func NewEvent(t Type, u User, now time.Time) (Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("new event id: %w", err)
	}
	return Event{ID: id, Type: t, OccurredAt: now.UTC().Truncate(time.Microsecond), User: u}, nil
}

// Subject returns the subject e is published on.
func (e Event) Subject() string { return Subject(e.Type, e.User.ID) }

// ErrInvalid is wrapped by every error of Validate.
var ErrInvalid = errors.New("invalid event")

// Validate reports what makes e unusable by a consumer. An event that fails it can never be
// applied, however often it is delivered. It accepts a type or a role it does not know: the event
// carries the user's full state, so a consumer older than its producer still converges, and it
// grants nothing for a role it does not know.
func (e Event) Validate() error {
	var problems []string
	if e.ID == uuid.Nil {
		problems = append(problems, "missing id")
	}
	if e.Type == "" {
		problems = append(problems, "missing type")
	}
	if e.OccurredAt.IsZero() {
		problems = append(problems, "missing occurred_at")
	}
	u := e.User
	if u.ID == uuid.Nil {
		problems = append(problems, "missing user.id")
	}
	if _, err := mail.ParseAddress(u.Email); err != nil || u.Email == "" {
		problems = append(problems, "invalid user.email")
	}
	if !slices.Contains(u.Roles, RoleUser) {
		problems = append(problems, "user.roles lacks \"user\"")
	}
	if !ValidStatus(u.Status) {
		problems = append(problems, fmt.Sprintf("unknown status %q", u.Status))
	}
	if u.Version < 1 {
		problems = append(problems, "user.version below 1")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}
