// Package token signs account's access tokens and keeps its signing keys in use: the current
// private key, the public keys still published (JWKS), the KeySet that account's own endpoints
// verify with, and the copy of the JWKS in the key-value bucket that blog and shop watch.
package token

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// NewKey returns a fresh Ed25519 signing key whose ID is the RFC 7638 thumbprint of its public
// JWK.
func NewKey() (account.SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return account.SigningKey{}, fmt.Errorf("generate key: %w", err)
	}
	return account.SigningKey{ID: auth.NewJWK(pub).Kid, Private: priv}, nil
}

// Grace is how long a retired key stays published after its retirement: until every token it
// signed has expired, even for a verifier using the full clock leeway. An instance learns of a
// rotation up to RefreshInterval late and signs with the retired key meanwhile, hence that too.
func Grace(ttl time.Duration) time.Duration { return ttl + auth.Leeway + RefreshInterval }

// KeyStore is where the signing keys live (postgres.KeyStore).
type KeyStore interface {
	// SigningKeys returns the keys to publish, newest first: pending, current, and retired less
	// than grace ago.
	SigningKeys(ctx context.Context, grace time.Duration) ([]account.SigningKey, error)
	// PromoteSigningKey makes the pending key kid current, retiring the current one, and reports
	// whether it did; a key no longer pending is left alone.
	PromoteSigningKey(ctx context.Context, kid string) (bool, error)
}

// Keys holds the signing keys in use and publishes their public keys. Refresh loads them; Run
// keeps them current, so that a rotation made by another process (account keys rotate) or the
// end of a retired key's grace reaches this one. It is safe for concurrent use.
//
// A key signs only once the bucket publishes it: a new key is stored pending, published beside
// the current one, and promoted to current (the current one retired at that moment) only after a
// put of a JWKS holding it has succeeded. While publishing fails, the current key goes on
// signing, and as it is not retired it stays published.
type Keys struct {
	store KeyStore
	kv    jetstream.KeyValue
	set   *auth.KeySet
	grace time.Duration
	log   *slog.Logger

	mu      sync.RWMutex
	current account.SigningKey
	jwks    []byte
}

// NewKeys returns the keys of store, published to kv, with retired keys kept for Grace(ttl).
// Call Refresh before use.
func NewKeys(store KeyStore, kv jetstream.KeyValue, ttl time.Duration, log *slog.Logger) (*Keys, error) {
	set, err := auth.NewKeySet([]byte(`{"keys":[]}`))
	if err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	return &Keys{store: store, kv: kv, set: set, grace: Grace(ttl), log: log}, nil
}

// ErrNoKey is returned by Refresh when the store has no current key, and none could be promoted.
var ErrNoKey = errors.New("no current signing key")

// Refresh loads the keys from the store, updates the KeySet and the JWKS, and puts the JWKS in
// the key-value bucket unless it holds it already. Once the bucket holds it, the newest pending
// key is promoted and signs. The key that signs is the store's current key: the store makes a
// key current only after a JWKS holding it was published (by this instance or another), so it may
// sign even when this instance's put fails.
func (k *Keys) Refresh(ctx context.Context) error {
	keys, err := k.store.SigningKeys(ctx, k.grace)
	if err != nil {
		return err
	}
	var (
		current, pending account.SigningKey
		doc              = auth.JWKS{Keys: []auth.JWK{}}
	)
	for _, key := range keys { // newest first
		switch {
		case key.Pending():
			if pending.Private == nil {
				pending = key
			}
		case key.Current():
			if current.Private == nil {
				current = key
			}
		}
		doc.Keys = append(doc.Keys, auth.NewJWK(key.Public()))
	}
	jwks, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("marshal jwks: %w", err)
	}

	// account's own endpoints verify with the store's view at once: a revoked key is refused
	// here even while the bucket still holds it.
	k.mu.Lock()
	if !bytes.Equal(jwks, k.jwks) {
		if err := k.set.Replace(jwks); err != nil {
			k.mu.Unlock()
			return fmt.Errorf("replace key set: %w", err)
		}
		k.jwks = jwks
	}
	k.mu.Unlock()

	// blog and shop must know a key before it signs anything: publish first, then promote.
	err = k.publish(ctx, jwks)
	if err == nil && pending.Private != nil {
		current, err = k.promote(ctx, pending, current)
	}
	k.use(current, len(doc.Keys))
	if err != nil {
		return err
	}
	if current.Private == nil {
		return ErrNoKey
	}
	return nil
}

