package benchauth

import (
	"cmp"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/authmesh/events/auth"
)

// Mount serves a service's API twice more on mux, for the baselines of the benchmarks: api builds
// the service's handler over an authenticator (as its server.New does). Under /bench/noauth/ it is
// served with authentication skipped (every request as one fixed user of users, chosen by PUT
// /bench/user/{id}), and under /bench/sync/ authorized by a call to account per request, the
// synchronous design; account is at BENCH_ACCOUNT_URL (default account's address of the
// contract). It also serves a CPU profile of the process at /bench/debug/pprof/profile, which the
// benchmarks read to say what bounds a figure.
func Mount(mux *http.ServeMux, log *slog.Logger, users auth.Users, api func(Authenticator) http.Handler) {
	fixed := NewFixed(users)
	mux.Handle("PUT /bench/user/{id}", fixed.Set())
	mux.Handle("/bench/noauth/", http.StripPrefix("/bench/noauth", api(fixed)))
	accountURL := cmp.Or(os.Getenv("BENCH_ACCOUNT_URL"), "http://127.0.0.1:8081")
	mux.Handle("/bench/sync/", http.StripPrefix("/bench/sync", api(NewRemote(accountURL, log))))
	mux.HandleFunc("GET /bench/debug/pprof/profile", pprof.Profile)
	log.Warn("bench build: the benchmarks' routes under /bench/ let anyone in as the fixed user", "account_url", accountURL)
}

// Authenticator is what Fixed and Remote are, and what the services' servers take.
type Authenticator interface {
	Require(h http.Handler) http.Handler
}
