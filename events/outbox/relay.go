package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/internal/retry"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

const (
	// lockKey is the advisory lock that elects the one publishing relay among the instances.
	lockKey int64 = 7_514_225_101
	// lockRetry is how often a standby relay tries to take the lock.
	lockRetry = 2 * time.Second
	// DefaultPublishTimeout is RelayConfig.PublishTimeout when zero.
	DefaultPublishTimeout = 500 * time.Millisecond
	// DefaultPoll is RelayConfig.Poll when zero.
	DefaultPoll = time.Second
	// quickRetry caps the wait before the next attempt after a failed publish while the connection
	// to NATS is up: the stream is then electing a leader or briefly overloaded, and answers again
	// within seconds. An attempt costs one publish (the first after a failure is sent alone).
	quickRetry = 100 * time.Millisecond
	// declareEvery is how often a run of "no responders" declares the stream, in case it is
	// missing rather than electing a leader (in an election, the declaration itself waits for the
	// new leader).
	declareEvery = 10 * time.Second
	// abandonAfter is when the client forgets a publish whose acknowledgement never came (the relay
	// gave up on it after PublishTimeout), so that it no longer counts against maxPending.
	abandonAfter = 30 * time.Second
	// maxPending bounds the relay's publishes the client tracks: a window in flight, and the
	// abandoned publishes of earlier failed windows.
	maxPending = 4 * window
	// failureLogEvery is how often a run of failed publishes is logged while it lasts.
	failureLogEvery = 10 * time.Second
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	Log  *slog.Logger
	// Poll is the fallback polling interval when no NOTIFY arrives; 1 s when zero.
	Poll time.Duration
	// PublishTimeout is how long the relay waits for the stream's next acknowledgement before it
	// counts a publish in flight as failed and retries; DefaultPublishTimeout when zero. It bounds
	// the silence of a stream, not the latency of one publish: a slow stream that keeps
	// acknowledging is not failed, however many publishes wait behind.
	PublishTimeout time.Duration
	// Metrics, when set, receives the relay's metrics (published, pending, oldest pending age).
	Metrics prometheus.Registerer
	// TracerProvider makes the spans of the rows that carry a trace context; the global one
	// (events/tracing.Setup) when nil.
	TracerProvider trace.TracerProvider
}

// Relay publishes the outbox to JetStream.
type Relay struct {
	cfg    RelayConfig
	m      *metrics
	tracer trace.Tracer
}

// NewRelay returns a relay. Call Run to start it.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	return &Relay{cfg: cfg, m: newMetrics(cfg.Metrics), tracer: cfg.TracerProvider.Tracer(tracerName)}
}

// Run publishes pending events until ctx is done, then returns nil. It survives outages of NATS
// and Postgres, retrying and losing nothing.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Pool == nil || r.cfg.JS == nil {
		return errors.New("outbox relay: Pool and JS are required")
	}
	l, err := newLink(r.cfg.JS)
	if err != nil {
		return err
	}
	defer l.close()
	// A connection to Postgres is cheap to try: after an outage the relay resumes within 2 s.
	bo := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		err := r.lead(ctx, l, &bo)
		if ctx.Err() != nil {
			return nil
		}
		r.cfg.Log.Warn("outbox relay lost its database connection, reconnecting", "err", err)
		if !retry.Sleep(ctx, bo.Next()) {
			return nil
		}
	}
}

// lead takes the advisory lock on a connection of its own (waiting while another instance holds
// it), then publishes as long as that connection lives. The lock lives and dies with the
// connection, so a relay that loses it stops publishing and competes for it again.
func (r *Relay) lead(ctx context.Context, l *link, dbBackoff *retry.Backoff) error {
	pc, err := r.cfg.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire relay connection: %w", err)
	}
	conn := pc.Hijack() // never back in the pool: it holds the lock and LISTENs
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if err := r.lock(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The relay's marks need not wait for their WAL to reach the disk: a mark lost in a crash
	// only has its row published again, which the stream de-duplicates. A pass then ends without
	// an fsync, and the event committed meanwhile waits that much less.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	r.cfg.Log.Info("outbox relay active")
	defer r.cfg.Log.Info("outbox relay inactive")

	bo := retry.Backoff{Min: 25 * time.Millisecond, Max: 30 * time.Second}
	var f failures
	for {
		err := r.drain(ctx, conn, l, f.n > 0)
		var perr *publishError
		switch {
		case errors.As(err, &perr):
			// Nothing is lost: the rows stay pending and are published again, with the same
			// Nats-Msg-Id.
			r.m.errors.Inc()
			f.add(r.cfg.Log, perr)
			r.ensureStream(ctx, l, &f, perr)
			if time.Since(f.gauged) >= time.Second { // the count reads every pending row
				f.gauged = time.Now()
				r.gauges(ctx, conn)
			}
			if !l.pause(ctx, &bo) {
				return nil
			}
			continue
		case err != nil:
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		f.end(r.cfg.Log)
		bo.Reset()
		dbBackoff.Reset()
		r.gauges(ctx, conn)
		// Wait for Add's NOTIFY, or poll. A NOTIFY that came during the pass is already buffered.
		wctx, cancel := context.WithTimeout(ctx, r.cfg.Poll)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// lock takes the relay's advisory lock on conn, trying every lockRetry while another instance
// holds it.
func (r *Relay) lock(ctx context.Context, conn *pgx.Conn) error {
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&ok); err != nil {
			return fmt.Errorf("take relay lock: %w", err)
		}
		if ok {
			return nil
		}
		r.gauges(ctx, conn) // a standby reports the outbox too
		if !retry.Sleep(ctx, lockRetry) {
			return ctx.Err()
		}
	}
}

// ensureStream declares the stream after a publish found no one to answer it, in case the stream
// is missing: at the first "no responders" of a run of failures, then every declareEvery (during a
// leader election every attempt meets no responders, and must not wait for a declaration). It
// waits no more than quickRetry.
func (r *Relay) ensureStream(ctx context.Context, l *link, f *failures, err error) {
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || time.Since(f.declared) < declareEvery {
		return
	}
	f.declared = time.Now()
	ctx, cancel := context.WithTimeout(ctx, quickRetry)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, l.js); err != nil {
		r.cfg.Log.Debug("declare stream after no responders", "err", err)
	}
}

