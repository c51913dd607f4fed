package pgserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRestart crashes the server and stops it cleanly under open sessions: what was committed
// survives both, what was not committed does not survive the crash, the crash is recovered from
// the WAL, sessions opened before either restart are cut, and new ones succeed.
func TestRestart(t *testing.T) {
	began := time.Now()
	s := ForTest(t)
	t.Logf("initdb and start: %s", time.Since(began).Round(time.Millisecond))
	ctx := t.Context()

	admin := connect(t, s.URL("postgres"))
	for setting, want := range map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": filepath.Join(s.dir, "sock"),
		"fsync":                   "on",
	} {
		var got string
		if err := admin.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: got %q, want %q", setting, got, want)
		}
	}
	if s.port == 5432 {
		t.Fatal("runs on the shared server's port 5432")
	}

	dbURL, err := s.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := connect(t, dbURL)
	mustExec(t, before, "CREATE TABLE items (id int PRIMARY KEY)")
	mustExec(t, before, "INSERT INTO items SELECT generate_series(1, 100)")
	pending := connect(t, dbURL)
	mustExec(t, pending, "BEGIN")
	mustExec(t, pending, "INSERT INTO items SELECT generate_series(101, 200)")

	mark := len(s.Log(0))
	down, err := s.Restart(ctx, Immediate)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restart immediate: unreachable for %s", down.Round(time.Millisecond))
	if log := s.Log(0)[mark:]; !strings.Contains(log, "automatic recovery in progress") {
		t.Errorf("no crash recovery after an immediate restart; log since:\n%s", log)
	}
	for name, c := range map[string]*pgx.Conn{"committed": before, "pending": pending} {
		if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("session %s opened before the crash still works", name)
		}
	}
	after := connect(t, dbURL)
	if got := count(t, after); got != 100 {
		t.Errorf("after the crash: got %d rows, want the 100 committed", got)
	}

	mustExec(t, after, "INSERT INTO items SELECT generate_series(101, 150)")
	mark = len(s.Log(0))
	down, err = s.Restart(ctx, Fast)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restart fast: unreachable for %s", down.Round(time.Millisecond))
	log := s.Log(0)[mark:]
	if !strings.Contains(log, "database system was shut down at") || strings.Contains(log, "automatic recovery") {
		t.Errorf("no clean shutdown and start after a fast restart; log since:\n%s", log)
	}
	if _, err := after.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("session opened before the fast restart still works")
	}
	if got := count(t, connect(t, dbURL)); got != 150 {
		t.Errorf("after the fast restart: got %d rows, want 150", got)
	}
}

// TestStopClose stops and starts the server, then closes it: Close removes its directory and
// the server is gone.
func TestStopClose(t *testing.T) {
	s := ForTest(t)
	ctx := t.Context()

	if err := s.Stop(ctx, Fast); err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := s.Stop(ctx, Fast); err != nil {
		t.Errorf("stop when stopped: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	connect(t, s.URL("postgres"))

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s after Close: %v, want it removed", s.dir, err)
	}
	if c, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
		c.Close(ctx)
		t.Error("connected after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestFindBinDir(t *testing.T) {
	empty, full := t.TempDir(), t.TempDir()
	for _, name := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(full, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := findBinDir(empty, ""); !errors.Is(err, ErrNoPostgres) {
		t.Errorf("no binaries: got %v, want ErrNoPostgres", err)
	}
	if got, err := findBinDir("", empty, full); err != nil || got != full {
		t.Errorf("got %q, %v; want %q", got, err, full)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, c *pgx.Conn) int {
	t.Helper()
	var n int
	if err := c.QueryRow(t.Context(), "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
