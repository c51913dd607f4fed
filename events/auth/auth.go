// Package auth verifies access tokens with account's public keys alone, and authenticates HTTP
// requests with them.
//
// Tokens are JWS compact (EdDSA, Ed25519), header typ "at+jwt" and a kid naming a key of the
// KeySet. The Verifier accepts only EdDSA, a known kid, the configured issuer, its own audience, a
// present and unexpired exp, at most Leeway of clock skew, and refuses tokens whose header carries
// jku, x5u, x5c, jwk or crit: keys come only from the KeySet, never from a token.
//
// The middleware takes roles and status from the service's own view of the user (Users), never
// from the token: the token says who, the replica says what they may do.
package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/authmesh/events"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Token settings of the contract.
const (
	TokenType = "at+jwt"
	Algorithm = "EdDSA"
	Leeway    = 30 * time.Second
)

// Audiences are the audiences account puts in every access token.
var Audiences = []string{"blog", "shop"}

// JWK is a public Ed25519 key as a JSON Web Key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"` // "OKP"
	Crv string `json:"crv"` // "Ed25519"
	X   string `json:"x"`   // the public key, base64url without padding
	Kid string `json:"kid"` // the RFC 7638 thumbprint
	Use string `json:"use"` // "sig"
	Alg string `json:"alg"` // "EdDSA"
}

// JWKS is a JSON Web Key Set: the document served at /.well-known/jwks.json and stored in the
// key-value bucket.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// NewJWK returns the JWK of pub, its kid being its RFC 7638 thumbprint.
func NewJWK(pub ed25519.PublicKey) JWK {
	panic("TODO")
}

// KeySet is the set of public keys a Verifier accepts, safe for concurrent use and replaceable
// while in use (key rotation).
type KeySet struct{}

// NewKeySet returns a key set holding the keys of a JWKS document; an empty document gives an
// empty set, which accepts no token.
func NewKeySet(jwks []byte) (*KeySet, error) {
	panic("TODO")
}

// Replace swaps in the keys of a JWKS document. A document that cannot be parsed leaves the set as
// it was and returns an error.
func (k *KeySet) Replace(jwks []byte) error {
	panic("TODO")
}

// Key returns the key with the given kid.
func (k *KeySet) Key(kid string) (ed25519.PublicKey, bool) {
	panic("TODO")
}

// Watch loads the JWKS from key events.KeysKey of kv into k and keeps it current until ctx is
// done, then returns nil. It rides out outages of NATS (the watch resumes). An update that cannot
// be parsed is logged and ignored.
func (k *KeySet) Watch(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) error {
	panic("TODO")
}

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims
	// Roles are informational only: authorization reads the replica.
	Roles []string `json:"roles,omitempty"`
	// Ver is the user's version at issuance.
	Ver int64 `json:"ver"`
}

// Verifier checks access tokens.
type Verifier struct {
	Keys   *KeySet
	Issuer string
	// Audience is the audience the token must name; empty skips the check (account itself, which
	// is the issuer, not an audience).
	Audience string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// ErrInvalidToken is wrapped by every error of Verify.
var ErrInvalidToken = errors.New("invalid token")

// Verify parses and checks token and returns its claims; any failure wraps ErrInvalidToken.
func (v *Verifier) Verify(token string) (*Claims, error) {
	panic("TODO")
}

// ErrUnknownUser is returned by a Users whose source of truth lacks the user (account's own
// database): the request is unauthenticated. A replica never returns it; it waits, then answers
// replica.ErrLagging.
var ErrUnknownUser = errors.New("unknown user")

// Users gives the current state of a user, at least at version minVersion.
type Users interface {
	User(ctx context.Context, id uuid.UUID, minVersion int64) (events.User, error)
}

// Authenticator is the HTTP middleware of token authentication.
type Authenticator struct {
	verifier *Verifier
	users    Users
	log      *slog.Logger
}

// New returns an authenticator.
func New(v *Verifier, users Users, log *slog.Logger) *Authenticator {
	return &Authenticator{verifier: v, users: users, log: log}
}

// Require lets through only requests with a valid bearer token in the Authorization header, of an
// active user, and puts the user in the request context (see UserFrom). It answers 401
// unauthenticated with WWW-Authenticate: Bearer (and error="invalid_token" when a token was sent),
// 403 user_disabled, or 503 replica_lagging with Retry-After when the replica lags or is stale
// for the user.
func (a *Authenticator) Require(h http.Handler) http.Handler {
	panic("TODO")
}

type ctxKey struct{}

// UserFrom returns the authenticated user that Require put in ctx.
func UserFrom(ctx context.Context) (events.User, bool) {
	u, ok := ctx.Value(ctxKey{}).(events.User)
	return u, ok
}

// WithUser returns ctx carrying u, as Require does; for tests of handlers.
func WithUser(ctx context.Context, u events.User) context.Context {
	return context.WithValue(ctx, ctxKey{}, u)
}

// Len returns the number of keys in the set.
func (k *KeySet) Len() int {
	panic("TODO")
}
