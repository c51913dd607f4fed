// Package replica keeps a service's copy of the users it authorizes, fed by the USERS stream.
//
// The replica lives in the service's own database (tables replica_users, replica_state and
// replica_dead_letters, created by Migrate). A durable pull consumer applies events in batches,
// one Postgres transaction per batch, and acks only after the commit. An event changes a row
// only when its version is newer than the row's, so duplicates, redeliveries, reordering and
// replays converge. Undecodable or invalid events are terminated and recorded as dead letters with
// their stream sequence and the reason; transient database errors are retried with a delay. An
// event whose message carries a W3C trace context (events/tracing) gets an apply span in the
// trace of the request that made it.
//
// User answers who a token's subject is. When the replica lacks the user, or holds an older
// version than the token was issued at, it waits (bounded by Config.Wait) to be woken by the
// NOTIFY that every apply transaction sends, so any instance of the service sees an apply made by
// any other; then it gives up with ErrLagging. While a dead letter names a user, that user is known
// to be stale and User answers ErrStale: fail closed for that one user.
//
// User answers from an in-memory view of the users it looked up recently (view.go), so an
// authorized request costs no query. The same notifications keep the view current: each one drops
// the users it names, in every instance, and the view is used only while its listener is
// connected, emptied whenever that connection is lost or taken again. The instance that applies
// a batch keeps its users out of its own view while the batch commits, so it answers exactly as
// Postgres would; another instance stops honouring a revoked role when the change's NOTIFY
// reaches it, a fraction of a millisecond after the commit (more on a saturated machine).
package replica

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/migrate"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Errors of User. Both are auth.ErrNotCurrent to the middleware, which answers 503
// replica_lagging.
var (
	// ErrLagging means the replica did not reach the requested version within the wait.
	ErrLagging = fmt.Errorf("replica lagging: %w", auth.ErrNotCurrent)
	// ErrStale means an event of the user could not be applied and sits in dead letters.
	ErrStale = fmt.Errorf("replica stale for user: %w", auth.ErrNotCurrent)
)

// DefaultWait is how long User waits for the replica to catch up.
const DefaultWait = 2 * time.Second

// Config configures a Replica.
type Config struct {
	Pool    *pgxpool.Pool
	JS      jetstream.JetStream
	Durable string // the durable consumer's name: the service's name ("blog", "shop")
	Log     *slog.Logger
	// Wait bounds how long User waits for the replica to catch up; DefaultWait when zero.
	Wait time.Duration
	// ViewSize is how many users the in-memory view holds at most: DefaultViewSize when zero, no
	// view (every lookup reads Postgres) when negative.
	ViewSize int
	// Metrics, when set, receives the replica's metrics (events applied, skipped, dead-lettered,
	// lag, waits).
	Metrics prometheus.Registerer
	// TracerProvider makes the apply spans of the events that carry a trace context; the global
	// one (events/tracing.Setup) when nil.
	TracerProvider trace.TracerProvider
}

// Replica is a service's user replica. User may be called from any goroutine; Run is called once.
type Replica struct {
	cfg  Config
	cons jetstream.Consumer // set by attach, then used by the consume loop alone
	// attached is true once the durable consumer exists; until then Ready reports why not.
	attached atomic.Bool
	m        *metrics
	tracer   trace.Tracer
	waiters  waiters
	// view answers User from memory for the users it holds (nil: no view).
	view *view
	// listening is true while the listener holds its LISTEN connection, so that a NOTIFY is
	// certain to wake the waiters; while false, they re-check on a short interval.
	listening atomic.Bool
}

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or updates the replica's tables in the service's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.Apply(ctx, pool, "replica", migrations, "migrations")
}

// New returns a replica. It does not touch NATS: Run waits for the stream and declares the durable
// consumer, so a service may start before account has created the stream.
func New(cfg Config) (*Replica, error) {
	if cfg.Pool == nil || cfg.JS == nil || cfg.Durable == "" {
		return nil, errors.New("replica: Pool, JS and Durable are required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ViewSize == 0 {
		cfg.ViewSize = DefaultViewSize
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	return &Replica{cfg: cfg, m: newMetrics(cfg.Metrics), tracer: cfg.TracerProvider.Tracer(tracerName),
		view: newView(cfg.ViewSize)}, nil
}

// Run waits for the USERS stream, declares the durable consumer, then applies events until ctx is
// done, finishes the batch in hand and returns nil. It also runs the listener that wakes the
// callers waiting in User. It returns an error only if it cannot go on (it rides out outages of
// NATS and Postgres by retrying).
func (r *Replica) Run(ctx context.Context) error {
	lctx, stopListener := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(lctx) })
	defer wg.Wait()
	defer stopListener()
	if r.attach(ctx) {
		r.consume(ctx)
	}
	return nil
}

// ErrNotAttached is Ready's answer until the durable consumer exists: the stream has not been
// created yet (account creates it), or NATS has not answered.
var ErrNotAttached = errors.New("no durable consumer yet (waiting for the stream " + events.StreamName + ")")

// Ready reports whether the replica is fed: nil once Run has found the stream and declared the
// durable consumer, else ErrNotAttached. It is the service's readiness check of the stream.
func (r *Replica) Ready(context.Context) error {
	if !r.attached.Load() {
		return ErrNotAttached
	}
	return nil
}
