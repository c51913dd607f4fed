package pg_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/pgtest"
	"github.com/jackc/pgx/v5"
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
		// What a read gives when the server's socket ends under a statement (a crash): seen in
		// e2e/reliability's F09, the server crashed under the services.
		{"connection ended mid-message", fmt.Errorf("insert post: %w", io.ErrUnexpectedEOF), class{unavailable: true}},
		{"connection reset", fmt.Errorf("insert order: %w", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), class{unavailable: true}},
		{"connection closed", fmt.Errorf("create user: %w", pgconn.ErrConnClosed), class{unavailable: true}},
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

// TestConnectionLost cuts a session's TCP connection under a statement, as a crash of the server
// or a dropped network path does: no error comes from the server, the socket just ends (closed, or
// reset). The error of the statement, that of the next use of the connection, and that of a
// transaction the cut ends (pgx reports its failed rollback) must all be Unavailable: a request
// answers 503, not 500.
func TestConnectionLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	for _, reset := range []bool{false, true} {
		name := "closed"
		if reset {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) {
			p := newCutter(t, dbURL)
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded, want the cut connection's error", what)
				}
				if !pg.Unavailable(err) || pg.DataError(err) {
					t.Errorf("%s: %v: Unavailable %t, DataError %t; want Unavailable only", what, err, pg.Unavailable(err), pg.DataError(err))
				}
			}

			conn, err := pgx.Connect(ctx, p.url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			go p.cutWhenSleeping(t, dbURL, reset)
			_, err = conn.Exec(ctx, "SELECT pg_sleep(5)")
			check("the statement under the cut", err)
			_, err = conn.Exec(ctx, "SELECT 1")
			check("the next statement on the connection", err)

			pool, err := pg.Open(ctx, p.url, pg.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				go p.cutWhenSleeping(t, dbURL, reset)
				_, err := tx.Exec(ctx, "SELECT pg_sleep(5)")
				return err
			})
			check("a transaction under the cut", err)
		})
	}
}

// cutter is a TCP proxy in front of the test server whose connections can be cut.
type cutter struct {
	url string // the database's URL through the proxy

	mu    sync.Mutex
	conns []*net.TCPConn
}

func newCutter(t *testing.T, dbURL string) *cutter {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	server := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = ln.Addr().String()
	c := &cutter{url: u.String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		c.cut(false)
		wg.Wait()
	})
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			upstream, err := net.DialTimeout("tcp", server, 5*time.Second)
			if err != nil {
				client.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, client.(*net.TCPConn), upstream.(*net.TCPConn))
			c.mu.Unlock()
			wg.Go(func() { io.Copy(upstream, client); upstream.Close() })
			wg.Go(func() { io.Copy(client, upstream); client.Close() })
		}
	})
	return c
}

// cut closes every connection through the proxy, with a reset (RST) rather than an orderly close
// when reset is set.
func (c *cutter) cut(reset bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		if reset {
			conn.SetLinger(0)
		}
		conn.Close()
	}
	c.conns = nil
}

// cutWhenSleeping cuts the connections once a session of the database runs pg_sleep, at most 5 s
// after it is called.
func (c *cutter) cutWhenSleeping(t *testing.T, dbURL string, reset bool) {
	defer c.cut(reset)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close(context.Background())
	for ctx.Err() == nil {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'active' AND query LIKE 'SELECT pg_sleep%'`).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
