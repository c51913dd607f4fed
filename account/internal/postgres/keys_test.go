package postgres_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/seal"
	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	secretOld = "the-old-secret-of-at-least-32-characters"
	secretNew = "the-new-secret-of-at-least-32-characters"
)

func sealer(t *testing.T, secrets ...string) *seal.Sealer {
	t.Helper()
	s, err := seal.New(secrets)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newKeyStore returns a key store on a fresh, migrated database, sealing with secretOld.
func newKeyStore(t *testing.T) (*postgres.KeyStore, *pgxpool.Pool) {
	t.Helper()
	_, pool := newStore(t)
	return postgres.NewKeyStore(pool, sealer(t, secretOld)), pool
}

func newKey(t *testing.T) account.SigningKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return account.SigningKey{ID: fmt.Sprintf("kid-%x", pub[:8]), Private: priv}
}

// states are the kid and state of each key, as a test compares them.
func states(keys []account.SigningKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.ID+" "+k.State())
	}
	return out
}

func mustKeys(t *testing.T, s *postgres.KeyStore, grace time.Duration) []account.SigningKey {
	t.Helper()
	keys, err := s.SigningKeys(t.Context(), grace)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	return keys
}

func wantStates(t *testing.T, what string, keys []account.SigningKey, want ...string) {
	t.Helper()
	if got := states(keys); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("%s: keys %q, want %q", what, got, want)
	}
}

