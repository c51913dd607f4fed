// Command shop serves the shop's catalogue and orders. It authenticates requests with account's
// public keys and authorizes them from its own replica of the users, fed by the USERS stream.
//
// Usage:
//
//	shop [serve]
//	shop version
//	shop replica status [--json] | rebuild [--from-seq N | --since RFC3339] | verify | dead-letters [list | retry [--seq N]]
//
// Configuration is read from the environment (see loadConfig and docs/contract.md). The replica
// commands are the operator's (docs/operations.md); they exit 0 on success, 1 on failure or
// differences, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/service"
	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/server"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var code replicacmd.ExitCode
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.As(err, &code):
		os.Exit(int(code))
	case err != nil:
		fmt.Fprintln(os.Stderr, "shop:", service.OneLine(err))
		os.Exit(1)
	}
}

// errUsage is returned by run for a command line it does not understand, after printing usage.
var errUsage = errors.New("usage")

const usage = "usage: shop [serve] | shop version | shop replica <command> (shop replica help)"

// run is the program: it reads the command from args and the configuration through getenv,
// logs to stderr, prints a command's output to stdout, and returns when the command is done or,
// for serve, when ctx is done or SIGINT/SIGTERM arrives (nil after a clean shutdown). A replica
// command that fails returns its replicacmd.ExitCode.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch {
	case len(args) == 0 || (len(args) == 1 && args[0] == "serve"):
		cfg, err := loadConfig(getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, service.NewLogger(stderr, cfg.LogLevel))
	case args[0] == "replica":
		load := func() (service.Config, error) {
			cfg, err := loadConfig(getenv)
			return cfg.Config, err
		}
		if code := replicacmd.Run(ctx, "shop", load, args[1:], stdout, stderr); code != replicacmd.ExitOK {
			return replicacmd.ExitCode(code)
		}
		return nil
	case len(args) == 1 && args[0] == "version":
		return service.WriteVersion(stdout, "shop")
	case len(args) == 1 && isHelp(args[0]):
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "shop: unknown command %q\n%s\n", strings.Join(args, " "), usage)
	return errUsage
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// config is the shop's configuration.
type config struct {
	service.Config
	TokenIssuer string // TOKEN_ISSUER: the iss a token must carry
}

// loadConfig reads the configuration through getenv: HTTP_ADDR, DATABASE_URL, NATS_URL,
// NATS_CREDS and LOG_LEVEL (service.LoadConfig), and TOKEN_ISSUER.
func loadConfig(getenv func(string) string) (config, error) {
	base, err := service.LoadConfig(getenv, service.Config{
		Name:        "shop",
		HTTPAddr:    "127.0.0.1:8083",
		DatabaseURL: "postgres://postgres@127.0.0.1:5432/shop?sslmode=disable",
	})
	if err != nil {
		return config{}, err
	}
	cfg := config{Config: base, TokenIssuer: service.DefaultIssuer}
	if v := strings.TrimSpace(getenv("TOKEN_ISSUER")); v != "" {
		cfg.TokenIssuer = v
	}
	return cfg, nil
}

// logAttrs is the configuration as logged at start: no credentials in URLs.
func (c config) logAttrs() []any {
	return []any{
		"addr", c.HTTPAddr,
		"database", pg.Redact(c.DatabaseURL),
		"nats", bus.Redact(c.NATSURL),
		"log_level", c.LogLevel,
		"token_issuer", c.TokenIssuer,
	}
}

// serve runs the HTTP API beside the replica's consumer, the key watch and the pruning of
// idempotency keys until ctx is done.
func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	log.Info("starting", cfg.logAttrs()...)
	base, err := service.Open(ctx, cfg.Config, log)
	if err != nil {
		return err
	}
	defer base.Close()
	if err := postgres.Migrate(ctx, base.Pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := replica.Migrate(ctx, base.Pool); err != nil {
		return fmt.Errorf("migrate replica: %w", err)
	}

	// Nothing here is declared on NATS: the replica's consumer waits for the stream, and the key
	// watch for the bucket, that account creates.
	rep, err := replica.New(replica.Config{Pool: base.Pool, JS: base.JS, Durable: cfg.Name, Log: log, Metrics: base.Metrics})
	if err != nil {
		return err
	}
	keys := &auth.KeySet{}
	watch := auth.NewKeyWatch(keys, base.JS, log)
	authn := auth.New(&auth.Verifier{Keys: keys, Issuer: cfg.TokenIssuer, Audience: cfg.Name}, rep, log, auth.WithMetrics(base.Metrics))

	store := postgres.New(base.Pool, base.Metrics)
	mux := server.New(log, store, authn)
	mountBench(mux, log, store, rep) // only in binaries built with -tags bench (bench.go)
	checks := map[string]web.Check{"stream": rep.Ready, "keys": keys.Ready}
	// The workers beside the HTTP server, stopped once it has finished its requests: the replica's
	// consumer (with its listener, which wakes the lookups waiting for an apply), the key watch and
	// the pruning of expired idempotency keys.
	return base.Serve(ctx, mux, checks, rep.Run, watch.Run, pruneIdempotencyKeys(store, log))
}

// Idempotency keys are kept for keyTTL (the contract promises at least 24 hours), and pruned every
// pruneEvery, a bounded batch at a time.
const (
	keyTTL     = 48 * time.Hour
	pruneEvery = time.Hour
	pruneBatch = 10_000
)

// pruneIdempotencyKeys deletes expired idempotency keys now and every pruneEvery until ctx is
// done. Every instance prunes; deleting twice is harmless.
func pruneIdempotencyKeys(store *postgres.Store, log *slog.Logger) service.Worker {
	return func(ctx context.Context) error {
		t := time.NewTicker(pruneEvery)
		defer t.Stop()
		for {
			pruneExpired(ctx, store, log)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}

// pruneExpired deletes the expired idempotency keys, a batch at a time, until a batch is not
// full. A failure is logged; the next tick tries again.
func pruneExpired(ctx context.Context, store *postgres.Store, log *slog.Logger) {
	for {
		n, err := store.PruneIdempotencyKeys(ctx, keyTTL, pruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("prune idempotency keys", "err", err)
			}
			return
		}
		if n > 0 {
			log.Info("pruned idempotency keys", "count", n)
		}
		if n < pruneBatch {
			return
		}
	}
}
