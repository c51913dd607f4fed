// Command billing is the example of docs/new-service.md: a fourth service that verifies account's
// access tokens and keeps its own replica of the users, wired from the parts of events and nothing
// else. Its one endpoint, GET /v1/whoami, answers who the caller is and their roles, as its replica
// has them. The test beside it runs it, and holds the lines the page quotes to this file.
//
// Usage:
//
//	billing [serve]
//	billing version
//	billing replica status [--json] | rebuild [...] | verify | dead-letters [list | retry [--seq N]]
//
// Configuration is read from the environment (see loadConfig).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/service"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
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
		fmt.Fprintln(os.Stderr, "billing:", service.OneLine(err))
		os.Exit(1)
	}
}

// errUsage is returned by run for a command line it does not understand, after printing usage.
var errUsage = errors.New("usage")

const usage = "usage: billing [serve] | billing version | billing replica <command> (billing replica help)"

// run is the program: it reads the command from args and the configuration through getenv, logs
// to stderr, prints a command's output to stdout, and returns when the command is done or, for
// serve, when ctx is done or SIGINT/SIGTERM arrives (nil after a clean shutdown).
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
	case len(args) == 1 && args[0] == "version":
		return service.WriteVersion(stdout, "billing")
	// [commands]
	case args[0] == "replica": // status, rebuild, verify, dead-letters (docs/operations.md)
		load := func() (service.Config, error) {
			cfg, err := loadConfig(getenv)
			return cfg.Config, err
		}
		if code := replicacmd.Run(ctx, "billing", load, args[1:], stdout, stderr); code != replicacmd.ExitOK {
			return replicacmd.ExitCode(code)
		}
		return nil
		// [/commands]
	}
	fmt.Fprintf(stderr, "billing: unknown command %q\n%s\n", strings.Join(args, " "), usage)
	return errUsage
}

// config is billing's configuration.
type config struct {
	service.Config
	TokenIssuer string // TOKEN_ISSUER: the iss a token must carry
}

// [config]

// loadConfig reads HTTP_ADDR, DATABASE_URL, NATS_URL, NATS_CREDS and LOG_LEVEL
// (service.LoadConfig), and TOKEN_ISSUER, which must be account's.
func loadConfig(getenv func(string) string) (config, error) {
	base, err := service.LoadConfig(getenv, service.Config{
		Name:        "billing", // its NATS identity, its durable consumer, its tokens' audience
		HTTPAddr:    "127.0.0.1:8084",
		DatabaseURL: "postgres://postgres@127.0.0.1:5432/billing?sslmode=disable",
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

// [/config]

// serve runs the HTTP API beside the replica's consumer and the key watch until ctx is done.
func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	// [wiring]
	base, err := service.Open(ctx, cfg.Config, log) // Postgres pool, NATS, metrics registry
	if err != nil {
		return err
	}
	defer base.Close()
	if err := replica.Migrate(ctx, base.Pool); err != nil { // replica_users and its state
		return fmt.Errorf("migrate replica: %w", err)
	}
	rep, err := replica.New(replica.Config{Pool: base.Pool, JS: base.JS, Durable: cfg.Name, Log: log, Metrics: base.Metrics})
	if err != nil {
		return err
	}
	keys := &auth.KeySet{}
	watch := auth.NewKeyWatch(keys, base.JS, log)
	authn := auth.New(&auth.Verifier{Keys: keys, Issuer: cfg.TokenIssuer, Audience: cfg.Name}, rep, log, auth.WithMetrics(base.Metrics))

	mux := http.NewServeMux()
	mux.Handle("GET /v1/whoami", authn.Require(handleWhoami(log)))
	checks := map[string]web.Check{"stream": rep.Ready, "keys": keys.Ready}
	return base.Serve(ctx, mux, checks, rep.Run, watch.Run)
	// [/wiring]
}

// [handler]

// handleWhoami answers the caller as the replica has them: Require put the user in the context.
func handleWhoami(log *slog.Logger) http.Handler {
	type response struct {
		ID          uuid.UUID `json:"id"`
		DisplayName string    `json:"display_name"`
		Roles       []string  `json:"roles"`
		Status      string    `json:"status"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := auth.UserFrom(r.Context())
		if !ok { // a route not wrapped in Require
			log.ErrorContext(r.Context(), "no user in the request context", "path", r.URL.Path)
			web.Internal().Write(w)
			return
		}
		log.DebugContext(r.Context(), "whoami", "roles", u.Roles) // with request_id and user_id
		web.Encode(w, http.StatusOK, response{ID: u.ID, DisplayName: u.DisplayName, Roles: u.Roles, Status: u.Status})
	})
}

// [/handler]
