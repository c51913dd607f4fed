package replicacmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/service"
	"github.com/authmesh/events/servicetest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/events/replica/replicacmd"
)

const patience = 15 * time.Second

// defaults are a service's, as its loadConfig has them; the tests set DATABASE_URL and NATS_URL.
var defaults = service.Config{Name: "blog", HTTPAddr: "127.0.0.1:0", DatabaseURL: "postgres://nobody@127.0.0.1:1/none"}

// load is the configuration of vars over defaults, as a service's main hands it to Run.
func load(vars map[string]string) func() (service.Config, error) {
	return func() (service.Config, error) {
		return service.LoadConfig(func(k string) string { return vars[k] }, defaults)
	}
}

type env struct {
	vars map[string]string
	pool *pgxpool.Pool
	js   jetstream.JetStream
}

// newEnv gives the command a database with the replica's tables, a NATS server, and the service's
// consumer running, as when blog serves.
func newEnv(t *testing.T) env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := replica.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	srv := natstest.New(t)
	js := srv.JetStream(t, natstest.Account) // publishes, as account does
	r, err := replica.New(replica.Config{Pool: pool, JS: srv.JetStream(t, natstest.Blog), Durable: defaults.Name})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Go(t, r.Run)
	// The commands run as blog, with blog's identity alone.
	return env{vars: map[string]string{"DATABASE_URL": url, "NATS_URL": srv.UserURL(natstest.Blog)}, pool: pool, js: js}
}

