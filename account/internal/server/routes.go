package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// addRoutes is the whole API. requireUser lets through requests with a valid token of an active
// user; requireAdmin, inside it, only admins.
func addRoutes(mux *http.ServeMux, cfg Config, requireUser func(http.Handler) http.Handler, logins *prometheus.CounterVec) {
	log, store := cfg.Log, cfg.Store

	mux.Handle("POST /v1/users", handleRegister(log, store, cfg.Hasher))
	mux.Handle("POST /v1/tokens", handleLogin(log, store, cfg.Hasher, cfg.Signer, cfg.TrustedProxies, logins))

	mux.Handle("GET /v1/users/me", requireUser(handleMe(log, store)))
	mux.Handle("GET /v1/users/{id}", requireUser(handleGetUser(log, store)))
	mux.Handle("GET /v1/users", requireUser(requireAdmin(handleListUsers(log, store))))
	mux.Handle("PUT /v1/users/{id}/roles", requireUser(requireAdmin(handleSetRoles(log, store))))
	mux.Handle("PUT /v1/users/{id}/status", requireUser(requireAdmin(handleSetStatus(log, store))))

	mux.Handle("GET /.well-known/jwks.json", handleJWKS(cfg.Keys))
	mux.Handle("GET /.well-known/openid-configuration", handleOpenIDConfiguration(cfg.Signer.Issuer, cfg.PublicURL))
}
