//go:build bench

package main

import (
	"cmp"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/blog/internal/server"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/benchauth"
)

// mountBench serves the blog's API twice more, for the baselines of the benchmarks
// (docs/performance.md): under /bench/noauth/ with authentication skipped (every request as one
// fixed user of the replica, chosen by PUT /bench/user/{id}), and under /bench/sync/ authorized by
// a call to account per request, the synchronous design. account is at BENCH_ACCOUNT_URL (read
// here, as only bench binaries know it; default account's address of the contract). It also
// serves a CPU profile of the process at /bench/debug/pprof/profile, which the benchmarks read to
// say what bounds a figure. Production binaries are built without the tag bench and get
// nobench.go's mountBench instead.
func mountBench(mux *http.ServeMux, log *slog.Logger, store *postgres.Store, users auth.Users) {
	fixed := benchauth.NewFixed(users)
	mux.Handle("PUT /bench/user/{id}", fixed.Set())
	mux.Handle("/bench/noauth/", http.StripPrefix("/bench/noauth", server.New(log, store, fixed)))
	accountURL := cmp.Or(os.Getenv("BENCH_ACCOUNT_URL"), "http://127.0.0.1:8081")
	mux.Handle("/bench/sync/", http.StripPrefix("/bench/sync", server.New(log, store, benchauth.NewRemote(accountURL, log))))
	mux.HandleFunc("GET /bench/debug/pprof/profile", pprof.Profile)
	log.Warn("bench build: the benchmarks' routes under /bench/ let anyone in as the fixed user", "account_url", accountURL)
}
