package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/authmesh/events/pgtest"
	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is wrapped by the error of New when the test Postgres server cannot be reached.
var ErrNoPostgres = errors.New("postgres unreachable")

// database is one database created for a stack.
type database struct {
	name, url string
}

// createDatabase creates an empty database with a unique name on the server whose URL is
// server, or the test server (pgtest.ServerURL: TEST_DATABASE_URL or the local server) when it is
// empty.
func createDatabase(ctx context.Context, server string) (database, error) {
	if server == "" {
		server = pgtest.ServerURL()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return database{}, fmt.Errorf("%w at %s (set TEST_DATABASE_URL): %w", ErrNoPostgres, server, err)
	}
	defer admin.Close(context.Background())

	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return database{}, err
	}
	name := "e2e_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return database{}, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(server)
	if err != nil {
		return database{}, fmt.Errorf("parse TEST_DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	return database{name: name, url: u.String()}, nil
}

// dropDatabase drops a database made by createDatabase, ending any session still on it.
func dropDatabase(server, name string) error {
	if server == "" {
		server = pgtest.ServerURL()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
