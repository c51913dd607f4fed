package postgres_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// outboxEvents returns the type and user of every event in the outbox, oldest first.
func outboxEvents(t *testing.T, pool *pgxpool.Pool) []events.Event {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT payload FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []events.Event
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		var e events.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestResetAdminTakesOver(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	keys := postgres.NewKeyStore(pool, sealer(t, secretOld))
	first := newKey(t)
	if _, err := keys.EnsureSigningKey(ctx, func() (account.SigningKey, error) { return first, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.PromoteSigningKey(ctx, first.ID); err != nil {
		t.Fatal(err)
	}

	squatter := mustCreate(t, s, "root@example.com")
	if _, err := s.SetStatus(ctx, squatter.ID, events.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	_, hash, err := s.Credentials(ctx, "root@example.com")
	if err != nil {
		t.Fatal(err)
	}

	// A reset against a hash that is no longer the stored one changes nothing.
	next := newKey(t)
	sealed := keys.Seal(next)
	if _, err := s.ResetAdmin(ctx, postgres.AdminReset{ID: squatter.ID, Verified: "stale", Hash: "$new", Revoke: &sealed}); !errors.Is(err, postgres.ErrStale) {
		t.Fatalf("ResetAdmin with a stale hash = %v, want ErrStale", err)
	}
	if _, err := s.ResetAdmin(ctx, postgres.AdminReset{ID: uuid.New(), Verified: hash}); !errors.Is(err, account.ErrNotFound) {
		t.Errorf("ResetAdmin of an unknown user = %v, want ErrNotFound", err)
	}

	res, err := s.ResetAdmin(ctx, postgres.AdminReset{ID: squatter.ID, Verified: hash, Hash: "$new", Revoke: &sealed})
	if err != nil {
		t.Fatalf("ResetAdmin: %v", err)
	}
	if !res.PasswordChanged || !res.AdminGranted || !res.Activated || res.RevokedKeys != 1 {
		t.Errorf("ResetAdmin = %+v; want the password changed, admin granted, activated, 1 key revoked", res)
	}
	u := res.User
	if u.ID != squatter.ID || u.Version != 4 || u.Status != events.StatusActive || !u.HasRole(events.RoleAdmin) {
		t.Errorf("reset user = %+v; want %s, active admin at version 4", u, squatter.ID)
	}
	if _, h, _ := s.Credentials(ctx, "root@example.com"); h != "$new" {
		t.Errorf("password hash = %q, want the new one", h)
	}
	evs := outboxEvents(t, pool)
	if len(evs) != 4 {
		t.Fatalf("%d events in the outbox, want 4", len(evs))
	}
	type ev struct {
		Type    events.Type
		Roles   []string
		Status  string
		Version int64
	}
	var got []ev
	for _, e := range evs[2:] {
		if e.User.ID != squatter.ID || e.User.Email != squatter.Email || e.User.DisplayName != squatter.DisplayName {
			t.Errorf("event %s carries user %+v, not the full state of %s", e.Type, e.User, squatter.ID)
		}
		got = append(got, ev{e.Type, e.User.Roles, e.User.Status, e.User.Version})
	}
	want := []ev{
		{events.UserRoleChanged, []string{"user", "admin"}, "disabled", 3},
		{events.UserStatusChanged, []string{"user", "admin"}, "active", 4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events of the reset (-want +got):\n%s", diff)
	}
	// Every key is revoked; the new one waits to be published.
	wantStates(t, "after the takeover", mustKeys(t, keys, time.Hour), next.ID+" pending")

	// Again: nothing changes, no key is revoked.
	again := keys.Seal(newKey(t))
	res, err = s.ResetAdmin(ctx, postgres.AdminReset{ID: squatter.ID, Verified: "$new", Revoke: &again})
	if err != nil || res.PasswordChanged || res.AdminGranted || res.Activated || res.RevokedKeys != 0 || res.User.Version != 4 {
		t.Errorf("ResetAdmin of an active admin = %+v, %v; want no change", res, err)
	}
	if n := len(outboxEvents(t, pool)); n != 4 {
		t.Errorf("%d events after a reset that changed nothing, want 4", n)
	}
	wantStates(t, "after a reset that changed nothing", mustKeys(t, keys, time.Hour), next.ID+" pending")
}
