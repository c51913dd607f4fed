package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

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

// Header parameters that would let a token choose or carry its own key, or demand extensions we
// do not implement. Keys come from the KeySet only.
var forbiddenHeaders = []string{"jku", "x5u", "x5c", "jwk", "crit"}

// Verify parses and checks token and returns its claims; any failure wraps ErrInvalidToken.
//
// Beyond signature, issuer, audience and times (exp required, 30 s leeway, nbf and iat not in
// the future), it requires the typ at+jwt, a kid of the KeySet, no key-bearing header, exp, nbf
// and iat as JSON numbers, sub a UUID and ver at least 1.
func (v *Verifier) Verify(token string) (*Claims, error) {
	c, err := v.verify(token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return c, nil
}

func (v *Verifier) verify(token string) (*Claims, error) {
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("token longer than %d bytes", MaxTokenLen)
	}
	if v.Keys == nil || v.Issuer == "" {
		// An empty issuer would make the parser skip the iss check: fail closed instead.
		return nil, errors.New("verifier has no keys or no issuer")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{Algorithm}),
		jwt.WithIssuer(v.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(),
	}
	if v.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.Audience))
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	var c Claims
	if _, err := jwt.NewParser(opts...).ParseWithClaims(token, &c, v.key); err != nil {
		return nil, err
	}
	if err := numericDates(token); err != nil {
		return nil, err
	}
	if !isUUID(c.Subject) {
		return nil, errors.New("sub is not a user id")
	}
	if c.Ver < 1 {
		return nil, errors.New("ver missing or below 1")
	}
	return &c, nil
}

// key is the parser's key function: it returns the key of the token's kid, after checking the
// header. Error messages never quote the header's values, which the sender chose.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodEd25519); !ok {
		return nil, errors.New("alg is not EdDSA")
	}
	typ, _ := t.Header["typ"].(string)
	if !strings.EqualFold(typ, TokenType) && !strings.EqualFold(typ, "application/"+TokenType) {
		return nil, errors.New("typ is not " + TokenType)
	}
	for _, h := range forbiddenHeaders {
		if _, ok := t.Header[h]; ok {
			return nil, fmt.Errorf("header %s not allowed", h)
		}
	}
	kid, ok := t.Header["kid"].(string)
	if !ok {
		return nil, errors.New("kid missing")
	}
	pub, ok := v.Keys.Key(kid)
	if !ok {
		return nil, errors.New("unknown kid")
	}
	return pub, nil
}

// numericDates checks that exp, nbf and iat, when present, are JSON numbers (RFC 7519
// NumericDate): the parser also takes a number in a string ("exp":"1700000000"), which no issuer
// of ours sends. token has been parsed already, so its payload is well-formed.
func numericDates(token string) error {
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	var dates struct {
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if err := json.Unmarshal(payload, &dates); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	for _, d := range []struct {
		name string
		raw  json.RawMessage
	}{{"exp", dates.Exp}, {"nbf", dates.Nbf}, {"iat", dates.Iat}} {
		if len(d.raw) > 0 && (d.raw[0] == '"' || string(d.raw) == "null") {
			return fmt.Errorf("%s is not a number", d.name)
		}
	}
	return nil
}

// isUUID reports whether s is a UUID in its canonical 36-character form, and not the nil UUID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	id, err := uuid.Parse(s)
	return err == nil && id != uuid.Nil
}