// gauges updates the pending and oldest-pending gauges; a failure only leaves them as they were.
func (r *Relay) gauges(ctx context.Context, conn *pgx.Conn) {
	if r.cfg.Metrics == nil {
		return
	}
	const q = `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
		FROM outbox WHERE published_at IS NULL`
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var pending int64
	var age float64
	if err := conn.QueryRow(ctx, q).Scan(&pending, &age); err != nil {
		return
	}
	r.m.pending.Set(float64(pending))
	r.m.oldestAge.Set(max(age, 0))
}

// link is the relay's side of its NATS connection.
type link struct {
	// js is the caller's handle, which declares the stream.
	js jetstream.JetStream
	// pub is a publisher of the relay's own on the same connection: the acknowledgements it
	// awaits are the relay's alone, and it forgets those that never come.
	pub jetstream.JetStream
	nc  *nats.Conn
	// up receives the connection's reconnects, through a status listener of the relay's own: the
	// connection's handlers belong to whoever made it (bus.Connect).
	up chan nats.Status
}

// newLink makes the relay's publisher and reconnect listener on the connection of js. (The client
// watches the connection for the publisher, in a goroutine that ends when the connection closes.)
func newLink(js jetstream.JetStream) (*link, error) {
	nc := js.Conn()
	pub, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(abandonAfter))
	if err != nil {
		return nil, fmt.Errorf("outbox relay: %w", err)
	}
	return &link{js: js, pub: pub, nc: nc, up: nc.StatusChanged(nats.CONNECTED)}, nil
}

// close removes the reconnect listener.
func (l *link) close() { l.nc.RemoveStatusListener(l.up) }

// pause waits before the next attempt after a failed publish, and reports false when ctx is done
// first. It does not wait when the connection has reconnected since; while the connection is up,
// it waits no more than quickRetry (the stream answers "no responders" or times out, as during a
// leader election, and publishing must resume as soon as the new leader answers); while the
// connection is down it waits as long as the backoff, but a reconnect ends the wait.
func (l *link) pause(ctx context.Context, bo *retry.Backoff) bool {
	if l.reconnected() {
		return ctx.Err() == nil
	}
	d := bo.Next()
	if l.nc.IsConnected() {
		d = min(d, quickRetry)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-l.up:
		return true
	case <-t.C:
		return true
	}
}

// reconnected reports whether the connection has reconnected since it was last asked.
func (l *link) reconnected() bool {
	got := false
	for {
		select {
		case <-l.up:
			got = true
		default:
			return got
		}
	}
}

// failures is a run of failed publishes. The log tells when it begins, every failureLogEvery while
// it lasts and when it ends, rather than every retry.
type failures struct {
	n        int
	since    time.Time
	logged   time.Time
	declared time.Time // when ensureStream last declared the stream
	gauged   time.Time // when the gauges were last updated
}

func (f *failures) add(log *slog.Logger, err *publishError) {
	now := time.Now()
	if f.n == 0 {
		f.since = now
	}
	f.n++
	if f.n == 1 || now.Sub(f.logged) >= failureLogEvery {
		log.Warn("publish outbox events, will retry", err.row.logArgs("err", err, "failures", f.n, "since", f.since)...)
		f.logged = now
	}
}

func (f *failures) end(log *slog.Logger) {
	if f.n == 0 {
		return
	}
	log.Info("outbox relay publishing again", "failures", f.n, "after", time.Since(f.since).Round(time.Millisecond))
	*f = failures{}
}

// publishError is a failure to publish, as opposed to a failure of the database: of the event row,
// the first that failed.
type publishError struct {
	row row
	err error
}

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }
