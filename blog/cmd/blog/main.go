// Command blog serves the blog's posts. It authenticates requests with account's public keys and
// authorizes them from its own replica of the users, fed by the USERS stream.
//
// Usage:
//
//	blog [serve]
//	blog replica status [--json] | rebuild [--from-seq N | --since RFC3339] | verify | dead-letters [list | retry [--seq N]]
//
// Configuration comes from the environment: HTTP_ADDR, DATABASE_URL, NATS_URL, LOG_LEVEL and
// TOKEN_ISSUER. The replica commands are the operator's (docs/operations.md); they exit 0 on
// success, 1 on failure or differences, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/blog/internal/server"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/service"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var code replicacmd.ExitCode
	if errors.As(err, &code) {
		os.Exit(int(code))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "blog:", service.OneLine(err))
		os.Exit(1)
	}
}

// defaults are the blog's configuration when the environment sets none.
var defaults = service.Config{
	Name:        "blog",
	HTTPAddr:    "127.0.0.1:8082",
	DatabaseURL: "postgres://postgres@127.0.0.1:5432/blog?sslmode=disable",
}

// run runs the command of args until ctx is done or SIGINT/SIGTERM arrives, and returns nil after
// a clean stop.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	return replicacmd.Main(ctx, defaults, args, getenv, stdout, stderr, func(ctx context.Context) error {
		return serve(ctx, getenv, stderr)
	})
}

// serve runs the HTTP API beside the replica's consumer and the key watch until ctx is done.
func serve(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := service.LoadConfig(getenv, defaults)
	if err != nil {
		return err
	}
	log := service.NewLogger(stderr, cfg.LogLevel)
	base, err := service.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer base.Close()
	if err := postgres.Migrate(ctx, base.Pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	svc, err := service.OpenReplicated(ctx, cfg, getenv, base)
	if err != nil {
		return err
	}
	mux := server.New(log, postgres.New(base.Pool), svc.Auth)
	return svc.Serve(ctx, mux)
}
