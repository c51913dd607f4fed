package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

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
	x := base64.RawURLEncoding.EncodeToString(pub)
	return JWK{Kty: "OKP", Crv: "Ed25519", X: x, Kid: thumbprint(x), Use: "sig", Alg: Algorithm}
}

// thumbprint is the RFC 7638 thumbprint of the OKP Ed25519 key whose x is x: the SHA-256 of the
// required members in lexicographic order, without whitespace.
func thumbprint(x string) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// parseJWKS returns the usable signing keys of a JWKS document by kid (see KeySet.Replace), or an
// error when the document itself cannot be parsed.
func parseJWKS(jwks []byte) (map[string]ed25519.PublicKey, error) {
	// Each key is decoded on its own, so one key of an unexpected shape does not hide the others.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New("parse jwks: no keys member")
	}
	keys := make(map[string]ed25519.PublicKey, len(doc.Keys))
	for _, raw := range doc.Keys {
		var j JWK
		if err := json.Unmarshal(raw, &j); err != nil {
			continue
		}
		pub, ok := j.publicKey()
		if !ok {
			continue
		}
		if _, dup := keys[j.Kid]; !dup {
			keys[j.Kid] = pub
		}
	}
	return keys, nil
}

// publicKey returns the Ed25519 key of j, if j is a usable signing key.
func (j JWK) publicKey() (ed25519.PublicKey, bool) {
	if j.Kty != "OKP" || j.Crv != "Ed25519" || j.Kid == "" {
		return nil, false
	}
	if (j.Use != "" && j.Use != "sig") || (j.Alg != "" && j.Alg != Algorithm) {
		return nil, false
	}
	x, err := base64.RawURLEncoding.Strict().DecodeString(j.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(x), true
}
