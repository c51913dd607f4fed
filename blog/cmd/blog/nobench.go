//go:build !bench

package main

import (
	"log/slog"
	"net/http"

	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events/auth"
)

// mountBench adds nothing: the benchmarks' baselines (bench.go) are only in binaries built with
// -tags bench.
func mountBench(*http.ServeMux, *slog.Logger, *postgres.Store, auth.Users) {}
