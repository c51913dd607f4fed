// Command shop serves the shop's catalogue and orders, authorizing callers from its own replica of
// the users that account publishes.
//
// Usage:
//
//	shop [serve]
//	shop replica status [--json] | rebuild [--from-seq N | --since RFC3339] | verify | dead-letters [list | retry [--seq N]]
//
// Configuration comes from the environment: HTTP_ADDR, DATABASE_URL, NATS_URL, LOG_LEVEL and
// TOKEN_ISSUER (see docs/contract.md). The replica commands are the operator's (docs/operations.md);
// they exit 0 on success, 1 on failure or differences, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/service"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/server"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var code replicacmd.ExitCode
	if errors.As(err, &code) {
		os.Exit(int(code))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shop:", service.OneLine(err))
		os.Exit(1)
	}
}

// defaults are the shop's configuration when the environment sets none.
var defaults = service.Config{
	Name:        "shop",
	HTTPAddr:    "127.0.0.1:8083",
	DatabaseURL: "postgres://postgres@127.0.0.1:5432/shop?sslmode=disable",
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return replicacmd.Main(ctx, defaults, args, getenv, stdout, stderr, func(ctx context.Context) error {
		return serve(ctx, getenv, stderr)
	})
}

// serve runs the HTTP API beside the replica's consumer, the key watch and the pruning of
// idempotency keys until ctx is done.
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
	store := postgres.New(base.Pool, base.Metrics)
	mux := server.New(log, store, svc.Auth)
	prune := func(ctx context.Context) error {
		pruneIdempotencyKeys(ctx, store, log)
		return nil
	}
	return svc.Serve(ctx, mux, prune)
}

// Idempotency keys are kept for keyTTL (the contract promises at least 24 hours), and pruned every
// pruneEvery, a bounded batch at a time.
const (
	keyTTL     = 48 * time.Hour
	pruneEvery = time.Hour
	pruneBatch = 10_000
)

// pruneIdempotencyKeys deletes expired idempotency keys now and every pruneEvery until ctx is done.
// A failure is logged and retried at the next tick.
func pruneIdempotencyKeys(ctx context.Context, store *postgres.Store, log *slog.Logger) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		for {
			n, err := store.PruneIdempotencyKeys(ctx, keyTTL, pruneBatch)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("prune idempotency keys", "err", err)
				}
				break
			}
			if n > 0 {
				log.Info("pruned idempotency keys", "count", n)
			}
			if n < pruneBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
