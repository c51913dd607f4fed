package account_test

import (
	"testing"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/google/uuid"
)

func TestPolicy(t *testing.T) {
	target := uuid.New()
	user := func(id uuid.UUID, roles ...string) events.User {
		return events.User{ID: id, Roles: events.NormalizeRoles(roles), Status: events.StatusActive}
	}
	tests := []struct {
		name                     string
		user                     events.User
		canAdminister, canSeeOne bool
	}{
		{"the user themself", user(target), false, true},
		{"another user", user(uuid.New()), false, false},
		{"a moderator", user(uuid.New(), events.RoleModerator), false, false},
		{"an admin", user(uuid.New(), events.RoleAdmin), true, true},
		{"an unknown role", user(uuid.New(), "root"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := account.CanAdminister(tt.user); got != tt.canAdminister {
				t.Errorf("CanAdminister = %v, want %v", got, tt.canAdminister)
			}
			if got := account.CanSeeUser(tt.user, target); got != tt.canSeeOne {
				t.Errorf("CanSeeUser = %v, want %v", got, tt.canSeeOne)
			}
		})
	}
}
