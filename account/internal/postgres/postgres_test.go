package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	mustAdmin(t, s, "root@example.com") // so that bob, made an admin, may be disabled
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
	if got := outboxCount(t, pool); got != 3 {
		t.Errorf("outbox holds %d events, want 3", got)
	}

	u3, err := s.SetStatus(ctx, u.ID, events.StatusDisabled)
	if err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if u3.Status != "disabled" || u3.Version != 3 {
		t.Errorf("SetStatus: status %q version %d; want disabled, 3", u3.Status, u3.Version)
	}
	if got := outboxCount(t, pool); got != 4 {
		t.Errorf("outbox holds %d events, want 4", got)
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
	if got := outboxCount(t, pool); got != 5 {
		t.Errorf("outbox holds %d events after changes of unknown users, want 5", got)
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
		after account.Cursor
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
		after = account.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
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
	s, pool := newStore(t)
	ctx := t.Context()
	limit := account.LoginLimit{Scope: "test", Max: 3, Window: time.Minute}
	key := func(k string) postgres.LoginKey { return postgres.LoginKey{Limit: limit, Key: k} }
	begin := func(keys ...postgres.LoginKey) (postgres.LoginAttempt, time.Duration) {
		t.Helper()
		a, wait, err := s.BeginLogin(ctx, keys)
		if err != nil {
			t.Fatalf("BeginLogin: %v", err)
		}
		return a, wait
	}
	settle := func(how func(context.Context, postgres.LoginAttempt) error, a postgres.LoginAttempt) {
		t.Helper()
		if err := how(ctx, a); err != nil {
			t.Fatalf("settle: %v", err)
		}
	}

	// The limit lets Max failures through, then refuses until the oldest leaves the window.
	for i := 1; i <= limit.Max; i++ {
		a, wait := begin(key("k"))
		if wait != 0 || !cmp.Equal(a.Counts, []int{i}) {
			t.Fatalf("attempt %d: counts %v, wait %v; want [%d], 0", i, a.Counts, wait, i)
		}
		settle(s.FailLogin, a)
	}
	for range 2 {
		if _, wait := begin(key("k")); wait <= limit.Window/2 || wait > limit.Window {
			t.Errorf("after %d failures: wait %v, want within (%v, %v]", limit.Max, wait, limit.Window/2, limit.Window)
		}
	}
	// Attempts in flight fill the limit too, but only for a moment: each one that is forgotten (a
	// success) frees its place.
	var inFlight []postgres.LoginAttempt
	for range limit.Max {
		a, wait := begin(key("p"))
		if wait != 0 {
			t.Fatalf("attempt in flight: wait %v, want 0", wait)
		}
		inFlight = append(inFlight, a)
	}
	if _, wait := begin(key("p")); wait != time.Second {
		t.Errorf("with %d attempts in flight: wait %v, want 1s", limit.Max, wait)
	}
	settle(s.ForgetLogin, inFlight[0])
	if a, wait := begin(key("p")); wait != 0 || !cmp.Equal(a.Counts, []int{limit.Max}) {
		t.Errorf("after one attempt in flight succeeded: counts %v, wait %v; want [%d], 0", a.Counts, wait, limit.Max)
	}
	// Forgotten attempts never count.
	for i := range limit.Max + 2 {
		a, wait := begin(key("ok"))
		if wait != 0 || !cmp.Equal(a.Counts, []int{1}) {
			t.Fatalf("attempt %d after forgotten ones: counts %v, wait %v; want [1], 0", i, a.Counts, wait)
		}
		settle(s.ForgetLogin, a)
	}
	// An attempt refused under one key is recorded under none.
	if _, wait := begin(key("fresh"), key("k")); wait <= 0 {
		t.Errorf("attempt under a fresh and a full key: wait %v, want > 0", wait)
	}
	if a, _ := begin(key("fresh")); !cmp.Equal(a.Counts, []int{1}) {
		t.Errorf("after a refused attempt: counts %v, want [1]", a.Counts)
	}
	// Scopes are counted apart.
	if a, wait := begin(postgres.LoginKey{Limit: account.LoginLimit{Scope: "else", Max: 3, Window: time.Minute}, Key: "k"}); wait != 0 || !cmp.Equal(a.Counts, []int{1}) {
		t.Errorf("other scope: counts %v, wait %v; want [1], 0", a.Counts, wait)
	}
	// A key Postgres could not store as text is still a key.
	if _, wait := begin(key("nul\x00byte")); wait != 0 {
		t.Errorf("NUL key: wait %v, want 0", wait)
	}

	// Attempts left pending for long (their instance died) are taken for failures.
	long := account.LoginLimit{Scope: "long", Max: 2, Window: time.Hour}
	for range long.Max {
		begin(postgres.LoginKey{Limit: long, Key: "k"})
	}
	if _, err := pool.Exec(ctx, `UPDATE login_failures SET failed_at = failed_at - interval '5 minutes' WHERE scope = 'long'`); err != nil {
		t.Fatal(err)
	}
	if _, wait := begin(postgres.LoginKey{Limit: long, Key: "k"}); wait <= time.Second || wait > long.Window {
		t.Errorf("with stale attempts filling the limit: wait %v, want the failures' wait, within (1s, %v]", wait, long.Window)
	}

	// k's 3, p's 3, fresh's 1, else's 1, the NUL key's 1, long's 2.
	n, err := s.PruneLoginFailures(ctx, 0)
	if err != nil || n != 11 {
		t.Errorf("PruneLoginFailures(0) = %d, %v; want 11", n, err)
	}
	if _, wait := begin(key("k")); wait != 0 {
		t.Errorf("after pruning: wait %v, want 0", wait)
	}
}

// TestLoginThrottleConcurrent begins many attempts under one key at once, as a burst of wrong
// passwords would: exactly the limit's worth get through.
func TestLoginThrottleConcurrent(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	limit := account.LoginLimit{Scope: "test", Max: 5, Window: time.Minute}
	const n = 30
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		through atomic.Int32
	)
	for i := range n {
		wg.Go(func() {
			<-start
			// Each attempt is also counted under a key of its own, so that locks on two keys are
			// taken in every order.
			keys := []postgres.LoginKey{{Limit: limit, Key: "shared"}, {Limit: limit, Key: fmt.Sprint(i)}}
			if i%2 == 1 {
				keys[0], keys[1] = keys[1], keys[0]
			}
			_, wait, err := s.BeginLogin(t.Context(), keys)
			if err != nil {
				t.Errorf("BeginLogin %d: %v", i, err)
				return
			}
			if wait == 0 {
				through.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := through.Load(); got != int32(limit.Max) {
		t.Errorf("%d of %d concurrent attempts got through, want %d", got, n, limit.Max)
	}
}

func mustAdmin(t *testing.T, s *postgres.Store, email string) account.User {
	t.Helper()
	nu := newUser(email)
	nu.Roles = []string{events.RoleAdmin}
	u, err := s.CreateUser(t.Context(), nu)
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", email, err)
	}
	return u
}

func TestLastAdmin(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	admin := mustAdmin(t, s, "admin@example.com")
	plain := mustCreate(t, s, "plain@example.com")
	retired := mustAdmin(t, s, "retired@example.com")
	if _, err := s.SetStatus(ctx, retired.ID, events.StatusDisabled); err != nil {
		t.Fatalf("disable the second admin: %v", err)
	}
	// A disabled admin does not count: admin is now the only active one.
	setRoles := func(roles ...string) func(uuid.UUID) error {
		return func(id uuid.UUID) error { _, err := s.SetRoles(ctx, id, roles); return err }
	}
	setStatus := func(status string) func(uuid.UUID) error {
		return func(id uuid.UUID) error { _, err := s.SetStatus(ctx, id, status); return err }
	}
	tests := []struct {
		name   string
		id     uuid.UUID
		change func(uuid.UUID) error
		want   error
	}{
		{"demote the last active admin", admin.ID, setRoles(), account.ErrLastAdmin},
		{"demote to moderator", admin.ID, setRoles(events.RoleModerator), account.ErrLastAdmin},
		{"disable the last active admin", admin.ID, setStatus(events.StatusDisabled), account.ErrLastAdmin},
		{"keep the admin role", admin.ID, setRoles(events.RoleModerator, events.RoleAdmin), nil},
		{"activate the active admin", admin.ID, setStatus(events.StatusActive), nil},
		{"change a user who is no admin", plain.ID, setRoles(events.RoleModerator), nil},
		{"disable a user who is no admin", plain.ID, setStatus(events.StatusDisabled), nil},
		{"demote a disabled admin", retired.ID, setRoles(), nil},
	}
	for _, tt := range tests {
		before, err := s.User(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		n := outboxCount(t, pool)
		err = tt.change(tt.id)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == nil {
			continue
		}
		after, err := s.User(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, after); diff != "" {
			t.Errorf("%s: the refused change changed the user (-before +after):\n%s", tt.name, diff)
		}
		if got := outboxCount(t, pool); got != n {
			t.Errorf("%s: the refused change wrote %d events", tt.name, got-n)
		}
	}

	// With a second active admin, either may go, but not both.
	second := mustCreate(t, s, "second@example.com")
	if _, err := s.GrantRole(ctx, second.ID, events.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus(ctx, admin.ID, events.StatusDisabled); err != nil {
		t.Errorf("disable an admin while another is active: %v", err)
	}
	if _, err := s.SetRoles(ctx, second.ID, nil); !errors.Is(err, account.ErrLastAdmin) {
		t.Errorf("demote the admin left: error %v, want ErrLastAdmin", err)
	}
	// Re-activating a disabled admin brings one back, and then the other may go.
	if _, err := s.SetStatus(ctx, admin.ID, events.StatusActive); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRoles(ctx, second.ID, nil); err != nil {
		t.Errorf("demote one of two active admins: %v", err)
	}
}

// TestLastAdminConcurrent has two admins take each other's admin role (or status) at the same
// time, round after round: exactly one change may succeed each time, or no admin would be left.
func TestLastAdminConcurrent(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	a := mustAdmin(t, s, "a@example.com")
	b := mustAdmin(t, s, "b@example.com")
	restore := func(id uuid.UUID) {
		t.Helper()
		if _, err := s.SetStatus(ctx, id, events.StatusActive); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GrantRole(ctx, id, events.RoleAdmin); err != nil {
			t.Fatal(err)
		}
	}
	// Each round, each admin removes the other: by role, by status, or one of each.
	removals := []func(uuid.UUID) error{
		func(id uuid.UUID) error { _, err := s.SetRoles(ctx, id, []string{events.RoleModerator}); return err },
		func(id uuid.UUID) error { _, err := s.SetStatus(ctx, id, events.StatusDisabled); return err },
	}
	const rounds = 10
	for round := range rounds {
		restore(a.ID)
		restore(b.ID)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  [2]error
		)
		for i, target := range []uuid.UUID{b.ID, a.ID} {
			remove := removals[(round+i)%len(removals)]
			if round%3 == 2 {
				target = []uuid.UUID{a.ID, b.ID}[i] // each admin removes themself
			}
			wg.Go(func() {
				<-start
				errs[i] = remove(target)
			})
		}
		close(start)
		wg.Wait()
		var ok, refused int
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, account.ErrLastAdmin):
				refused++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 || refused != 1 {
			t.Fatalf("round %d: %d changes succeeded and %d were refused, want 1 and 1", round, ok, refused)
		}
		left := 0
		for _, id := range []uuid.UUID{a.ID, b.ID} {
			u, err := s.User(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if u.ActiveAdmin() {
				left++
			}
		}
		if left != 1 {
			t.Fatalf("round %d: %d active admins left, want 1", round, left)
		}
	}
}
