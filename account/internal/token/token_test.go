package token

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeStore is a KeyStore whose keys a test sets.
type fakeStore struct {
	mu   sync.Mutex
	keys []account.SigningKey
}

func (f *fakeStore) SigningKeys(context.Context, time.Duration) ([]account.SigningKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]account.SigningKey(nil), f.keys...), nil
}

func (f *fakeStore) PromoteSigningKey(_ context.Context, kid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for i, k := range f.keys {
		if k.ID == kid && k.Pending() {
			for j := range f.keys {
				if f.keys[j].Current() {
					f.keys[j].RetiredAt = now
				}
			}
			f.keys[i].ActivatedAt = now
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeStore) set(keys ...account.SigningKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = keys
}

func keyBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := bus.EnsureKeyBucket(t.Context(), natstest.New(t).JetStream(t, natstest.Account))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// mustKey returns a new current key.
func mustKey(t *testing.T) account.SigningKey {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k.ActivatedAt = time.Now()
	return k
}

func bucketKids(t *testing.T, kv jetstream.KeyValue) ([]string, uint64) {
	t.Helper()
	e, err := kv.Get(t.Context(), events.KeysKey)
	if err != nil {
		t.Fatalf("get jwks: %v", err)
	}
	var doc auth.JWKS
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range doc.Keys {
		kids = append(kids, k.Kid)
	}
	return kids, e.Revision()
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestKeysRefreshAndSign(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	kv := keyBucket(t)
	keys, err := NewKeys(store, kv, 15*time.Minute, discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Refresh(t.Context()); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Refresh with no key: %v, want ErrNoKey", err)
	}

	first := mustKey(t)
	store.set(first)
	if err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	kids, rev := bucketKids(t, kv)
	if diff := cmp.Diff([]string{first.ID}, kids); diff != "" {
		t.Errorf("bucket kids (-want +got):\n%s", diff)
	}
	// Nothing changed: the bucket is not written again.
	if err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, rev2 := bucketKids(t, kv); rev2 != rev {
		t.Errorf("an unchanged refresh wrote the bucket (revision %d, then %d)", rev, rev2)
	}

	signer := &Signer{Keys: keys, Issuer: "account", TTL: 15 * time.Minute}
	u := authtest.NewUser(events.RoleModerator)
	u.Version = 7
	tok, err := signer.Sign(u)
	if err != nil {
		t.Fatal(err)
	}
	c, err := (&auth.Verifier{Keys: keys.Set(), Issuer: "account", Audience: "shop"}).Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.Subject != u.ID.String() || c.Ver != 7 || !cmp.Equal(c.Roles, u.Roles) || c.ID == "" ||
		c.ExpiresAt.Sub(c.IssuedAt.Time) != 15*time.Minute || !c.NotBefore.Equal(c.IssuedAt.Time) {
		t.Errorf("claims = %+v", c)
	}

	// Rotation: the new key signs, the retired one stays in the set and the bucket.
	second := mustKey(t)
	retired := first
	retired.RetiredAt = time.Now()
	store.set(second, retired)
	if err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if keys.Current().ID != second.ID {
		t.Errorf("current key = %s, want the new %s", keys.Current().ID, second.ID)
	}
	kids, _ = bucketKids(t, kv)
	if diff := cmp.Diff([]string{second.ID, first.ID}, kids); diff != "" {
		t.Errorf("bucket kids after rotation (-want +got):\n%s", diff)
	}
	if _, err := (&auth.Verifier{Keys: keys.Set(), Issuer: "account"}).Verify(tok); err != nil {
		t.Errorf("a token of the retired key is refused during its grace: %v", err)
	}
	tok2, err := signer.Sign(u)
	if err != nil {
		t.Fatal(err)
	}
	if kid := tokenKid(t, tok2); kid != second.ID {
		t.Errorf("new token kid = %s, want %s", kid, second.ID)
	}

	// Past the grace, the store no longer returns the retired key: its tokens are refused.
	store.set(second)
	if err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := (&auth.Verifier{Keys: keys.Set(), Issuer: "account"}).Verify(tok); err == nil {
		t.Error("a token of a key past its grace is accepted")
	}

	// A bucket overwritten by someone else is healed at the next refresh.
	if _, err := kv.Put(t.Context(), events.KeysKey, []byte(`{"keys":[]}`)); err != nil {
		t.Fatal(err)
	}
	if err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if kids, _ := bucketKids(t, kv); !cmp.Equal([]string{second.ID}, kids) {
		t.Errorf("bucket kids after healing = %v, want [%s]", kids, second.ID)
	}
}

func tokenKid(t *testing.T, tok string) string {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &auth.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	return kid
}

func TestGrace(t *testing.T) {
	t.Parallel()
	if g := Grace(15 * time.Minute); g < 15*time.Minute+auth.Leeway {
		t.Errorf("Grace(15m) = %v, want at least TTL + leeway", g)
	}
	if RefreshInterval >= auth.Leeway {
		t.Errorf("RefreshInterval %v must stay below the leeway %v", RefreshInterval, auth.Leeway)
	}
}
