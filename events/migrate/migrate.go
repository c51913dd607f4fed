// Package migrate applies numbered SQL migrations embedded in a service, once each, in order.
//
// Each migration runs in its own transaction together with the row that records it, so a
// migration that fails leaves nothing half-applied. A transaction-scoped advisory lock makes
// instances that start together apply them one at a time.
package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const lockKey = 7_514_225_001 // any constant shared by every instance

// Apply applies the *.sql files in the directory dir of fsys (typically the embed.FS of
// "//go:embed migrations/*.sql" and "migrations") that are not yet recorded under set, in name
// order. A migration is recorded by its file name alone. A set names one group of migrations (a
// service's own, or a shared library's), so groups never collide.
func Apply(ctx context.Context, pool *pgxpool.Pool, set string, fsys fs.FS, dir string) error {
	fsys, err := fs.Sub(fsys, dir)
	if err != nil {
		return fmt.Errorf("migrations of %s: %w", set, err)
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	slices.Sort(names)
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
			const q = `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE set_name = $1 AND name = $2)`
			if err := tx.QueryRow(ctx, q, set, name).Scan(&done); err != nil || done {
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
