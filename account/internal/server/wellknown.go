package server

import (
	"net/http"

	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events/web"
)

// jwksMaxAge bounds how long a client caches the JWKS: short, so a rotation reaches verifiers
// outside the system well within a retired key's grace.
const jwksMaxAge = "public, max-age=60"

// handleJWKS serves the public keys in use: the same document as the key-value bucket holds.
func handleJWKS(keys *token.Keys) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", jwksMaxAge)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(keys.JWKS())
	})
}

// handleOpenIDConfiguration serves the discovery document, with URLs under base, the configured
// public URL. They never come from the request (Host, X-Forwarded-Host or -Proto): anyone can send
// those, and a cache between would then hand every client a jwks_uri of the sender's choosing.
//
// It states only what is true, in the members that OpenID Connect Discovery 1.0 and RFC 8414 name:
// who issues the tokens and where their keys are, which is all a verifier needs (docs/gateways.md
// shows verifiers configured from them). account is neither an OpenID provider nor an OAuth
// authorization server: it issues no ID tokens, and POST /v1/tokens takes JSON credentials, not an
// OAuth grant. So the document names no token or authorization endpoint, no grant, response or
// subject type, and no ID-token algorithm or claims.
func handleOpenIDConfiguration(issuer, base string) http.Handler {
	type response struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", jwksMaxAge)
		web.Encode(w, http.StatusOK, response{Issuer: issuer, JWKSURI: base + "/.well-known/jwks.json"})
	})
}