func TestSigningKeyLifecycle(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	ctx := t.Context()

	// Instances starting together create one key, pending until published.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []account.SigningKey
	)
	for range 4 {
		wg.Go(func() {
			k := newKey(t)
			ok, err := s.EnsureSigningKey(ctx, func() (account.SigningKey, error) { return k, nil })
			if err != nil {
				t.Errorf("EnsureSigningKey: %v", err)
			}
			if ok {
				mu.Lock()
				created = append(created, k)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(created) != 1 {
		t.Fatalf("%d concurrent EnsureSigningKey created a key, want 1", len(created))
	}
	first := created[0]
	keys := mustKeys(t, s, time.Hour)
	wantStates(t, "first start", keys, first.ID+" pending")
	if !keys[0].Private.Equal(first.Private) {
		t.Error("the stored key does not open to the key stored")
	}
	if ok, err := s.EnsureSigningKey(ctx, func() (account.SigningKey, error) { return newKey(t), nil }); ok || err != nil {
		t.Errorf("EnsureSigningKey with a pending key = %v, %v; want false, nil", ok, err)
	}

	promote := func(kid string, want bool) {
		t.Helper()
		if ok, err := s.PromoteSigningKey(ctx, kid); ok != want || err != nil {
			t.Fatalf("PromoteSigningKey(%s) = %v, %v; want %v", kid, ok, err, want)
		}
	}
	promote(first.ID, true)
	promote(first.ID, false) // current already
	wantStates(t, "published", mustKeys(t, s, time.Hour), first.ID+" current")

	// A rotation adds a pending key; the current one signs until the new one is published.
	second := newKey(t)
	if err := s.AddSigningKey(ctx, second); err != nil {
		t.Fatal(err)
	}
	wantStates(t, "rotated", mustKeys(t, s, 0), second.ID+" pending", first.ID+" current")

	// A second rotation before the first was published: promoting the newer key drops the
	// older pending one (it never signed) and retires the current one.
	third := newKey(t)
	if err := s.AddSigningKey(ctx, third); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	promote(third.ID, true)
	promote(second.ID, false) // revoked
	keys = mustKeys(t, s, time.Hour)
	wantStates(t, "promoted", keys, third.ID+" current", first.ID+" retired")
	if r := keys[1].RetiredAt; r.Before(before.Add(-time.Second)) {
		t.Errorf("retired at %v, before the promotion at %v: its grace must count from the promotion", r, before)
	}
	// Past its grace, the retired key is no longer published.
	wantStates(t, "grace 0", mustKeys(t, s, 0), third.ID+" current")
}

// rawRows returns every column of every row of signing_keys as Postgres sends it, in binary
// format and as the text of the whole row. Statements are described anew each time (no cache):
// the schema changes under some tests.
func rawRows(t *testing.T, pool *pgxpool.Pool) [][]byte {
	t.Helper()
	var out [][]byte
	for _, q := range []string{`SELECT * FROM signing_keys`, `SELECT t::text FROM signing_keys t`} {
		rows, err := pool.Query(t.Context(), q, pgx.QueryExecModeDescribeExec)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			for _, v := range rows.RawValues() {
				out = append(out, bytes.Clone(v))
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// holdsSeed reports whether some raw value holds seed, raw, in hex or in base64.
func holdsSeed(raw [][]byte, seed []byte) bool {
	forms := [][]byte{seed, []byte(hex.EncodeToString(seed)), []byte(base64.StdEncoding.EncodeToString(seed)),
		[]byte(base64.RawURLEncoding.EncodeToString(seed))}
	for _, v := range raw {
		for _, f := range forms {
			if bytes.Contains(bytes.ToLower(v), bytes.ToLower(f)) {
				return true
			}
		}
	}
	return false
}

func TestSigningKeysSealedAtRest(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	ctx := t.Context()
	current := newKey(t)
	if _, err := s.EnsureSigningKey(ctx, func() (account.SigningKey, error) { return current, nil }); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.PromoteSigningKey(ctx, current.ID); !ok || err != nil {
		t.Fatalf("PromoteSigningKey = %v, %v", ok, err)
	}
	other := newKey(t)
	if err := s.AddSigningKey(ctx, other); err != nil {
		t.Fatal(err)
	}
	keys := mustKeys(t, s, time.Hour)
	wantStates(t, "stored", keys, other.ID+" pending", current.ID+" current")
	if len(keys) != 2 {
		t.FailNow()
	}
	raw := rawRows(t, pool)
	for _, k := range keys {
		if holdsSeed(raw, k.Private.Seed()) {
			t.Errorf("the signing_keys table holds the seed of %s", k.ID)
		}
		if holdsSeed(raw, k.Private) {
			t.Errorf("the signing_keys table holds the private key of %s", k.ID)
		}
	}
	// The check can fail: a seed written by hand is found.
	if !holdsSeed([][]byte{[]byte(`\x` + hex.EncodeToString(keys[0].Private.Seed()))}, keys[0].Private.Seed()) {
		t.Fatal("holdsSeed does not find a hex seed")
	}

	// No new row may hold a plaintext seed.
	if _, err := pool.Exec(ctx, `UPDATE signing_keys SET private_key = $1 WHERE kid = $2`, keys[0].Private.Seed(), keys[0].ID); err == nil {
		t.Error("a plaintext seed was stored")
	}

	// Another secret opens nothing.
	if _, err := postgres.NewKeyStore(pool, sealer(t, secretNew)).SigningKeys(ctx, time.Hour); !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("SigningKeys with another secret = %v, want ErrUnsealed", err)
	}

	// Swapping the sealed keys of two rows makes both unusable.
	const swap = `UPDATE signing_keys a SET sealed_key = b.sealed_key FROM signing_keys b WHERE a.kid <> b.kid`
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, swap); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewKeyStore(pool, sealer(t, secretOld)).SigningKeys(ctx, time.Hour); err != nil {
		t.Fatalf("outside the transaction: %v", err) // the swap is not committed yet
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SigningKeys(ctx, time.Hour); !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("SigningKeys after swapping sealed keys = %v, want ErrUnsealed", err)
	}
}

func TestTamperedKidIsUnusable(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	ctx := t.Context()
	k := newKey(t)
	if _, err := s.EnsureSigningKey(ctx, func() (account.SigningKey, error) { return k, nil }); err != nil {
		t.Fatal(err)
	}
	mustKeys(t, s, time.Hour)
	if _, err := pool.Exec(ctx, `UPDATE signing_keys SET kid = kid || 'x'`); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.SigningKeys(ctx, time.Hour); !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("SigningKeys after renaming the kid = %v, %v; want ErrUnsealed", states(keys), err)
	}
}

// legacyDatabase returns a database with the schema of the migrations before 0004, the ones of
// versions that stored seeds in plaintext.
func legacyDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	old := fstest.MapFS{}
	names, err := fs.Glob(postgres.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if name >= "migrations/0004" {
			continue
		}
		b, err := fs.ReadFile(postgres.Migrations, name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	if len(old) != 3 {
		t.Fatalf("%d migrations before 0004, want 3", len(old))
	}
	if err := migrate.Apply(t.Context(), pool, "account", old, "migrations"); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestSealPlaintextOfOlderDatabase(t *testing.T) {
	t.Parallel()
	pool := legacyDatabase(t)
	ctx := t.Context()
	retired, current := newKey(t), newKey(t)
	const insert = `INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, $5)`
	now := time.Now()
	if _, err := pool.Exec(ctx, insert, retired.ID, []byte(retired.Private.Seed()), []byte(retired.Public()), now.Add(-time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, insert, current.ID, []byte(current.Private.Seed()), []byte(current.Public()), now, nil); err != nil {
		t.Fatal(err)
	}
	if !holdsSeed(rawRows(t, pool), current.Private.Seed()) {
		t.Fatal("the legacy table does not hold the seed: the check below means nothing")
	}

	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s := postgres.NewKeyStore(pool, sealer(t, secretOld))
	if _, err := s.SigningKeys(ctx, time.Hour); !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("SigningKeys before sealing = %v, want ErrUnsealed", err)
	}
	if n, err := s.SealPlaintext(ctx); n != 2 || err != nil {
		t.Fatalf("SealPlaintext = %d, %v; want 2", n, err)
	}
	if n, err := s.SealPlaintext(ctx); n != 0 || err != nil {
		t.Errorf("SealPlaintext again = %d, %v; want 0", n, err)
	}
	raw := rawRows(t, pool)
	for _, k := range []account.SigningKey{retired, current} {
		if holdsSeed(raw, k.Private.Seed()) {
			t.Errorf("after sealing, the table holds the seed of %s", k.ID)
		}
	}
	var plain int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE private_key IS NOT NULL`).Scan(&plain); err != nil || plain != 0 {
		t.Errorf("%d rows keep a private_key (%v), want 0", plain, err)
	}
	keys := mustKeys(t, s, time.Hour)
	wantStates(t, "sealed", keys, current.ID+" current", retired.ID+" retired")
	if len(keys) == 2 && (!keys[0].Private.Equal(current.Private) || !keys[1].Private.Equal(retired.Private)) {
		t.Error("the sealed keys do not open to the plaintext ones")
	}
}

func TestReseal(t *testing.T) {
	t.Parallel()
	_, pool := newStore(t)
	ctx := t.Context()
	old := postgres.NewKeyStore(pool, sealer(t, secretOld))
	for range 2 {
		if err := old.AddSigningKey(ctx, newKey(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := states(mustKeys(t, old, time.Hour))

	// Without the old secret, nothing opens, and a reseal changes nothing.
	if n, err := postgres.NewKeyStore(pool, sealer(t, secretNew)).Reseal(ctx); n != 0 || !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("Reseal without the old secret = %d, %v; want ErrUnsealed", n, err)
	}
	// The new secret first, the old one second: everything opens, and is resealed.
	rotated := postgres.NewKeyStore(pool, sealer(t, secretNew, secretOld))
	if got := states(mustKeys(t, rotated, time.Hour)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("keys with the secrets rotated = %q, want %q", got, want)
	}
	if n, err := rotated.Reseal(ctx); n != 2 || err != nil {
		t.Fatalf("Reseal = %d, %v; want 2", n, err)
	}
	// Now the new secret alone opens them, and the old one alone does not.
	if got := states(mustKeys(t, postgres.NewKeyStore(pool, sealer(t, secretNew)), time.Hour)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("keys with the new secret alone = %q, want %q", got, want)
	}
	if _, err := old.SigningKeys(ctx, time.Hour); !errors.Is(err, postgres.ErrUnsealed) {
		t.Errorf("SigningKeys with the old secret alone after the reseal = %v, want ErrUnsealed", err)
	}
}
