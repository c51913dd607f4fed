//go:build bench

package main

import (
	"log/slog"
	"net/http"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/benchauth"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/server"
)

// mountBench serves the shop's API twice more, for the baselines of the benchmarks
// (docs/performance.md; see benchauth.Mount). Production binaries are built without the tag bench
// and get nobench.go's mountBench instead.
func mountBench(mux *http.ServeMux, log *slog.Logger, store *postgres.Store, users auth.Users) {
	benchauth.Mount(mux, log, users, func(a benchauth.Authenticator) http.Handler { return server.New(log, store, a) })
}
