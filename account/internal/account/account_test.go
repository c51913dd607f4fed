package account

import (
	"slices"
	"strings"
	"testing"

	"github.com/authmesh/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestValidateEmail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		email string
		ok    bool
	}{
		{"a@example.com", true},
		{"Mixed.Case+tag@Example.COM", true},
		{"user@localhost", true},
		{"", false},
		{"no-at-sign", false},
		{"a@", false},
		{"@example.com", false},
		{"A <a@example.com>", false},
		{"<a@example.com>", false},
		{" a@example.com", false},
		{"a@example.com ", false},
		{"a@example.com (comment)", false},
		{"a@example.com, b@example.com", false},
		{"a\x00b@example.com", false},
		{"a\nb@example.com", false},
		{strings.Repeat("a", 250) + "@example.com", false},
	}
	for _, tt := range tests {
		got := ValidateEmail(tt.email)
		if (got == "") != tt.ok {
			t.Errorf("ValidateEmail(%q) = %q, want ok=%v", tt.email, got, tt.ok)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		password string
		ok       bool
	}{
		{"1234567", false},
		{"12345678", true},
		{"        ", true}, // spaces are characters like any other; never trimmed
		{"ééééééé", false}, // 7 runes, 14 bytes: counted in characters
		{"éééééééé", true},
		{"🔑🔑🔑🔑🔑🔑🔑🔑", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{strings.Repeat("é", 128), true}, // 256 bytes
		{"", false},
	}
	for _, tt := range tests {
		got := ValidatePassword(tt.password)
		if (got == "") != tt.ok {
			t.Errorf("ValidatePassword(%q) = %q, want ok=%v", tt.password, got, tt.ok)
		}
	}
}

func TestValidateDisplayName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want string // normalised, when ok
		ok   bool
	}{
		{"Ada", "Ada", true},
		{"  Ada Lovelace  ", "Ada Lovelace", true},
		{"   ", "", false},
		{"", "", false},
		{strings.Repeat("n", 100), strings.Repeat("n", 100), true},
		{" " + strings.Repeat("n", 100) + " ", strings.Repeat("n", 100), true},
		{strings.Repeat("n", 101), "", false},
		{strings.Repeat("名", 100), strings.Repeat("名", 100), true},
		{"a\x00b", "", false},
		{"line\nbreak", "", false},
	}
	for _, tt := range tests {
		norm := NormalizeDisplayName(tt.name)
		got := ValidateDisplayName(norm)
		if (got == "") != tt.ok {
			t.Errorf("ValidateDisplayName(%q) = %q, want ok=%v", norm, got, tt.ok)
		}
		if tt.ok && norm != tt.want {
			t.Errorf("NormalizeDisplayName(%q) = %q, want %q", tt.name, norm, tt.want)
		}
	}
}

func TestRegistrationValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		reg  Registration
		want []string // fields
	}{
		{"valid", Registration{"a@example.com", "password1", "A"}, nil},
		{"all wrong", Registration{"nope", "short", ""}, []string{"email", "password", "display_name"}},
		{"password only", Registration{"a@example.com", "short", "A"}, []string{"password"}},
	}
	for _, tt := range tests {
		var got []string
		for _, e := range tt.reg.Validate() {
			if e.Message == "" {
				t.Errorf("%s: field %s has no message", tt.name, e.Field)
			}
			got = append(got, e.Field)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: Validate() fields (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestBehind(t *testing.T) {
	t.Parallel()
	db := User{ID: uuid.New(), Email: "a@example.com", DisplayName: "A", Roles: []string{"user"}, Status: "active", Version: 3}
	with := func(f func(*events.User)) events.User {
		s := db.Snapshot()
		s.Roles = slices.Clone(s.Roles)
		f(&s)
		return s
	}
	tests := []struct {
		name     string
		stream   events.User
		conflict bool
		want     bool
	}{
		{"same version, same state", with(func(*events.User) {}), false, false},
		{"same version, several states", with(func(*events.User) {}), true, true},
		{"same version, other roles", with(func(u *events.User) { u.Roles = []string{"user", "admin"} }), false, true},
		{"same version, other status", with(func(u *events.User) { u.Status = "disabled" }), false, true},
		{"a higher version, same state", with(func(u *events.User) { u.Version = 4 }), false, true},
		{"a lower version, another state (events pending)", with(func(u *events.User) { u.Version, u.Status = 2, "disabled" }), true, false},
	}
	for _, tt := range tests {
		if got := db.Behind(tt.stream, tt.conflict); got != tt.want {
			t.Errorf("%s: Behind(%+v, %v) = %v, want %v", tt.name, tt.stream, tt.conflict, got, tt.want)
		}
	}
}
