package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestClasses runs statements that fail in each way on a real server and checks the class each
// error falls in. The classes decide between 503 and 500, and between retry and dead letter.
func TestClasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pg.Open(ctx, pgtest.NewDatabase(t), pg.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, n int CHECK (n >= 0))`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	fail := func(sql string) error {
		_, err := pool.Exec(ctx, sql)
		if err == nil {
			t.Fatalf("%s succeeded, want an error", sql)
		}
		return err
	}
	type class struct{ unavailable, retryable, unique, data, undefined bool }
	tests := []struct {
		name string
		err  error
		want class
	}{
		{"statement timeout", fail(`SET LOCAL statement_timeout = '1ms'; SELECT pg_sleep(1)`), class{unavailable: true}},
		{"unique violation", fail(`INSERT INTO t VALUES (1, 1)`), class{unique: true, data: true}},
		{"check violation", fail(`UPDATE t SET n = -1`), class{data: true}},
		{"division by zero", fail(`SELECT 1/0`), class{data: true}},
		{"undefined table", fail(`SELECT * FROM nowhere`), class{undefined: true}},
		{"syntax error (a bug of ours)", fail(`SELEKT 1`), class{}},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, class{unavailable: true, retryable: true}},
		{"deadlock", fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40P01"}), class{unavailable: true, retryable: true}},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, class{unavailable: true}},
		{"too many connections", &pgconn.PgError{Code: "53300"}, class{unavailable: true}},
		{"lock timeout", &pgconn.PgError{Code: "55P03"}, class{unavailable: true}},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), class{unavailable: true}},
		{"canceled by the client", context.Canceled, class{}},
		{"not a database error", errors.New("boom"), class{}},
	}
	for _, tt := range tests {
		got := class{
			unavailable: pg.Unavailable(tt.err),
			retryable:   pg.Retryable(tt.err),
			unique:      pg.UniqueViolation(tt.err, "t_pkey"),
			data:        pg.DataError(tt.err),
			undefined:   pg.UndefinedTable(tt.err),
		}
		if got != tt.want {
			t.Errorf("%s (%v): classes %+v, want %+v", tt.name, tt.err, got, tt.want)
		}
	}
	if pg.UniqueViolation(fail(`INSERT INTO t VALUES (1, 1)`), "other_key") {
		t.Error("UniqueViolation names the wrong constraint")
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pg.Open(ctx, url, pg.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for name, want := range pg.SessionLimits {
		var got string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	unbounded, err := pg.Open(ctx, url, pg.Config{Unbounded: true, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer unbounded.Close()
	var st string
	if err := unbounded.QueryRow(ctx, "SHOW statement_timeout").Scan(&st); err != nil || st != "0" {
		t.Errorf("unbounded statement_timeout = %q, %v; want 0", st, err)
	}

	start := time.Now()
	_, err = pg.Open(ctx, "postgres://someone:s3cret@127.0.0.1:1/db?sslmode=disable", pg.Config{ConnectTimeout: time.Second, PingTimeout: 2 * time.Second})
	if err == nil || !pg.Unavailable(err) || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "someone@127.0.0.1:1/db") {
		t.Errorf("Open(unreachable) = %v; want an Unavailable error naming someone@127.0.0.1:1/db, without the password", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("Open(unreachable) took %v", time.Since(start))
	}
	if _, err := pg.Open(ctx, "::nonsense", pg.Config{}); err == nil || !strings.HasPrefix(err.Error(), "DATABASE_URL") {
		t.Errorf("Open(bad URL) = %v, want an error naming DATABASE_URL", err)
	}
	if got := pg.Redact("postgres://u:pw@h:5433/d?sslmode=disable"); got != "u@h:5433/d" {
		t.Errorf("Redact = %q", got)
	}
}
