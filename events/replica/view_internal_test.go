package replica

import (
	"testing"

	"github.com/authmesh/events"
	"github.com/google/uuid"
)

func viewUser(id uuid.UUID, version int64, roles ...string) events.User {
	return events.User{ID: id, Email: "a@example.com", DisplayName: "A", Roles: roles, Status: events.StatusActive, Version: version}
}

// The view's rules, without Postgres: a store is refused after a drop it raced with, while the view
// is disabled, and below the version it holds; a reset empties it.
func TestViewRules(t *testing.T) {
	t.Parallel()
	id := uuid.New()

	t.Run("disabled until reset", func(t *testing.T) {
		v := newView(10)
		v.store(v.begin(), viewUser(id, 1))
		if _, ok := v.get(id); ok {
			t.Fatal("a view never enabled answered")
		}
		v.reset(true)
		v.store(v.begin(), viewUser(id, 1))
		if _, ok := v.get(id); !ok {
			t.Fatal("an enabled view lost a store")
		}
		v.reset(false)
		if _, ok := v.get(id); ok {
			t.Fatal("a disabled view answered")
		}
	})

	t.Run("a read that raced with a drop is not kept", func(t *testing.T) {
		v := newView(10)
		v.reset(true)
		epoch := v.begin() // the read of the old row starts
		v.drop(id)         // the change's notification arrives
		v.store(epoch, viewUser(id, 1, events.RoleAdmin))
		if u, ok := v.get(id); ok {
			t.Fatalf("the view kept %v, read before the drop", u)
		}
		v.store(v.begin(), viewUser(id, 2, events.RoleUser)) // the read after the drop
		if u, ok := v.get(id); !ok || u.Version != 2 {
			t.Fatalf("get = %v, %v; want version 2", u, ok)
		}
	})

	t.Run("a reset also fences reads in flight", func(t *testing.T) {
		v := newView(10)
		v.reset(true)
		epoch := v.begin()
		v.reset(true)
		v.store(epoch, viewUser(id, 1))
		if _, ok := v.get(id); ok {
			t.Fatal("the view kept a read that began before a reset")
		}
	})

	t.Run("held while this instance commits", func(t *testing.T) {
		v := newView(10)
		v.reset(true)
		v.store(v.begin(), viewUser(id, 1, events.RoleAdmin))
		v.hold([]uuid.UUID{id})
		if _, ok := v.get(id); ok {
			t.Fatal("a held user is answered from the view")
		}
		v.store(v.begin(), viewUser(id, 1, events.RoleAdmin)) // read during the commit
		v.hold([]uuid.UUID{id})                               // a second batch holds it too
		v.release([]uuid.UUID{id})
		v.store(v.begin(), viewUser(id, 1, events.RoleAdmin))
		if _, ok := v.get(id); ok {
			t.Fatal("a user still held by a batch was stored")
		}
		epoch := v.begin() // a read that began before the last release
		v.release([]uuid.UUID{id})
		v.store(epoch, viewUser(id, 1, events.RoleAdmin))
		if _, ok := v.get(id); ok {
			t.Fatal("a read from before the release was kept")
		}
		v.store(v.begin(), viewUser(id, 2, events.RoleUser))
		if u, ok := v.get(id); !ok || u.Version != 2 {
			t.Fatalf("after the release: get = %v, %v; want version 2", u, ok)
		}
	})

	t.Run("never an older version over a newer", func(t *testing.T) {
		v := newView(10)
		v.reset(true)
		v.store(v.begin(), viewUser(id, 3))
		v.store(v.begin(), viewUser(id, 2))
		if u, _ := v.get(id); u.Version != 3 {
			t.Fatalf("version = %d, want 3", u.Version)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		v := newView(2)
		v.reset(true)
		for range 3 {
			u := viewUser(uuid.New(), 1)
			v.store(v.begin(), u)
		}
		if n := v.users.Len(); n != 2 {
			t.Fatalf("view holds %d users, want its size 2", n)
		}
	})

	t.Run("no view", func(t *testing.T) {
		var v *view = newView(-1)
		v.reset(true)
		v.store(v.begin(), viewUser(id, 1))
		v.drop(id)
		if _, ok := v.get(id); ok {
			t.Fatal("a nil view answered")
		}
	})
}
