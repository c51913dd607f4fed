package server

import (
	"net/http"

	"github.com/authmesh/events/web"
	"github.com/prometheus/client_golang/prometheus"
)

// addRoutes is the whole API. authn.Require lets through requests with a valid token of an active
// user; requireAdmin, inside it, only admins.
func addRoutes(mux *http.ServeMux, cfg Config, authn Authenticator, logins *prometheus.CounterVec) {
	log, store := cfg.Log, cfg.Store

	mux.Handle("POST /v1/users", handleRegister(log, store, cfg.Hasher))
	mux.Handle("POST /v1/tokens", handleLogin(log, store, cfg.Hasher, cfg.Signer, cfg.TrustedProxies, logins))

	mux.Handle("GET /v1/users/me", authn.Require(handleMe(log, store)))
	mux.Handle("GET /v1/users/{id}", authn.Require(handleGetUser(log, store)))
	mux.Handle("GET /v1/users", authn.Require(requireAdmin(log, handleListUsers(log, store))))
	mux.Handle("PUT /v1/users/{id}/roles", authn.Require(requireAdmin(log, handleSetRoles(log, store))))
	mux.Handle("PUT /v1/users/{id}/status", authn.Require(requireAdmin(log, handleSetStatus(log, store))))

	mux.Handle("GET /.well-known/jwks.json", handleJWKS(cfg.Keys))
	mux.Handle("GET /.well-known/openid-configuration", handleOpenIDConfiguration(cfg.Signer.Issuer, cfg.PublicURL))
	mux.Handle("GET /openapi.json", web.Document(openAPIDocument))
}
