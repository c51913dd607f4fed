// Package auth verifies access tokens with account's public keys alone, and authenticates HTTP
// requests with them.
//
// Tokens are JWS compact (EdDSA, Ed25519), header typ "at+jwt" and a kid naming a key of the
// KeySet. The Verifier accepts only EdDSA, a known kid, the configured issuer, its own audience, a
// present and unexpired exp, at most Leeway of clock skew, and refuses tokens whose header carries
// jku, x5u, x5c, jwk or crit: keys come only from the KeySet, never from a token.
//
// The middleware takes roles and status from the service's own view of the user (Users), never
// from the token: the token says who, the replica says what they may do. It declares the errors of
// Users it understands (ErrUnknownUser, ErrNotCurrent); a Users wraps them.
//
// The middleware remembers the tokens that verified (cache.go), keyed by the whole token, until
// their exp or the next change of the key set, so a client's next request skips the signature
// check; it still asks Users about the user on every request.
//
// The files: jwk.go is the key format, keyset.go the set a Verifier reads, watch.go the KeyWatch
// that keeps a set equal to what account publishes, verify.go the token checks, cache.go the
// verified tokens, middleware.go the HTTP side.
package auth

import (
	"log/slog"
	"time"
)

// Token settings of the contract.
const (
	TokenType = "at+jwt"
	Algorithm = "EdDSA"
	Leeway    = 30 * time.Second
)

// MaxTokenLen is the length above which a token is refused before it is parsed: account's tokens
// are well under 1 KiB, and parsing is the attacker's cheapest way to make us work.
const MaxTokenLen = 8 << 10

// Audiences are the audiences account puts in every access token.
var Audiences = []string{"blog", "shop"}

// orDiscard returns log, or a logger that discards everything when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
