package reliability

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/authmesh/e2e/reliability/rig"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// F17: account's database is restored from a backup older than the stream. Account refuses to
// start on it, `account outbox status` says the stream is ahead and what to run, `account outbox
// reconcile` repairs it (versions above the stream's, users registered after the backup restored
// disabled), and then every replica converges to account's state, and later changes reach them:
// no version goes backwards.
func TestAccountRestoredFromOlderBackup(t *testing.T) {
	row := newRow(t, "F17", "account's database restored from an older backup",
		"changes; a copy of account's database taken (CREATE DATABASE … TEMPLATE, account stopped); more changes and registrations, all published and applied; the copy restored; account started; the runbook (docs/operations.md); more changes",
		"account refuses to start; outbox status exits 1 naming the users ahead; reconcile repairs; account starts; divergence 0; no version below the stream's; later changes applied")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := context.Background()
	w.Changes(ctx, size(60, 200), 4)
	if _, err := sys.Settle(time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}

	db := dbName(t, sys.DatabaseURL("account"))
	backup := db + "_backup"
	if err := sys.Stop("account"); err != nil {
		t.Fatal(err)
	}
	sys.ClosePool("account") // a template must have no sessions
	adminExec(t, "CREATE DATABASE "+backup+" TEMPLATE "+db)
	t.Cleanup(func() { adminExec(t, "DROP DATABASE IF EXISTS "+backup+" WITH (FORCE)") })
	if err := sys.Start(ctx, "account"); err != nil {
		t.Fatal(err)
	}
	sys.Admin = adminToken(t, sys)

	// After the backup: more changes and registrations, all published and applied.
	w.Changes(ctx, size(60, 200), 4)
	if _, err := sys.Settle(time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	before := streamVersions(t, sys)

	// The restore.
	if err := sys.Stop("account"); err != nil {
		t.Fatal(err)
	}
	sys.ClosePool("account")
	adminExec(t, "DROP DATABASE "+db+" WITH (FORCE)")
	adminExec(t, "CREATE DATABASE "+db+" TEMPLATE "+backup)
	restored := time.Now()

	// Detect: account refuses to start; outbox status says what to do.
	if err := sys.Start(ctx, "account"); err == nil {
		t.Fatal("account started on a database older than the stream")
	}
	_ = sys.Stop("account") // collect the exited process
	if !strings.Contains(sys.Log("account"), "refusing to start: the database is behind the stream USERS") {
		t.Errorf("account's log does not say why it refused to start:\n%s", stack.Tail(sys.Log("account"), 5))
	}
	out, code := command(t, sys, "account", "outbox", "status")
	ahead := regexp.MustCompile(`stream: ahead of the database: (\d+) users \((\d+) unknown to it\); run account outbox reconcile`).FindStringSubmatch(out)
	if code != 1 || ahead == nil {
		t.Fatalf("outbox status on the restored database: exit %d, want 1 and the stream ahead:\n%s", code, out)
	}
	row.Add("users ahead (unknown to the database)", ahead[1]+" ("+ahead[2]+")")

	// Repair, as the runbook says.
	out, code = command(t, sys, "account", "outbox", "reconcile")
	if code != 0 {
		t.Fatalf("outbox reconcile: exit %d:\n%s", code, out)
	}
	bumped, restoredDisabled := recordReconcile(t, w, out)
	row.Add("bumped", bumped)
	row.Add("restored disabled", restoredDisabled)
	if n, _ := strconv.Atoi(ahead[1]); bumped+restoredDisabled != n {
		t.Errorf("reconcile changed %d+%d users, status said %d were ahead:\n%s", bumped, restoredDisabled, n, out)
	}
	if err := sys.Start(ctx, "account"); err != nil {
		t.Fatal(err)
	}
	sys.Admin = adminToken(t, sys)
	if out, code := command(t, sys, "account", "outbox", "reconcile"); code != 0 || !strings.Contains(out, "users bumped: 0") || !strings.Contains(out, "users restored disabled: 0") {
		t.Errorf("a second reconcile: exit %d, want 0 and nothing changed:\n%s", code, out)
	}

	// Later changes, of users on both sides of the backup.
	w.Changes(ctx, size(60, 200), 4)
	end := time.Now()
	sys.Judge(w, row, end, time.Minute)
	row.Add("restore → converged", time.Since(restored))

	// No version went backwards: account holds every user at or above the stream's version of
	// before the restore.
	acc, err := checker.ReadStates(ctx, sys.Pool("account"), checker.AccountUsers)
	if err != nil {
		t.Fatal(err)
	}
	backwards := 0
	for id, v := range before {
		if acc[id].Version < v {
			backwards++
			t.Errorf("user %s: account at version %d, the stream had %d before the restore", id, acc[id].Version, v)
		}
	}
	row.Add("versions below the stream's", backwards)
	if out, code := command(t, sys, "account", "outbox", "status"); code != 0 || !strings.Contains(out, "stream: consistent with the database") {
		t.Errorf("outbox status after the repair: exit %d:\n%s", code, out)
	}
}

// recordReconcile logs the changes reconcile made (one line per user) as acked attempts, and
// returns how many users it bumped and restored.
func recordReconcile(t *testing.T, w *rig.Workload, out string) (bumped, restored int) {
	t.Helper()
	line := regexp.MustCompile(`(?m)^(bumped|restored) ([0-9a-f-]{36}) \S+ (?:disabled at|to) version (\d+)`)
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		id, err := uuid.Parse(m[2])
		if err != nil {
			t.Fatal(err)
		}
		version, _ := strconv.ParseInt(m[3], 10, 64)
		w.Record(checker.Attempt{Op: checker.OpStatus, Outcome: checker.Acked, User: id, Version: version})
		if m[1] == "bumped" {
			bumped++
		} else {
			restored++
		}
	}
	for _, want := range []string{fmt.Sprintf("users bumped: %d", bumped), fmt.Sprintf("users restored disabled: %d", restored)} {
		if !strings.Contains(out, want) {
			t.Errorf("reconcile's output lacks %q (its user lines disagree with its counts):\n%s", want, out)
		}
	}
	return bumped, restored
}

// streamVersions returns the highest version of each user in the stream.
func streamVersions(t *testing.T, sys *rig.System) map[uuid.UUID]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := sys.JS()
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := checker.ReadStream(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]int64{}
	for _, e := range evs {
		out[e.User.ID] = max(out[e.User.ID], e.User.Version)
	}
	return out
}

// adminToken logs the bootstrap admin in again (account was restarted on another database).
func adminToken(t *testing.T, sys *rig.System) string {
	t.Helper()
	return apitest.Login(t, sys.URL["account"], rig.AdminEmail, rig.AdminPassword)
}

// command runs an operator command of a service and returns its combined output and exit code.
func command(t *testing.T, sys *rig.System, service string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := sys.Cmd(ctx, service, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %v: %v", service, args, err)
	}
	return string(out), 0
}

// adminExec runs a statement on the test Postgres server's maintenance database.
func adminExec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func dbName(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}
