package blog_test

import (
	"testing"

	"github.com/authmesh/blog/internal/blog"
	"github.com/authmesh/events"
	"github.com/google/uuid"
)

func TestPolicy(t *testing.T) {
	author := events.User{ID: uuid.New(), Roles: []string{events.RoleUser}}
	post := blog.Post{ID: uuid.New(), AuthorID: author.ID}
	other := func(roles ...string) events.User {
		return events.User{ID: uuid.New(), Roles: events.NormalizeRoles(roles)}
	}
	tests := []struct {
		name               string
		user               events.User
		canEdit, canDelete bool
	}{
		{"author", author, true, true},
		{"another user", other(), false, false},
		{"moderator", other(events.RoleModerator), false, true},
		{"admin", other(events.RoleAdmin), false, true},
		{"unknown role", other("editor"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := blog.CanEdit(tt.user, post); got != tt.canEdit {
				t.Errorf("CanEdit = %v, want %v", got, tt.canEdit)
			}
			if got := blog.CanDelete(tt.user, post); got != tt.canDelete {
				t.Errorf("CanDelete = %v, want %v", got, tt.canDelete)
			}
		})
	}
}
