// Package service holds the parts of start-up and shutdown that every service's main uses: the
// shared configuration (LoadConfig), the logger, the Postgres pool, the NATS connection, the
// metrics registry, and Serve, which runs the HTTP server beside the workers it is given and stops
// them in order. It starts nothing of its own: each main builds its parts and lists every worker
// it runs in its call of Serve.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/logging"
	"github.com/authmesh/events/pg"
	"github.com/authmesh/events/tracing"
	"github.com/authmesh/events/web"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Config is what every service reads from the environment.
type Config struct {
	Name        string // the service's name: "account", "blog", "shop"
	HTTPAddr    string // HTTP_ADDR
	DatabaseURL string // DATABASE_URL
	NATSURL     string // NATS_URL; may carry credentials, never logged as it is
	NATSCreds   string // NATS_CREDS: a credentials file, optional
	LogLevel    string // LOG_LEVEL: debug, info, warn or error
}

// DefaultNATSURL is NATS_URL when unset.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// DefaultIssuer is TOKEN_ISSUER when unset: the iss that account signs with and that blog and
// shop accept.
const DefaultIssuer = "account"

// LoadConfig reads HTTP_ADDR, DATABASE_URL, NATS_URL, NATS_CREDS and LOG_LEVEL through getenv,
// falling back to the values in defaults (and DefaultNATSURL, and "info").
func LoadConfig(getenv func(string) string, defaults Config) (Config, error) {
	cfg := defaults
	set := func(dst *string, key string) {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			*dst = v
		}
	}
	set(&cfg.HTTPAddr, "HTTP_ADDR")
	set(&cfg.DatabaseURL, "DATABASE_URL")
	set(&cfg.NATSURL, "NATS_URL")
	set(&cfg.NATSCreds, "NATS_CREDS")
	set(&cfg.LogLevel, "LOG_LEVEL")
	if cfg.NATSURL == "" {
		cfg.NATSURL = DefaultNATSURL
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	var missing []string
	if cfg.HTTPAddr == "" {
		missing = append(missing, "HTTP_ADDR")
	}
	if cfg.DatabaseURL == "" {
		missing = append(missing, "DATABASE_URL")
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("missing configuration: %s", strings.Join(missing, ", "))
	}
	if _, err := parseLevel(cfg.LogLevel); err != nil {
		return Config{}, err
	}
	if _, err := pgxpool.ParseConfig(cfg.DatabaseURL); err != nil {
		return Config{}, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if _, _, err := bus.ParseURL(cfg.NATSURL); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger returns a JSON logger writing to w at the given level (info when it is not one of
// LOG_LEVEL's values), one object a line. A line logged with a request's context carries the
// request's request_id, and user_id once it is authenticated (events/logging).
func NewLogger(w io.Writer, level string) *slog.Logger {
	l, err := parseLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return slog.New(logging.NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})))
}

// Conn is how the service connects to NATS, as client name (the service's name when empty).
func (c Config) Conn(name string) bus.ConnConfig {
	return bus.ConnConfig{URL: c.NATSURL, Creds: c.NATSCreds, Service: c.Name, Name: name}
}

// Base is what every service opens at start. Close releases it.
type Base struct {
	Config  Config
	Log     *slog.Logger
	Pool    *pgxpool.Pool
	NC      *nats.Conn
	JS      jetstream.JetStream
	Metrics *prometheus.Registry
}

// Open opens the database and NATS of cfg. Each must answer within 10 seconds; later outages
// are ridden out by the loops that use them.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Base, error) {
	pool, err := pg.Open(ctx, cfg.DatabaseURL, pg.Config{})
	if err != nil {
		return nil, err
	}
	nc, err := bus.Connect(ctx, cfg.Conn(""), 10*time.Second, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		pool.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		NewBuildInfoCollector(cfg.Name))
	return &Base{Config: cfg, Log: log, Pool: pool, NC: nc, JS: js, Metrics: reg}, nil
}

// Close closes NATS (flushing what is pending) and the pool.
func (b *Base) Close() {
	if err := b.NC.Drain(); err != nil {
		b.NC.Close()
	}
	b.Pool.Close()
}

// Checks are the readiness checks of the database and NATS.
func (b *Base) Checks() map[string]web.Check {
	return map[string]web.Check{
		"database": func(ctx context.Context) error { return b.Pool.Ping(ctx) },
		"nats": func(ctx context.Context) error {
			if !b.NC.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		},
	}
}

// Worker is a background loop of a service: it runs until ctx is done, finishes the work in hand,
// and returns nil; an error means it could not go on.
type Worker func(ctx context.Context) error

// Serve registers /healthz, /readyz (with checks added to Base's) and /metrics on mux, serves it on
// HTTP_ADDR beside the workers, and returns when ctx is done or a worker fails. It stops in order:
// the HTTP server stops accepting and finishes in-flight requests, then the workers are stopped
// and waited for, then the spans still buffered are exported.
//
// Serve sets up tracing as the OTEL_* environment asks (tracing.Setup: off when it names no
// exporter); the requests are then traced around everything web.Handler does, and the workers
// trace through the global tracer provider.
func (b *Base) Serve(ctx context.Context, mux *http.ServeMux, checks map[string]web.Check, workers ...Worker) (err error) {
	tr, err := tracing.Setup(ctx, b.Config.Name, b.Log)
	if err != nil {
		return err
	}
	if tr.Enabled() {
		b.Log.Info("tracing: exporting spans over OTLP/HTTP")
	}
	defer func() { err = errors.Join(err, tr.Shutdown(ctx)) }()
	all := b.Checks()
	for k, v := range checks {
		all[k] = v
	}
	web.HandleHealth(mux, all)
	web.HandleMetrics(mux, b.Metrics)
	srv := web.NewServer(b.Config.HTTPAddr, tr.Handler(mux, web.Handler(mux, b.Log, b.Metrics)), b.Log)
	ln, err := web.Listen(srv)
	if err != nil {
		return err
	}

	wctx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	failed := make(chan error, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			if err := w(wctx); err != nil {
				failed <- err
			}
		})
	}

	sctx, stopServer := context.WithCancel(ctx)
	defer stopServer()
	werrc := make(chan error, 1)
	go func() {
		select {
		case err := <-failed:
			werrc <- err
			stopServer()
		case <-sctx.Done():
			werrc <- nil
		}
	}()
	b.Log.Info("serving", "service", b.Config.Name, "addr", ln.Addr().String())
	serr := web.Serve(sctx, srv, ln)
	stopServer()
	werr := <-werrc
	stopWorkers()
	wg.Wait()
	close(failed)
	for err := range failed {
		werr = errors.Join(werr, err)
	}
	b.Log.Info("stopped", "service", b.Config.Name)
	return errors.Join(serr, werr)
}

// OneLine returns err's message on one line, for a command's last word on stderr: drivers
// report multi-address dial failures on several lines.
func OneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