// run runs the command line args and returns its exit code, stdout and stderr.
func run(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	code := replicacmd.Run(ctx, defaults.Name, load(vars), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func (e env) applied(t *testing.T) uint64 {
	t.Helper()
	var seq int64
	if err := e.pool.QueryRow(context.Background(), `SELECT last_seq FROM replica_state`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return uint64(seq)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servicetest.Eventually(t, patience, what, cond)
}

func publishRaw(t *testing.T, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	ack, err := js.Publish(context.Background(), subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func TestUsage(t *testing.T) {
	t.Parallel()
	// No server is needed: usage errors come before any connection.
	vars := map[string]string{}
	tests := []struct {
		args     []string
		want     int
		inStdout string
		inStderr string
	}{
		{nil, replicacmd.ExitUsage, "", "usage: blog replica"},
		{[]string{"frobnicate"}, replicacmd.ExitUsage, "", `unknown command "frobnicate"`},
		{[]string{"help"}, replicacmd.ExitOK, "usage: blog replica", ""},
		{[]string{"--help"}, replicacmd.ExitOK, "dead-letters", ""},
		{[]string{"status", "--help"}, replicacmd.ExitOK, "-json", ""},
		{[]string{"rebuild", "-h"}, replicacmd.ExitOK, "-from-seq", ""},
		{[]string{"verify", "--help"}, replicacmd.ExitOK, "usage: blog replica verify", ""},
		{[]string{"dead-letters", "retry", "--help"}, replicacmd.ExitOK, "-seq", ""},
		{[]string{"status", "--bogus"}, replicacmd.ExitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"status", "extra"}, replicacmd.ExitUsage, "", `unexpected argument "extra"`},
		{[]string{"rebuild", "--since", "yesterday"}, replicacmd.ExitUsage, "", "not an RFC 3339 time"},
		{[]string{"rebuild", "--from-seq", "x"}, replicacmd.ExitUsage, "", "invalid value"},
		{[]string{"rebuild", "--from-seq", "0"}, replicacmd.ExitUsage, "", "at least 1"},
		{[]string{"rebuild", "--from-seq", "3", "--since", "2025-01-02T15:04:05Z"}, replicacmd.ExitUsage, "", "exclusive"},
		{[]string{"rebuild", "--last-per-subject", "--from-seq", "3"}, replicacmd.ExitUsage, "", "neither --from-seq nor --since"},
		{[]string{"rebuild", "--since", "2025-01-02T15:04:05Z", "--last-per-subject"}, replicacmd.ExitUsage, "", "neither --from-seq nor --since"},
		{[]string{"rebuild", "--last-per-subject=maybe"}, replicacmd.ExitUsage, "", "invalid boolean value"},
		{[]string{"dead-letters", "purge"}, replicacmd.ExitUsage, "", `unknown action "purge"`},
		{[]string{"dead-letters", "retry", "--seq", "-1"}, replicacmd.ExitUsage, "", "invalid value"},
	}
	for _, tt := range tests {
		code, stdout, stderr := run(t, vars, tt.args...)
		if code != tt.want || !strings.Contains(stdout, tt.inStdout) || !strings.Contains(stderr, tt.inStderr) {
			t.Errorf("replica %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
				tt.args, code, stdout, stderr, tt.want, tt.inStdout, tt.inStderr)
		}
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t)
	goodDB := pgtest.NewDatabase(t)
	tests := []struct {
		name    string
		vars    map[string]string
		args    []string
		inError string
	}{
		{"nats", map[string]string{"DATABASE_URL": goodDB, "NATS_URL": "nats://127.0.0.1:1"}, []string{"status"}, "connect to nats"},
		{"nats refuses", map[string]string{"DATABASE_URL": goodDB, "NATS_URL": "nats://blog:not-the-password@" + strings.TrimPrefix(srv.URL, "nats://")}, []string{"status"}, "nats://blog:redacted@"},
		{"postgres", map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/x?sslmode=disable", "NATS_URL": srv.UserURL(natstest.Blog)}, []string{"dead-letters"}, "unreachable"},
		{"bad url", map[string]string{"DATABASE_URL": "::nonsense", "NATS_URL": srv.UserURL(natstest.Blog)}, []string{"verify"}, "DATABASE_URL"},
		{"no tables", map[string]string{"DATABASE_URL": goodDB, "NATS_URL": srv.UserURL(natstest.Blog)}, []string{"dead-letters", "list"}, "tables do not exist"},
		{"no stream", map[string]string{"DATABASE_URL": goodDB, "NATS_URL": srv.UserURL(natstest.Blog)}, []string{"verify"}, "stream does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.vars, tt.args...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != replicacmd.ExitFailure || len(lines) != 1 || !strings.Contains(stderr, tt.inError) {
				t.Errorf("replica %q = %d, stderr %q, stdout %q; want %d and one line with %q",
					tt.args, code, stderr, stdout, replicacmd.ExitFailure, tt.inError)
			}
			if strings.Contains(stderr, "not-the-password") {
				t.Errorf("stderr %q shows the NATS password", stderr)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var users []events.User
	for range 30 {
		u := authtest.NewUser()
		authtest.PublishUser(t, e.js, events.UserCreated, u)
		users = append(users, u)
	}
	poisoned := uuid.New()
	seqPoison := publishRaw(t, e.js, events.Subject(events.UserCreated, poisoned), []byte("{not json"))
	eventually(t, "applied", func() bool { return e.applied(t) == seqPoison })

	// status --json
	code, stdout, stderr := run(t, e.vars, "status", "--json")
	if code != 0 {
		t.Fatalf("status --json = %d: %s", code, stderr)
	}
	var st replica.StatusReport
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json output %q: %v", stdout, err)
	}
	if st.StreamLastSeq != seqPoison || st.AppliedSeq != seqPoison || st.Lag != 0 || st.Users != 30 || st.DeadLetters != 1 || st.Consumer == nil {
		t.Errorf("status = %+v", st)
	}
	code, stdout, _ = run(t, e.vars, "status")
	if code != 0 || !strings.Contains(stdout, "dead letters") || !strings.Contains(stdout, "consumer blog") {
		t.Errorf("status = %d, %q", code, stdout)
	}

	// verify: equal, then a tampered row is caught.
	if code, stdout, stderr := run(t, e.vars, "verify"); code != 0 || !strings.Contains(stdout, "equals") {
		t.Errorf("verify = %d, stdout %q, stderr %q; want 0", code, stdout, stderr)
	}
	tampered := users[5]
	if _, err := e.pool.Exec(context.Background(), `UPDATE replica_users SET status = 'disabled' WHERE id = $1`, tampered.ID); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = run(t, e.vars, "verify")
	if code != replicacmd.ExitFailure || !strings.Contains(stdout, "different "+tampered.ID.String()+": status replica disabled stream active") {
		t.Errorf("verify of a tampered row = %d, %q; want 1 naming the user and the field", code, stdout)
	}

	// rebuild repairs it, then verify agrees.
	code, stdout, stderr = run(t, e.vars, "rebuild")
	if code != 0 {
		t.Fatalf("rebuild = %d: %s", code, stderr)
	}
	for _, want := range []string{"read every message of the stream up to sequence 31 (the whole history)", "events read 31, applied 30, skipped 1 (1 invalid)", "events/s", "rebuild: 31/31 events"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("rebuild output lacks %q:\n%s", want, stdout)
		}
	}
	if code, stdout, _ := run(t, e.vars, "verify"); code != 0 {
		t.Errorf("verify after rebuild = %d, %q", code, stdout)
	}
	// The current state from the last message of each subject (one each here), with a warning
	// for the last message that cannot be applied.
	code, stdout, stderr = run(t, e.vars, "rebuild", "--last-per-subject")
	if code != 0 {
		t.Fatalf("rebuild --last-per-subject = %d: %s", code, stderr)
	}
	for _, want := range []string{"(full, last message per subject)", "read only the last message of each subject up to sequence 31", "events read 31, applied 30, skipped 1 (1 invalid)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("rebuild --last-per-subject output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "warning: 1 last messages could not be applied") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("rebuild --last-per-subject stderr = %q, want one line warning of the message that cannot be applied", stderr)
	}
	if code, stdout, stderr := run(t, e.vars, "rebuild", "--from-seq", "10"); code != 0 || !strings.Contains(stdout, "from sequence 10") {
		t.Errorf("rebuild --from-seq = %d, %q, %q", code, stdout, stderr)
	}
	if code, stdout, stderr := run(t, e.vars, "rebuild", "--since", time.Now().Add(-time.Hour).Format(time.RFC3339)); code != 0 || !strings.Contains(stdout, "events read 31") {
		t.Errorf("rebuild --since = %d, %q, %q", code, stdout, stderr)
	}

	// dead-letters: listed; retry cannot fix garbage (exit 1), and it stays listed.
	code, stdout, _ = run(t, e.vars, "dead-letters")
	if code != 0 || !strings.Contains(stdout, poisoned.String()) || !strings.Contains(stdout, "decode:") {
		t.Errorf("dead-letters = %d, %q", code, stdout)
	}
	code, stdout, _ = run(t, e.vars, "dead-letters", "list", "--json")
	var dl struct {
		Seq    uint64 `json:"seq"`
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal([]byte(stdout), &dl); code != 0 || err != nil || dl.Seq != seqPoison || dl.UserID != poisoned.String() {
		t.Errorf("dead-letters list --json = %d, %q (%v)", code, stdout, err)
	}
	code, stdout, _ = run(t, e.vars, "dead-letters", "retry")
	if code != replicacmd.ExitFailure || !strings.Contains(stdout, "1 still failing") {
		t.Errorf("dead-letters retry = %d, %q; want 1, still failing", code, stdout)
	}
	if code, _, stderr := run(t, e.vars, "dead-letters", "retry", "--seq", "999"); code != replicacmd.ExitFailure || !strings.Contains(stderr, "no dead letter") {
		t.Errorf("dead-letters retry --seq 999 = %d, %q", code, stderr)
	}

	// The user's next event carries its full state: the dead letter is superseded.
	u := events.User{ID: poisoned, Email: "p@example.com", DisplayName: "P", Roles: []string{events.RoleUser}, Status: events.StatusActive, Version: 1}
	authtest.PublishUser(t, e.js, events.UserCreated, u)
	eventually(t, "applied", func() bool { return e.applied(t) == seqPoison+1 })
	code, stdout, _ = run(t, e.vars, "dead-letters", "retry", "--seq", "31")
	if code != 0 || !strings.Contains(stdout, "superseded") {
		t.Errorf("dead-letters retry --seq 31 = %d, %q", code, stdout)
	}
	if code, stdout, _ := run(t, e.vars, "dead-letters"); code != 0 || !strings.Contains(stdout, "no dead letters") {
		t.Errorf("dead-letters after the retry = %d, %q", code, stdout)
	}
}

// interrupter cancels when the first progress line is written: Ctrl-C in the middle of a rebuild.
type interrupter struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *interrupter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("rebuild: ")) {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

func TestRebuildInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	authtest.PublishUser(t, e.js, events.UserCreated, authtest.NewUser())
	eventually(t, "applied", func() bool { return e.applied(t) == 1 })
	if _, err := e.pool.Exec(context.Background(), `UPDATE replica_users SET display_name = 'tampered'`); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &interrupter{cancel: cancel}
	var stderr bytes.Buffer
	code := replicacmd.Run(ctx, defaults.Name, load(e.vars), []string{"rebuild"}, stdout, &stderr)
	if code != replicacmd.ExitFailure || !strings.Contains(stderr.String(), "interrupted") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("interrupted rebuild = %d, stderr %q; want 1 and one line saying interrupted", code, stderr.String())
	}
	var name string
	if err := e.pool.QueryRow(context.Background(), `SELECT display_name FROM replica_users`).Scan(&name); err != nil || name != "tampered" {
		t.Errorf("live replica after an interrupted rebuild: display_name %q (%v), want untouched", name, err)
	}
}
