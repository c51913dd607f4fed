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

// KeyStore is where the signing keys live (postgres.Store).
type KeyStore interface {
	// SigningKeys returns the keys to publish, newest first; the first one not retired signs.
	SigningKeys(ctx context.Context, grace time.Duration) ([]account.SigningKey, error)
}

// Keys holds the signing keys in use and publishes their public keys. Refresh loads them; Run
// keeps them current, so that a rotation made by another process (account keys rotate) or the
// end of a retired key's grace reaches this one. It is safe for concurrent use.
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

// ErrNoKey is returned by Refresh when the store has no current key.
var ErrNoKey = errors.New("no current signing key")

// Refresh loads the keys from the store, updates the KeySet and the JWKS, and puts the JWKS in
// the key-value bucket unless it holds it already.
func (k *Keys) Refresh(ctx context.Context) error {
	keys, err := k.store.SigningKeys(ctx, k.grace)
	if err != nil {
		return err
	}
	var (
		current account.SigningKey
		doc     = auth.JWKS{Keys: []auth.JWK{}}
	)
	for _, key := range keys {
		if current.Private == nil && !key.Retired() {
			current = key
		}
		doc.Keys = append(doc.Keys, auth.NewJWK(key.Public()))
	}
	if current.Private == nil {
		return ErrNoKey
	}
	jwks, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("marshal jwks: %w", err)
	}

	k.mu.Lock()
	if !bytes.Equal(jwks, k.jwks) {
		if err := k.set.Replace(jwks); err != nil {
			k.mu.Unlock()
			return fmt.Errorf("replace key set: %w", err)
		}
		k.jwks = jwks
	}
	k.mu.Unlock()

	// blog and shop must know a key before it signs anything: publish first, then switch.
	if err := k.publish(ctx, jwks); err != nil {
		return err
	}
	k.mu.Lock()
	if current.ID != k.current.ID {
		k.log.Info("signing key in use", "kid", current.ID, "published_keys", len(doc.Keys))
	}
	k.current = current
	k.mu.Unlock()
	return nil
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
