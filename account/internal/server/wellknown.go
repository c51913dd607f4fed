package server

import (
	"net/http"

	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events/auth"
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

// handleOpenIDConfiguration serves the discovery document (OpenID Connect Discovery 1.0, RFC
// 8414), with URLs under base, the configured public URL. They never come from the request (Host,
// X-Forwarded-Host or -Proto): anyone can send those, and a cache between would then hand every
// client a jwks_uri of the sender's choosing.
func handleOpenIDConfiguration(issuer, base string) http.Handler {
	type response struct {
		Issuer                           string   `json:"issuer"`
		JWKSURI                          string   `json:"jwks_uri"`
		TokenEndpoint                    string   `json:"token_endpoint"`
		IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
		TokenEndpointAuthMethods         []string `json:"token_endpoint_auth_methods_supported"`
		GrantTypesSupported              []string `json:"grant_types_supported"`
		ResponseTypesSupported           []string `json:"response_types_supported"`
		SubjectTypesSupported            []string `json:"subject_types_supported"`
		ClaimsSupported                  []string `json:"claims_supported"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", jwksMaxAge)
		web.Encode(w, http.StatusOK, response{
			Issuer:                           issuer,
			JWKSURI:                          base + "/.well-known/jwks.json",
			TokenEndpoint:                    base + "/v1/tokens",
			IDTokenSigningAlgValuesSupported: []string{auth.Algorithm},
			TokenEndpointAuthMethods:         []string{"none"},
			GrantTypesSupported:              []string{"password"},
			ResponseTypesSupported:           []string{"token"},
			SubjectTypesSupported:            []string{"public"},
			ClaimsSupported:                  []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "roles", "ver"},
		})
	})
}
