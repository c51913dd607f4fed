// Package authtest signs access tokens for tests of services that verify them, the way account
// signs them, with a key made for the test. Production code never imports it.
package authtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/bus"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Issuer holds a signing key and signs tokens as account does.
type Issuer struct {
	Key    ed25519.PrivateKey
	JWK    auth.JWK
	Issuer string        // the iss claim; "account"
	TTL    time.Duration // exp - iat; 15 minutes
}

// NewIssuer returns an issuer with a fresh Ed25519 key.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return &Issuer{Key: priv, JWK: auth.NewJWK(pub), Issuer: "account", TTL: 15 * time.Minute}
}

// JWKS returns the JWKS document of the issuer's public key.
func (i *Issuer) JWKS(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(auth.JWKS{Keys: []auth.JWK{i.JWK}})
	if err != nil {
		t.Fatalf("marshal jwks: %v", err)
	}
	return b
}

// Claims returns the claims account would put in a token for u issued now.
func (i *Issuer) Claims(u events.User) *auth.Claims {
	now := time.Now()
	return &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.Issuer,
			Subject:   u.ID.String(),
			Audience:  jwt.ClaimStrings(auth.Audiences),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(i.TTL)),
			ID:        uuid.NewString(),
		},
		Roles: u.Roles,
		Ver:   u.Version,
	}
}

// Sign signs any claims with the issuer's key and the standard header (alg EdDSA, typ at+jwt,
// kid), so a test can also sign claims that a verifier must refuse.
func (i *Issuer) Sign(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["typ"] = auth.TokenType
	tok.Header["kid"] = i.JWK.Kid
	s, err := tok.SignedString(i.Key)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

// Token returns a valid access token for u.
func (i *Issuer) Token(t testing.TB, u events.User) string {
	t.Helper()
	return i.Sign(t, i.Claims(u))
}

// PublishKeys puts the issuer's JWKS in the key bucket of js, creating the bucket if absent, as
// account does at start.
func (i *Issuer) PublishKeys(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := bus.EnsureKeyBucket(ctx, js)
	if err != nil {
		t.Fatalf("key bucket: %v", err)
	}
	if _, err := kv.Put(ctx, events.KeysKey, i.JWKS(t)); err != nil {
		t.Fatalf("put jwks: %v", err)
	}
}

// NewUser returns a user at version 1 with the given roles (RoleUser is always added).
func NewUser(roles ...string) events.User {
	id := uuid.New()
	return events.User{
		ID:          id,
		Email:       id.String()[:8] + "@example.com",
		DisplayName: "User " + id.String()[:8],
		Roles:       events.NormalizeRoles(roles),
		Status:      events.StatusActive,
		Version:     1,
	}
}

// PublishUser publishes an event of type typ carrying u on the USERS stream of js, creating the
// stream if absent, as account's outbox relay does, and returns the event.
func PublishUser(t testing.TB, js jetstream.JetStream, typ events.Type, u events.User) events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		t.Fatalf("stream: %v", err)
	}
	e, err := events.NewEvent(typ, u, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, e.Subject(), data, jetstream.WithMsgID(e.ID.String())); err != nil {
		t.Fatalf("publish %s: %v", e.Subject(), err)
	}
	return e
}
