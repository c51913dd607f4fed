package main

import (
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/seal"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pgtest"
)

// Instances starting together over a squatter's account converge on one reset: one role change,
// one revocation of the keys.
func TestBootstrapConcurrentTakeover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New([]string{testSecret})
	if err != nil {
		t.Fatal(err)
	}
	users, keys := postgres.New(pool), postgres.NewKeyStore(pool, sealer)
	if _, err := keys.EnsureSigningKey(ctx, token.NewKey); err != nil {
		t.Fatal(err)
	}
	hash, err := password.Hash("squatter-password")
	if err != nil {
		t.Fatal(err)
	}
	squatter, err := users.CreateUser(ctx, postgres.NewUser{Email: adminEmail, DisplayName: "Mallory", PasswordHash: hash})
	if err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			hasher := password.NewHasher(1, 0)
			if err := bootstrapAdmin(ctx, users, keys, hasher, adminEmail, adminPassword, log); err != nil {
				t.Errorf("bootstrapAdmin: %v", err)
			}
		})
	}
	wg.Wait()

	u, hash, err := users.Credentials(ctx, adminEmail)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := password.Verify(adminPassword, hash); !ok || u.ID != squatter.ID || u.Version != 2 || !u.HasRole(events.RoleAdmin) {
		t.Errorf("after concurrent bootstraps: %+v (password verifies: %v); want %s, admin at version 2", u, ok, squatter.ID)
	}
	st, err := outbox.Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Pending + st.Published; n != 2 {
		t.Errorf("%d events, want 2 (the creation, one role change)", n)
	}
	var rows, revoked int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(revoked_at) FROM signing_keys`).Scan(&rows, &revoked); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || revoked != 1 {
		t.Errorf("signing keys: %d rows, %d revoked; want the first key revoked and one new key", rows, revoked)
	}
}
