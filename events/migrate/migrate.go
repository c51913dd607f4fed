// Package migrate applies numbered SQL migrations embedded in a service, once each, in order.
//
// A migration is a file NNNN_what.sql: its number is its identity, so every set is numbered the
// same way (four digits), two files of one set may never share a number, and renaming a file
// (its padding or its words) does not apply it again. Each migration runs in its own transaction
// together with the row that records it, so a migration that fails leaves nothing half-applied. A
// transaction-scoped advisory lock makes instances that start together apply them one at a time.
package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const lockKey = 7_514_225_001 // any constant shared by every instance

// Apply applies the *.sql files in the directory dir of fsys (typically the embed.FS of
// "//go:embed migrations/*.sql" and "migrations") whose number is not yet recorded under set, in
// the order of their numbers. A migration is recorded by its file name, and known by its number. A
// set names one group of migrations (a service's own, or a shared library's), so groups never
// collide. A file without a number, or two with the same, is an error before anything is applied.
func Apply(ctx context.Context, pool *pgxpool.Pool, set string, fsys fs.FS, dir string) error {
	fsys, err := fs.Sub(fsys, dir)
	if err != nil {
		return fmt.Errorf("migrations of %s: %w", set, err)
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	if err := order(names); err != nil {
		return fmt.Errorf("migrations of %s: %w", set, err)
	}
	const ddl = `CREATE TABLE IF NOT EXISTS schema_migrations (
		set_name   text NOT NULL,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (set_name, name))`
	for _, name := range names {
		sql, err := fs.ReadFile(fsys, name)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", name, err)
		}
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return err
			}
			var done bool
			// Known by its number: 001_posts.sql, recorded before the numbering had four digits,
			// is 0001_posts.sql.
			const q = `SELECT EXISTS (SELECT 1 FROM schema_migrations
				WHERE set_name = $1 AND substring(name FROM '^[0-9]+')::int = $2)`
			n, _ := number(name)
			if err := tx.QueryRow(ctx, q, set, n).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (set_name, name) VALUES ($1, $2)`, set, name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", path.Join(set, name), err)
		}
	}
	return nil
}

// order sorts names by their numbers, and refuses a name without a number and two names with the
// same number.
func order(names []string) error {
	nums := map[int]string{}
	for _, name := range names {
		n, err := number(name)
		if err != nil {
			return err
		}
		if other, ok := nums[n]; ok {
			return fmt.Errorf("%s and %s have the same number", other, name)
		}
		nums[n] = name
	}
	slices.SortFunc(names, func(a, b string) int {
		na, _ := number(a)
		nb, _ := number(b)
		return na - nb
	})
	return nil
}

// number is the number a migration's name starts with: 3 for 0003_signing_keys.sql.
func number(name string) (int, error) {
	digits, _, ok := strings.Cut(name, "_")
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n < 1 {
		return 0, fmt.Errorf("migration %s: want a name NNNN_what.sql", name)
	}
	return n, nil
}