// promote makes pending, just published, current, and returns the key that signs now: pending,
// or, when another instance promoted a key first, the store's current key.
func (k *Keys) promote(ctx context.Context, pending, current account.SigningKey) (account.SigningKey, error) {
	promoted, err := k.store.PromoteSigningKey(ctx, pending.ID)
	if err != nil {
		return current, err
	}
	if promoted {
		if current.Private != nil {
			k.log.Info("signing key promoted", "kid", pending.ID, "retired_kid", current.ID)
		}
		return pending, nil
	}
	keys, err := k.store.SigningKeys(ctx, k.grace)
	if err != nil {
		return current, err
	}
	for _, key := range keys {
		if key.Current() {
			return key, nil
		}
	}
	return current, nil
}

// use makes key the one that signs. A zero key (all revoked, the new one not yet published)
// signs nothing.
func (k *Keys) use(key account.SigningKey, published int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key.ID != k.current.ID && key.Private != nil {
		k.log.Info("signing key in use", "kid", key.ID, "published_keys", published)
	}
	k.current = key
}

// publish puts jwks in the bucket unless the bucket holds it already. Comparing with the bucket,
// not with what this instance put last, heals a bucket that was recreated or that another instance
// with an older view overwrote.
func (k *Keys) publish(ctx context.Context, jwks []byte) error {
	e, err := k.kv.Get(ctx, events.KeysKey)
	if err == nil && bytes.Equal(e.Value(), jwks) {
		return nil
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("get %s: %w", events.KeysKey, err)
	}
	if _, err := k.kv.Put(ctx, events.KeysKey, jwks); err != nil {
		return fmt.Errorf("put %s: %w", events.KeysKey, err)
	}
	k.log.Info("published public keys", "bucket", events.KeysBucket, "key", events.KeysKey)
	return nil
}

// RefreshInterval is how often Run refreshes. It must stay well below auth.Leeway: an instance
// that has not yet seen a rotation keeps signing with the retired key for up to this long, and
// those tokens must expire before the retired key's grace ends.
const RefreshInterval = 10 * time.Second

// Run refreshes the keys every RefreshInterval until ctx is done, then returns nil. A failed
// refresh is logged and retried at the next tick; the keys in hand stay in use meanwhile.
func (k *Keys) Run(ctx context.Context) error {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, RefreshInterval)
		err := k.Refresh(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			k.log.Warn("refresh signing keys", "err", err)
		}
	}
}

// Set returns the KeySet of the published keys, which Refresh keeps current.
func (k *Keys) Set() *auth.KeySet { return k.set }

// JWKS returns the JWKS document of the published keys.
func (k *Keys) JWKS() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.jwks
}

// Current returns the key that signs.
func (k *Keys) Current() account.SigningKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Signer issues access tokens.
type Signer struct {
	Keys   *Keys
	Issuer string
	TTL    time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Sign returns an access token for u, signed with the current key: header alg EdDSA, typ at+jwt
// and kid; claims iss, sub, aud (auth.Audiences), iat, nbf, exp = iat + TTL, jti, roles and ver.
func (s *Signer) Sign(u events.User) (string, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	now = now.Truncate(time.Second)
	jti, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	claims := auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.Issuer,
			Subject:   u.ID.String(),
			Audience:  jwt.ClaimStrings(auth.Audiences),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.TTL)),
			ID:        jti.String(),
		},
		Roles: u.Roles,
		Ver:   u.Version,
	}
	key := s.Keys.Current()
	if key.Private == nil {
		return "", ErrNoKey
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["typ"] = auth.TokenType
	tok.Header["kid"] = key.ID
	signed, err := tok.SignedString(key.Private)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signed, nil
}
