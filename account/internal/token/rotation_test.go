package token

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/seal"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/pgtest"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// flakyKV is a real bucket whose puts fail while fail is set, as when the broker refuses them.
type flakyKV struct {
	jetstream.KeyValue
	fail atomic.Bool
}

var errPutRefused = errors.New("put refused")

func (f *flakyKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if f.fail.Load() {
		return 0, errPutRefused
	}
	return f.KeyValue.Put(ctx, key, value)
}

// keyStore returns the signing keys of a fresh account database.
func keyStore(t *testing.T) *postgres.KeyStore {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := seal.New([]string{"a-test-secret-of-at-least-32-characters"})
	if err != nil {
		t.Fatal(err)
	}
	return postgres.NewKeyStore(pool, s)
}

// states is each key's kid and state.
func states(keys []account.SigningKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.ID+" "+k.State())
	}
	return out
}

func signedKid(t *testing.T, keys *Keys) string {
	t.Helper()
	tok, err := (&Signer{Keys: keys, Issuer: "account", TTL: time.Minute}).Sign(authtest.NewUser())
	if err != nil {
		t.Fatal(err)
	}
	return tokenKid(t, tok)
}

func TestRotationPublishesBeforeSigning(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := keyStore(t)
	bucket := keyBucket(t)
	kvA, kvB := &flakyKV{KeyValue: bucket}, &flakyKV{KeyValue: bucket}
	const ttl = 15 * time.Minute

	if _, err := store.EnsureSigningKey(ctx, NewKey); err != nil {
		t.Fatal(err)
	}
	a, err := NewKeys(store, kvA, ttl, discard)
	if err != nil {
		t.Fatal(err)
	}
	// The first key too signs only once published.
	kvA.fail.Store(true)
	if err := a.Refresh(ctx); !errors.Is(err, errPutRefused) {
		t.Fatalf("first Refresh with the bucket refusing puts = %v, want the put's error", err)
	}
	if k := a.Current(); k.Private != nil {
		t.Fatalf("key %s signs before it was ever published", k.ID)
	}
	kvA.fail.Store(false)
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	old := a.Current().ID
	oldToken, err := (&Signer{Keys: a, Issuer: "account", TTL: ttl}).Sign(authtest.NewUser())
	if err != nil {
		t.Fatal(err)
	}
	if kids, _ := bucketKids(t, bucket); !cmp.Equal(kids, []string{old}) {
		t.Fatalf("bucket kids = %v, want [%s]", kids, old)
	}

	// A rotation while the bucket refuses puts: the old key goes on signing, and stays published.
	next, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.AddSigningKey(ctx, next); err != nil {
		t.Fatal(err)
	}
	kvA.fail.Store(true)
	kvB.fail.Store(true)
	for range 3 {
		if err := a.Refresh(ctx); !errors.Is(err, errPutRefused) {
			t.Fatalf("Refresh with the bucket refusing puts = %v, want the put's error", err)
		}
	}
	if kid := signedKid(t, a); kid != old {
		t.Errorf("while publishing fails, tokens are signed by %s, want the old key %s", kid, old)
	}
	if kids, _ := bucketKids(t, bucket); !cmp.Equal(kids, []string{old}) {
		t.Errorf("bucket kids while publishing fails = %v, want [%s]", kids, old)
	}
	// The old key is not retired, so no grace runs out: even with none it is still published.
	keys, err := store.SigningKeys(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := states(keys); !cmp.Equal(got, []string{next.ID + " pending", old + " current"}) {
		t.Errorf("keys while publishing fails = %v, want the new one pending and the old one current", got)
	}
	// Another instance starting meanwhile signs with the old key as well.
	b, err := NewKeys(store, kvB, ttl, discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); !errors.Is(err, errPutRefused) {
		t.Fatalf("Refresh of a second instance = %v, want the put's error", err)
	}
	if kid := signedKid(t, b); kid != old {
		t.Errorf("a second instance signs with %s, want the old key %s", kid, old)
	}

	// Publishing recovers for one instance: the new key is published, then signs; the old one
	// stays published for its grace, which starts now.
	kvA.fail.Store(false)
	promoted := time.Now()
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if kid := signedKid(t, a); kid != next.ID {
		t.Errorf("after publishing, tokens are signed by %s, want the new key %s", kid, next.ID)
	}
	kids, _ := bucketKids(t, bucket)
	if !cmp.Equal(kids, []string{next.ID, old}) {
		t.Errorf("bucket kids after publishing = %v, want [%s %s]", kids, next.ID, old)
	}
	e, err := bucket.Get(ctx, events.KeysKey)
	if err != nil {
		t.Fatal(err)
	}
	set, err := auth.NewKeySet(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&auth.Verifier{Keys: set, Issuer: "account", Audience: "shop"}).Verify(oldToken); err != nil {
		t.Errorf("a token of the old key is refused with the published keys: %v", err)
	}
	keys, err = store.SigningKeys(ctx, Grace(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if got := states(keys); !cmp.Equal(got, []string{next.ID + " current", old + " retired"}) {
		t.Errorf("keys after publishing = %v, want the new one current and the old one retired", got)
	} else if keys[1].RetiredAt.Before(promoted.Add(-time.Second)) {
		t.Errorf("the old key was retired at %v, before the new one was published (%v)", keys[1].RetiredAt, promoted)
	}
	// The other instance, still unable to publish, follows: the store makes a key current only
	// once the bucket published it.
	if err := b.Refresh(ctx); !errors.Is(err, errPutRefused) && err != nil {
		t.Fatal(err)
	}
	if kid := signedKid(t, b); kid != next.ID {
		t.Errorf("the second instance signs with %s after the new key was published, want %s", kid, next.ID)
	}
}
