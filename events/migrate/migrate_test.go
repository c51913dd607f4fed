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
		"migrations/002_more.sql": {Data: []byte(`INSERT INTO things VALUES (2)`)},
		"migrations/001_init.sql": {Data: []byte(`CREATE TABLE things (n int); INSERT INTO things VALUES (1)`)},
		"migrations/notes.txt":    {Data: []byte(`not a migration`)},
		"other/001_init.sql":      {Data: []byte(`not SQL`)},
	}
	for range 2 { // the second run applies nothing
		if err := migrate.Apply(ctx, pool, "test", fsys, "migrations"); err != nil {
			t.Fatalf("Apply = %v", err)
		}
	}
	rows, _ := pool.Query(ctx, `SELECT n FROM things ORDER BY n`)
	things, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int32{1, 2}, things); diff != "" {
		t.Errorf("things (-want +got):\n%s", diff)
	}
	// Migrations are recorded by file name alone, whatever the directory they were read from.
	rows, _ = pool.Query(ctx, `SELECT set_name || '/' || name FROM schema_migrations ORDER BY name`)
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"test/001_init.sql", "test/002_more.sql"}, applied); diff != "" {
		t.Errorf("schema_migrations (-want +got):\n%s", diff)
	}
}

func TestApplyBadMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	fsys := fstest.MapFS{"m/001_bad.sql": {Data: []byte(`CREATE TABLE half (n int); SELECT nonsense`)}}
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
