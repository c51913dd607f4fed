package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestSubject(t *testing.T) {
	id := uuid.MustParse("0194d3a2-7b3c-7d8e-9f00-112233445566")
	tests := []struct {
		typ  Type
		want string
	}{
		{UserCreated, "users.created." + id.String()},
		{UserRoleChanged, "users.role_changed." + id.String()},
		{UserStatusChanged, "users.status_changed." + id.String()},
	}
	for _, tt := range tests {
		got := Subject(tt.typ, id)
		if got != tt.want {
			t.Errorf("Subject(%s) = %q, want %q", tt.typ, got, tt.want)
		}
		if back, ok := SubjectUser(got); !ok || back != id {
			t.Errorf("SubjectUser(%q) = %v, %v; want %v", got, back, ok, id)
		}
	}
	for _, bad := range []string{"users.created", "users.created.nope", "orders.created." + id.String(), "users.a.b." + id.String()} {
		if _, ok := SubjectUser(bad); ok {
			t.Errorf("SubjectUser(%q) succeeded", bad)
		}
	}
}

func TestEventJSON(t *testing.T) {
	u := User{ID: uuid.New(), Email: "a@example.com", DisplayName: "A", Roles: []string{RoleUser}, Status: StatusActive, Version: 1}
	e, err := NewEvent(UserCreated, u, time.Date(2026, 11, 28, 9, 0, 0, 123456789, time.FixedZone("x", 3600)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type":"user.created"`, `"occurred_at":"2026-11-28T08:00:00.123456Z"`, `"user":{"id":"` + u.ID.String() + `","email":"a@example.com","display_name":"A","roles":["user"],"status":"active","version":1}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("event JSON %s lacks %s", b, want)
		}
	}
	if e.ID.Version() != 7 {
		t.Errorf("event id version = %d, want 7", e.ID.Version())
	}
}

func TestValidate(t *testing.T) {
	good := Event{ID: uuid.New(), Type: UserRoleChanged, OccurredAt: time.Now(), User: User{
		ID: uuid.New(), Email: "a@example.com", Roles: []string{RoleUser, RoleModerator}, Status: StatusActive, Version: 2,
	}}
	tests := []struct {
		name   string
		change func(*Event)
		ok     bool
	}{
		{"good", func(*Event) {}, true},
		{"unknown type is applied (full state)", func(e *Event) { e.Type = "user.renamed" }, true},
		{"unknown role is kept, grants nothing", func(e *Event) { e.User.Roles = append(e.User.Roles, "auditor") }, true},
		{"no id", func(e *Event) { e.ID = uuid.Nil }, false},
		{"no type", func(e *Event) { e.Type = "" }, false},
		{"no time", func(e *Event) { e.OccurredAt = time.Time{} }, false},
		{"no user id", func(e *Event) { e.User.ID = uuid.Nil }, false},
		{"bad email", func(e *Event) { e.User.Email = "not an email" }, false},
		{"no user role", func(e *Event) { e.User.Roles = []string{RoleAdmin} }, false},
		{"bad status", func(e *Event) { e.User.Status = "banned" }, false},
		{"version 0", func(e *Event) { e.User.Version = 0 }, false},
	}
	for _, tt := range tests {
		e := good
		e.User.Roles = append([]string(nil), good.User.Roles...)
		tt.change(&e)
		if err := e.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestNormalizeRoles(t *testing.T) {
	got := NormalizeRoles([]string{"admin", "moderator", "admin"})
	want := []string{RoleUser, RoleModerator, RoleAdmin}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("NormalizeRoles = %v, want %v", got, want)
	}
}
