package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/restore"
	"github.com/authmesh/events"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// The restore of account's database from a backup older than the stream: the start refused, the
// status that says so, the reconcile that repairs it, and the replicas that converge.

const (
	aheadPrefix      = "stream: ahead of the database: "
	consistentPrefix = "stream: consistent with the database ("
)

func TestRestoreFromBackup(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	blog := ns.JetStream(t, natstest.Blog)

	// Before the backup: the admin, Ann (made a moderator: version 2) and Bob.
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	ann := a.register(t, "ann@example.com", "ann-password", "Ann")["id"].(string)
	bob := a.register(t, "bob@example.com", "bob-password", "Bob")["id"].(string)
	want(t, "ann moderator", a.do(t, "PUT", "/v1/users/"+ann+"/roles", admin, map[string]any{"roles": []string{"moderator"}}), 200, "")
	waitForEvents(t, blog, 4)
	a.Stop()
	backup := copyDatabase(t, env["DATABASE_URL"])

	// After the backup, all of it published: Ann disabled (3), Bob an admin (2), Cid registered
	// (1), Dee registered and made a moderator (2).
	b := startApp(t, env)
	admin = b.login(t, adminEmail, adminPassword)
	want(t, "ann disabled", b.do(t, "PUT", "/v1/users/"+ann+"/status", admin, map[string]any{"status": "disabled"}), 200, "")
	want(t, "bob admin", b.do(t, "PUT", "/v1/users/"+bob+"/roles", admin, map[string]any{"roles": []string{"admin"}}), 200, "")
	cid := b.register(t, "cid@example.com", "cid-password", "Cid")["id"].(string)
	dee := b.register(t, "dee@example.com", "dee-password", "Dee")["id"].(string)
	want(t, "dee moderator", b.do(t, "PUT", "/v1/users/"+dee+"/roles", admin, map[string]any{"roles": []string{"moderator"}}), 200, "")
	waitForEvents(t, blog, 9)
	b.Stop()
	before := replicaOf(t, blog)

	restoreDatabase(t, env["DATABASE_URL"], backup)
	pool := openPool(t, env["DATABASE_URL"])
	eventsBefore := outboxEvents(t, pool)

	// account refuses to start, in one line that says what to do, and changes nothing.
	err := serveOnce(t, env)
	if !errors.Is(err, restore.ErrBehind) {
		t.Fatalf("serve on the restored database = %v, want the refusal (restore.ErrBehind)", err)
	}
	for _, w := range []string{"account outbox status", "account outbox reconcile", `docs/operations.md, "account's database restored from a backup"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the refusal %q does not mention %s", err, w)
		}
	}
	if line := err.Error(); strings.Contains(line, "\n") {
		t.Errorf("the refusal spans several lines: %q", line)
	}
	if n := outboxEvents(t, pool); n != eventsBefore {
		t.Errorf("the refused start wrote %d events, want none", n-eventsBefore)
	}

	// outbox status: ahead, by Ann and Bob, and by Cid and Dee whom the database does not know.
	out, err := runCommand(t, env, "outbox", "status")
	if err == nil {
		t.Errorf("outbox status on the restored database succeeded, want exit 1; printed:\n%s", out)
	}
	wantLine(t, out, `stream: ahead of the database: 4 users (2 unknown to it); run account outbox reconcile (docs/operations.md, "account's database restored from a backup")`)
	for _, w := range []string{"pending: ", "published: ", "oldest pending age: "} {
		if !strings.Contains(out, "\n"+w) && !strings.HasPrefix(out, w) {
			t.Errorf("outbox status printed no %q line:\n%s", w, out)
		}
	}

	// reconcile: Ann and Bob bumped, Cid and Dee restored disabled; a second run changes nothing.
	out, err = runCommand(t, env, "outbox", "reconcile")
	if err != nil {
		t.Fatalf("outbox reconcile: %v\n%s", err, out)
	}
	wantLine(t, out, "users bumped: 2")
	wantLine(t, out, "users restored disabled: 2")
	for id, word := range map[string]string{ann: "bumped", bob: "bumped", cid: "restored", dee: "restored"} {
		if !strings.Contains(out, "\n"+word+" "+id+" ") {
			t.Errorf("reconcile printed no line %q about %s:\n%s", word, id, out)
		}
	}
	out, err = runCommand(t, env, "outbox", "reconcile")
	if err != nil {
		t.Fatalf("outbox reconcile again: %v\n%s", err, out)
	}
	wantLine(t, out, "users bumped: 0")
	wantLine(t, out, "users restored disabled: 0")

	// Its events are pending: the database is ahead of the stream now, which is consistent.
	out, err = runCommand(t, env, "outbox", "status")
	if err != nil {
		t.Errorf("outbox status after reconcile: %v\n%s", err, out)
	}
	wantLine(t, out, "stream: consistent with the database (5 users)")

	// account starts, and its relay publishes.
	c := startApp(t, env)
	servicetest.Eventually(t, 20*time.Second, "the outbox drained", func() bool {
		st, err := outbox.Status(t.Context(), pool)
		return err == nil && st.Pending == 0
	})
	out, err = runCommand(t, env, "outbox", "status")
	if err != nil {
		t.Errorf("outbox status once published: %v\n%s", err, out)
	}
	wantLine(t, out, "pending: 0")
	wantLine(t, out, "stream: consistent with the database (5 users)")
	out, err = runCommand(t, env, "outbox", "reconcile")
	if err != nil {
		t.Fatalf("outbox reconcile once published: %v\n%s", err, out)
	}
	wantLine(t, out, "users bumped: 0")
	wantLine(t, out, "users restored disabled: 0")

	// A replica built from the stream equals the database, above every version the stream had.
	after := replicaOf(t, blog)
	db, err := postgres.New(pool).AllUsers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(db) != 5 || len(after) != 5 {
		t.Errorf("%d users in the database, %d in the replica; want 5 in both", len(db), len(after))
	}
	for id, u := range db {
		if diff := cmp.Diff(u.Snapshot(), after[id]); diff != "" {
			t.Errorf("user %s %s: replica differs from the database (-database +replica):\n%s", id, u.Email, diff)
		}
	}
	wantState := map[string]events.User{ // the backup's state, one version above the stream's
		ann: {Email: "ann@example.com", DisplayName: "Ann", Roles: []string{"user", "moderator"}, Status: "active", Version: 4},
		bob: {Email: "bob@example.com", DisplayName: "Bob", Roles: []string{"user"}, Status: "active", Version: 3},
		cid: {Email: "cid@example.com", DisplayName: "Cid", Roles: []string{"user"}, Status: "disabled", Version: 2},
		dee: {Email: "dee@example.com", DisplayName: "Dee", Roles: []string{"user", "moderator"}, Status: "disabled", Version: 3},
	}
	for id, w := range wantState {
		uid := uuid.MustParse(id)
		w.ID = uid
		if diff := cmp.Diff(w, db[uid].Snapshot()); diff != "" {
			t.Errorf("user %s after reconcile (-want +got):\n%s", w.Email, diff)
		}
		if db[uid].Version <= before[uid].Version {
			t.Errorf("user %s at version %d, not above the stream's %d", w.Email, db[uid].Version, before[uid].Version)
		}
	}

	// Cid's password is gone with the restore: no login, whatever the password.
	want(t, "login as restored cid", c.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "cid@example.com", "password": "cid-password"}),
		http.StatusUnauthorized, "invalid_credentials")
	want(t, "ann active again", c.do(t, "GET", "/v1/users/me", c.login(t, "ann@example.com", "ann-password"), nil), 200, "")
}

// A healthy database is not behind the stream: not on a fresh stream, not with events still
// pending in the outbox, not after the stream was lost; and a newest message that is no event is
// no reason to refuse.
func TestStartCheckHealthy(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	blog := ns.JetStream(t, natstest.Blog)

	a := startApp(t, env) // the stream is created empty at start
	ann := a.register(t, "ann@example.com", "ann-password", "Ann")["id"].(string)
	waitForEvents(t, blog, 2)
	a.Stop()

	// Changes committed while no relay runs: pending, the database ahead of the stream.
	pool := openPool(t, env["DATABASE_URL"])
	store := postgres.New(pool)
	id := uuid.MustParse(ann)
	if _, err := store.SetRoles(t.Context(), id, []string{"moderator"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetStatus(t.Context(), id, events.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, env, "outbox", "status")
	if err != nil {
		t.Errorf("outbox status with pending events: %v\n%s", err, out)
	}
	wantLine(t, out, "pending: 2")
	wantLine(t, out, "stream: consistent with the database (2 users)")
	b := startApp(t, env)
	waitForEvents(t, blog, 4)
	b.Stop()

	// The newest message is not an event (someone with ops published it): account starts, and
	// warns.
	ops := ns.JetStream(t, natstest.Ops)
	if _, err := ops.Publish(t.Context(), events.Subject(events.UserCreated, uuid.New()), []byte(`{"not":"an event"}`)); err != nil {
		t.Fatal(err)
	}
	c := startApp(t, env)
	if !strings.Contains(c.Logs(), "is not a valid event: not compared with the database") {
		t.Errorf("no warning about the newest message in the log:\n%s", c.Logs())
	}
	c.Stop()

	// A lost stream: nothing to compare; account starts and creates it again.
	if err := ops.DeleteStream(t.Context(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	out, err = runCommand(t, env, "outbox", "status")
	if err != nil {
		t.Errorf("outbox status without a stream: %v\n%s", err, out)
	}
	wantLine(t, out, "stream: USERS does not exist: nothing to compare")
	out, err = runCommand(t, env, "outbox", "reconcile")
	if err != nil {
		t.Errorf("outbox reconcile without a stream: %v\n%s", err, out)
	}
	wantLine(t, out, "stream: USERS does not exist: nothing to reconcile")
	startApp(t, env).Stop()
}

// A database that went on after a restore, before this check existed, has made other events at
// the versions the stream held: the same version in another state is behind too, and a version
// hidden behind a lower one on its subject is found by reconcile's read of the whole stream.
func TestReconcileAfterDivergence(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	blog := ns.JetStream(t, natstest.Blog)

	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	ann := a.register(t, "ann@example.com", "ann-password", "Ann")["id"].(string)
	waitForEvents(t, blog, 2)
	a.Stop()
	backup := copyDatabase(t, env["DATABASE_URL"])

	// The lost future: Ann a moderator (2), then an admin too (3), on one subject.
	b := startApp(t, env)
	admin = b.login(t, adminEmail, adminPassword)
	for _, roles := range [][]string{{"moderator"}, {"moderator", "admin"}} {
		want(t, "ann roles", b.do(t, "PUT", "/v1/users/"+ann+"/roles", admin, map[string]any{"roles": roles}), 200, "")
	}
	waitForEvents(t, blog, 4)
	b.Stop()

	// The restored database goes on as an older account would have: Ann's roles changed once
	// more (version 2 again, on the same subject), published.
	restoreDatabase(t, env["DATABASE_URL"], backup)
	pool := openPool(t, env["DATABASE_URL"])
	if _, err := postgres.New(pool).SetRoles(t.Context(), uuid.MustParse(ann), []string{"user"}); err != nil {
		t.Fatal(err)
	}
	js := ns.JetStream(t, natstest.Account)
	if n, err := outbox.Republish(t.Context(), pool, js, time.Time{}); err != nil || n.Published != 3 {
		t.Fatalf("republish = %+v, %v; want the 3 events of the restored database", n, err)
	}

	// The last message of Ann's role subject is version 2 (the database's), and the version 3 of
	// the replicas is hidden behind it: status cannot see that, reconcile can.
	out, err := runCommand(t, env, "outbox", "reconcile")
	if err != nil {
		t.Fatalf("outbox reconcile: %v\n%s", err, out)
	}
	wantLine(t, out, "users bumped: 1")
	c := startApp(t, env)
	servicetest.Eventually(t, 20*time.Second, "the outbox drained", func() bool {
		st, err := outbox.Status(t.Context(), pool)
		return err == nil && st.Pending == 0
	})
	c.Stop()
	replica := replicaOf(t, blog)
	u, err := postgres.New(pool).User(t.Context(), uuid.MustParse(ann))
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != 4 {
		t.Errorf("ann at version %d after reconcile, want 4 (above the stream's 3)", u.Version)
	}
	if diff := cmp.Diff(u.Snapshot(), replica[u.ID]); diff != "" {
		t.Errorf("ann: the replica differs from the database (-database +replica):\n%s", diff)
	}
	out, err = runCommand(t, env, "outbox", "status")
	if err != nil {
		t.Errorf("outbox status after reconcile: %v\n%s", err, out)
	}
	wantLine(t, out, "stream: consistent with the database (2 users)")
}

// runCommand runs an operator command of account with env and returns what it printed on stdout.
// It fails the test if the command met a refusal of account's NATS permissions.
func runCommand(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, log bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &log)
	if strings.Contains(log.String(), "Permissions Violation") {
		t.Errorf("account %s met a refusal of its NATS permissions (deploy/nats/auth.conf):\n%s", strings.Join(args, " "), log.String())
	}
	return out.String(), err
}

// serveOnce runs account serve with env, and returns its error; were it to serve, it stops
// within 30 seconds and the test fails.
func serveOnce(t *testing.T, env map[string]string) error {
	t.Helper()
	e := maps.Clone(env)
	e["HTTP_ADDR"] = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var log bytes.Buffer
	err := run(ctx, nil, func(k string) string { return e[k] }, &bytes.Buffer{}, &log)
	if strings.Contains(log.String(), `"msg":"serving"`) {
		t.Errorf("account served on a database behind the stream")
	}
	return err
}

// wantLine fails the test unless out holds line as a whole line.
func wantLine(t *testing.T, out, line string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("output has no line %q:\n%s", line, out)
}

// replicaOf applies the whole stream as a replica does (an event only if its version is newer
// than the user's) and returns every user's state.
func replicaOf(t *testing.T, js jetstream.JetStream) map[uuid.UUID]events.User {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users := make(map[uuid.UUID]events.User)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.LastSeq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		var e events.Event
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Validate() != nil {
			continue
		}
		if cur, ok := users[e.User.ID]; !ok || e.User.Version > cur.Version {
			users[e.User.ID] = e.User
		}
	}
	return users
}

// openPool opens a pool on the database of dbURL, closed when the test ends.
func openPool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// outboxEvents counts the events of the outbox, pending or published.
func outboxEvents(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	st, err := outbox.Status(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return st.Pending + st.Published
}

// copyDatabase copies the database of dbURL, which nobody may be connected to, into a new one (the
// backup), dropped when the test ends, and returns its name.
func copyDatabase(t *testing.T, dbURL string) string {
	t.Helper()
	backup := databaseName(t, dbURL) + "_backup"
	t.Cleanup(func() { pgtest.Drop(t, backup) })
	adminExec(t, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", backup, databaseName(t, dbURL)))
	return backup
}

// restoreDatabase replaces the database of dbURL with a copy of backup, as a restore does.
func restoreDatabase(t *testing.T, dbURL, backup string) {
	t.Helper()
	name := databaseName(t, dbURL)
	adminExec(t, fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name))
	adminExec(t, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, backup))
}

func databaseName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// adminExec runs sql on the test server's maintenance database. A copy of a database that a
// session just left may find it still there for a moment: it is tried again for a few seconds.
func adminExec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := conn.Exec(ctx, sql)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "is being accessed by other users") || time.Now().After(deadline) {
			t.Fatalf("%s: %v", sql, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
