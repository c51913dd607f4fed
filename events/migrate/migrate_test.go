package migrate_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/pgtest"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

func TestApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	fsys := fstest.MapFS{
		"migrations/0010_last.sql": {Data: []byte(`INSERT INTO things VALUES (3)`)},
		"migrations/0002_more.sql": {Data: []byte(`INSERT INTO things VALUES (2)`)},
		"migrations/0001_init.sql": {Data: []byte(`CREATE TABLE things (n int); INSERT INTO things VALUES (1)`)},
		"migrations/notes.txt":     {Data: []byte(`not a migration`)},
		"other/0001_init.sql":      {Data: []byte(`not SQL`)},
	}
	for range 2 { // the second run applies nothing
		if err := migrate.Apply(ctx, pool, "test", fsys, "migrations"); err != nil {
			t.Fatalf("Apply = %v", err)
		}
	}
	// In the order of their numbers (0002 before 0010), each once.
	rows, _ := pool.Query(ctx, `SELECT n FROM things`)
	things, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int32{1, 2, 3}, things); diff != "" {
		t.Errorf("things (-want +got):\n%s", diff)
	}
	// Migrations are recorded by file name alone, whatever the directory they were read from.
	rows, _ = pool.Query(ctx, `SELECT set_name || '/' || name FROM schema_migrations ORDER BY name`)
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"test/0001_init.sql", "test/0002_more.sql", "test/0010_last.sql"}, applied); diff != "" {
		t.Errorf("schema_migrations (-want +got):\n%s", diff)
	}
}

func TestApplyBadMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	fsys := fstest.MapFS{"m/0001_bad.sql": {Data: []byte(`CREATE TABLE half (n int); SELECT nonsense`)}}
	if err := migrate.Apply(ctx, pool, "test", fsys, "m"); err == nil {
		t.Fatal("Apply of a failing migration = nil, want an error")
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('half') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("a failed migration left its table behind")
	}
}

// TestApplyKnowsMigrationsByNumber: a migration recorded under an older name (three digits) is not
// applied again once renamed; names without a number, or two with one number, are refused before
// anything runs.
func TestApplyKnowsMigrationsByNumber(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	old := fstest.MapFS{"m/001_init.sql": {Data: []byte(`CREATE TABLE things (n int)`)}}
	if err := migrate.Apply(ctx, pool, "test", old, "m"); err != nil {
		t.Fatal(err)
	}
	renamed := fstest.MapFS{
		"m/0001_things.sql": {Data: []byte(`CREATE TABLE things (n int)`)},
		"m/0002_more.sql":   {Data: []byte(`INSERT INTO things VALUES (2)`)},
	}
	if err := migrate.Apply(ctx, pool, "test", renamed, "m"); err != nil {
		t.Fatalf("Apply after a rename = %v, want the renamed migration known", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM things`).Scan(&n); err != nil || n != 1 {
		t.Errorf("things = %d, %v; want the one row of 0002", n, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"same number": {"m/0003_a.sql": {Data: []byte(`CREATE TABLE a (n int)`)}, "m/0003_b.sql": {Data: []byte(`SELECT 1`)}},
		"no number":   {"m/0003_a.sql": {Data: []byte(`CREATE TABLE a (n int)`)}, "m/init.sql": {Data: []byte(`SELECT 1`)}},
	} {
		if err := migrate.Apply(ctx, pool, "test", fsys, "m"); err == nil {
			t.Errorf("Apply with %s = nil, want an error", name)
		}
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass('a') IS NOT NULL`).Scan(&exists); err != nil || exists {
			t.Errorf("Apply with %s applied 0003 (%v)", name, err)
		}
	}
}
