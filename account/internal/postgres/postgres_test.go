package postgres_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pgtest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newStore returns a store on a fresh, migrated database.
func newStore(t *testing.T) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	// A second run applies nothing and fails on nothing.
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	return postgres.New(pool), pool
}

// outboxCount is the number of events in the outbox, pending or published.
func outboxCount(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	st, err := outbox.Status(t.Context(), pool)
	if err != nil {
		t.Fatalf("outbox.Status: %v", err)
	}
	return st.Pending + st.Published
}

func newUser(email string) postgres.NewUser {
	return postgres.NewUser{Email: email, DisplayName: "Someone", PasswordHash: "$argon2id$not-a-real-hash"}
}

func mustCreate(t *testing.T, s *postgres.Store, email string) account.User {
	t.Helper()
	u, err := s.CreateUser(t.Context(), newUser(email))
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", email, err)
	}
	return u
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()

	u, err := s.CreateUser(ctx, postgres.NewUser{Email: "Ann@Example.com", DisplayName: "Ann", PasswordHash: "h1"})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	want := account.User{ID: u.ID, Email: "Ann@Example.com", DisplayName: "Ann", Roles: []string{"user"},
		Status: "active", Version: 1, CreatedAt: u.CreatedAt, UpdatedAt: u.CreatedAt}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("CreateUser (-want +got):\n%s", diff)
	}
	if u.ID == uuid.Nil || u.CreatedAt.IsZero() {
		t.Errorf("CreateUser: id %v, created_at %v; want both set", u.ID, u.CreatedAt)
	}
	if got := outboxCount(t, pool); got != 1 {
		t.Errorf("outbox holds %d events after one create, want 1", got)
	}

	got, err := s.User(ctx, u.ID)
	if err != nil {
		t.Fatalf("User: %v", err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("User (-created +read):\n%s", diff)
	}
	byEmail, hash, err := s.Credentials(ctx, "aNN@eXAMPLE.COM")
	if err != nil || byEmail.ID != u.ID || hash != "h1" {
		t.Errorf("Credentials(other case) = %v, %q, %v; want user %v, hash h1", byEmail.ID, hash, err, u.ID)
	}
	if _, err := s.User(ctx, uuid.New()); !errors.Is(err, account.ErrNotFound) {
		t.Errorf("User(unknown) error = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Credentials(ctx, "nobody@example.com"); !errors.Is(err, account.ErrNotFound) {
		t.Errorf("Credentials(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestCreateUserRoles(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	nu := newUser("admin@example.com")
	nu.Roles = []string{"admin", "admin"}
	u, err := s.CreateUser(t.Context(), nu)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"user", "admin"}, u.Roles); diff != "" {
		t.Errorf("roles (-want +got):\n%s", diff)
	}
}

func TestCreateUserEmailTaken(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	mustCreate(t, s, "Ann@Example.com")
	for _, email := range []string{"Ann@Example.com", "ann@example.com", "ANN@EXAMPLE.COM"} {
		if _, err := s.CreateUser(t.Context(), newUser(email)); !errors.Is(err, account.ErrEmailTaken) {
			t.Errorf("CreateUser(%q) error = %v, want ErrEmailTaken", email, err)
		}
	}
	if got := outboxCount(t, pool); got != 1 {
		t.Errorf("outbox holds %d events after refused creates, want 1", got)
	}
}

func TestChangesBumpVersion(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	u := mustCreate(t, s, "bob@example.com")

	u2, err := s.SetRoles(ctx, u.ID, []string{"admin", "moderator"})
	if err != nil {
		t.Fatalf("SetRoles: %v", err)
	}
	if diff := cmp.Diff([]string{"user", "moderator", "admin"}, u2.Roles); diff != "" {
		t.Errorf("SetRoles roles (-want +got):\n%s", diff)
	}
	if u2.Version != 2 || u2.UpdatedAt.Before(u.UpdatedAt) {
		t.Errorf("SetRoles: version %d, updated_at %v; want 2, not before %v", u2.Version, u2.UpdatedAt, u.UpdatedAt)
	}
	if got := outboxCount(t, pool); got != 2 {
		t.Errorf("outbox holds %d events, want 2", got)
	}

	u3, err := s.SetStatus(ctx, u.ID, events.StatusDisabled)
	if err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if u3.Status != "disabled" || u3.Version != 3 {
		t.Errorf("SetStatus: status %q version %d; want disabled, 3", u3.Status, u3.Version)
	}
	if got := outboxCount(t, pool); got != 3 {
		t.Errorf("outbox holds %d events, want 3", got)
	}

	u4, err := s.SetRoles(ctx, u.ID, nil)
	if err != nil {
		t.Fatalf("SetRoles(nil): %v", err)
	}
	if diff := cmp.Diff([]string{"user"}, u4.Roles); diff != "" || u4.Version != 4 {
		t.Errorf("SetRoles(nil): version %d, roles (-want +got):\n%s", u4.Version, diff)
	}

	for name, change := range map[string]func() error{
		"SetRoles":  func() error { _, err := s.SetRoles(ctx, uuid.New(), []string{"admin"}); return err },
		"SetStatus": func() error { _, err := s.SetStatus(ctx, uuid.New(), "active"); return err },
		"GrantRole": func() error { _, err := s.GrantRole(ctx, uuid.New(), "admin"); return err },
	} {
		if err := change(); !errors.Is(err, account.ErrNotFound) {
			t.Errorf("%s(unknown user) error = %v, want ErrNotFound", name, err)
		}
	}
	if got := outboxCount(t, pool); got != 4 {
		t.Errorf("outbox holds %d events after changes of unknown users, want 4", got)
	}
}

func TestGrantRole(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	u := mustCreate(t, s, "carol@example.com")
	g, err := s.GrantRole(ctx, u.ID, events.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if !g.HasRole(events.RoleAdmin) || g.Version != 2 {
		t.Errorf("GrantRole: roles %v version %d; want admin at version 2", g.Roles, g.Version)
	}
	again, err := s.GrantRole(ctx, u.ID, events.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != 2 {
		t.Errorf("GrantRole of a held role: version %d, want 2 (no change)", again.Version)
	}
	if got := outboxCount(t, pool); got != 2 {
		t.Errorf("outbox holds %d events, want 2 (none for the no-op)", got)
	}
}

// TestChangeIsAtomic makes the outbox refuse the event and checks that the user row did not
// change: the row and its event commit together or not at all.
func TestChangeIsAtomic(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	u := mustCreate(t, s, "dave@example.com")

	// The outbox's tables are those that are neither account's nor the migration runner's.
	const q = `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
		AND table_name NOT IN ('users', 'login_failures', 'signing_keys', 'schema_migrations')`
	rows, err := pool.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil || len(tables) == 0 {
		t.Fatalf("outbox tables: %v, %v", tables, err)
	}
	if _, err := pool.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'outbox refused by the test'; END $$`); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range tables {
		sql := fmt.Sprintf(`CREATE TRIGGER refuse BEFORE INSERT ON %q FOR EACH ROW EXECUTE FUNCTION refuse()`, tbl)
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := s.SetRoles(ctx, u.ID, []string{"admin"}); err == nil {
		t.Fatal("SetRoles succeeded although the outbox refused its event")
	}
	if _, err := s.SetStatus(ctx, u.ID, "disabled"); err == nil {
		t.Fatal("SetStatus succeeded although the outbox refused its event")
	}
	if _, err := s.CreateUser(ctx, newUser("erin@example.com")); err == nil {
		t.Fatal("CreateUser succeeded although the outbox refused its event")
	}
	got, err := s.User(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("user changed although its event was refused (-before +after):\n%s", diff)
	}
	if _, err := s.UserByEmail(ctx, "erin@example.com"); !errors.Is(err, account.ErrNotFound) {
		t.Errorf("UserByEmail(erin) error = %v; want ErrNotFound: the user was stored without its event", err)
	}
}

// TestConcurrentChanges checks that concurrent changes of one user get distinct, sequential
// versions: one event per change, the last at version 1 + changes.
func TestConcurrentChanges(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	u := mustCreate(t, s, "frank@example.com")
	const changes = 12
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		versions = map[int64]bool{}
	)
	for i := range changes {
		wg.Go(func() {
			var (
				c   account.User
				err error
			)
			if i%2 == 0 {
				c, err = s.SetRoles(ctx, u.ID, []string{"moderator"})
			} else {
				c, err = s.SetStatus(ctx, u.ID, "active")
			}
			if err != nil {
				t.Errorf("change %d: %v", i, err)
				return
			}
			mu.Lock()
			versions[c.Version] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	for v := int64(2); v <= changes+1; v++ {
		if !versions[v] {
			t.Errorf("no change returned version %d; got %v", v, versions)
		}
	}
	if got := outboxCount(t, pool); got != changes+1 {
		t.Errorf("outbox holds %d events, want %d", got, changes+1)
	}
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	var want []uuid.UUID
	for i := range 5 {
		want = append(want, mustCreate(t, s, fmt.Sprintf("u%d@example.com", i)).ID)
	}
	var (
		got   []uuid.UUID
		after postgres.Cursor
	)
	for page := 0; ; page++ {
		list, err := s.ListUsers(ctx, after, 2)
		if err != nil {
			t.Fatalf("ListUsers page %d: %v", page, err)
		}
		for _, u := range list {
			got = append(got, u.ID)
		}
		if len(list) < 2 {
			break
		}
		last := list[len(list)-1]
		after = postgres.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("users across pages (-want +got):\n%s", diff)
	}
}

func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	limit := account.LoginLimit{Scope: "test", Max: 3, Window: time.Minute}

	retry := func(key string) time.Duration {
		t.Helper()
		d, err := s.LoginRetryAfter(ctx, limit, key)
		if err != nil {
			t.Fatalf("LoginRetryAfter(%q): %v", key, err)
		}
		return d
	}
	for i := 1; i <= limit.Max; i++ {
		if d := retry("k"); d != 0 {
			t.Fatalf("after %d failures: LoginRetryAfter = %v, want 0", i-1, d)
		}
		n, err := s.RecordLoginFailure(ctx, limit, "k")
		if err != nil {
			t.Fatal(err)
		}
		if n != i {
			t.Errorf("RecordLoginFailure #%d returned count %d", i, n)
		}
	}
	if d := retry("k"); d <= 0 || d > limit.Window {
		t.Errorf("after %d failures: LoginRetryAfter = %v, want within (0, %v]", limit.Max, d, limit.Window)
	}
	// Keys and scopes are counted apart.
	if d := retry("other"); d != 0 {
		t.Errorf("LoginRetryAfter(other key) = %v, want 0", d)
	}
	if d, err := s.LoginRetryAfter(ctx, account.LoginLimit{Scope: "else", Max: 3, Window: time.Minute}, "k"); err != nil || d != 0 {
		t.Errorf("LoginRetryAfter(other scope) = %v, %v; want 0", d, err)
	}
	// A key Postgres could not store as text is still a key.
	if _, err := s.RecordLoginFailure(ctx, limit, "nul\x00byte"); err != nil {
		t.Errorf("RecordLoginFailure(NUL key): %v", err)
	}

	n, err := s.PruneLoginFailures(ctx, 0)
	if err != nil || n != int64(limit.Max)+1 {
		t.Errorf("PruneLoginFailures(0) = %d, %v; want %d", n, err, limit.Max+1)
	}
	if d := retry("k"); d != 0 {
		t.Errorf("after pruning: LoginRetryAfter = %v, want 0", d)
	}
}
