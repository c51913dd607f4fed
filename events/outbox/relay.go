package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/authmesh/events/internal/retry"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// lockKey is the advisory lock that elects the one publishing relay among the instances.
	lockKey int64 = 7_514_225_101
	// lockRetry is how often a standby relay tries to take the lock.
	lockRetry = 2 * time.Second
	// batchLimit is how many pending rows one transaction publishes at most.
	batchLimit = 100
	// batchTimeout bounds one publishing transaction, even after ctx is done.
	batchTimeout = 30 * time.Second
	// DefaultPublishTimeout is RelayConfig.PublishTimeout when zero.
	DefaultPublishTimeout = 5 * time.Second
	// DefaultPoll is RelayConfig.Poll when zero.
	DefaultPoll = time.Second
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	Log  *slog.Logger
	// Poll is the fallback polling interval when no NOTIFY arrives; 1 s when zero.
	Poll time.Duration
	// PublishTimeout bounds the wait for the stream's acknowledgement of one publish;
	// DefaultPublishTimeout when zero. It must stay below the database's
	// idle_in_transaction_session_timeout, as the relay publishes inside its transaction.
	PublishTimeout time.Duration
	// Metrics, when set, receives the relay's metrics (published, pending, oldest pending age).
	Metrics prometheus.Registerer
}

// Relay publishes the outbox to JetStream.
type Relay struct {
	cfg RelayConfig
	m   *metrics
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
	return &Relay{cfg: cfg, m: newMetrics(cfg.Metrics)}
}

// Run publishes pending events until ctx is done, then returns nil. It survives outages of NATS
// and Postgres, retrying with backoff and losing nothing.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Pool == nil || r.cfg.JS == nil {
		return errors.New("outbox relay: Pool and JS are required")
	}
	bo := retry.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for {
		err := r.lead(ctx, &bo)
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
func (r *Relay) lead(ctx context.Context, bo *retry.Backoff) error {
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
	r.cfg.Log.Info("outbox relay active")
	defer r.cfg.Log.Info("outbox relay inactive")

	for {
		err := r.drain(ctx, conn)
		var perr *publishError
		switch {
		case errors.As(err, &perr):
			// Nothing is lost: the rows stay pending and are published again, with the same
			// Nats-Msg-Id, after a delay.
			r.m.errors.Inc()
			r.cfg.Log.Warn("publish outbox event, will retry", "err", err)
			r.gauges(ctx, conn)
			if !retry.Sleep(ctx, bo.Next()) {
				return nil
			}
			continue
		case err != nil:
			return err
		}
		bo.Reset()
		r.gauges(ctx, conn)
		if ctx.Err() != nil {
			return nil
		}
		// Wait for Add's NOTIFY, or poll.
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

// drain publishes pending rows, a transaction per batch, until none is left, a publish fails or
// ctx is done.
func (r *Relay) drain(ctx context.Context, conn *pgx.Conn) error {
	for ctx.Err() == nil {
		n, err := r.publishBatch(ctx, conn)
		if err != nil || n < batchLimit {
			return err
		}
	}
	return nil
}

// publishBatch locks up to batchLimit pending rows in id order, publishes them in that order and
// marks each published with its stream sequence, then commits. It stops at the first publish that
// fails and commits what was published before it. After ctx is done it publishes no further row
// but still commits, with a context that is not cancelled.
func (r *Relay) publishBatch(ctx context.Context, conn *pgx.Conn) (int, error) {
	// SKIP LOCKED, not "id > last seen": a transaction that took a lower id and commits later is
	// still found, by its NULL published_at.
	const pending = `SELECT id, event_id, subject, payload FROM outbox
		WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`
	const mark = `UPDATE outbox SET published_at = now(), stream_seq = $2 WHERE id = $1`

	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
	defer cancel()
	tx, err := conn.Begin(tctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(tctx) }()
	rows, err := tx.Query(tctx, pending, batchLimit)
	if err != nil {
		return 0, fmt.Errorf("select pending: %w", err)
	}
	batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return 0, fmt.Errorf("select pending: %w", err)
	}

	var n int
	var perr error
	for _, ev := range batch {
		if ctx.Err() != nil {
			break
		}
		ack, err := publish(tctx, r.cfg.JS, r.cfg.PublishTimeout, ev)
		if err != nil {
			perr = &publishError{err: err}
			break
		}
		// One UPDATE per publish also keeps the session from idling in the transaction.
		if _, err := tx.Exec(tctx, mark, ev.ID, int64(ack.Sequence)); err != nil {
			return 0, fmt.Errorf("mark event %s published: %w", ev.EventID, err)
		}
		n++
	}
	if err := tx.Commit(tctx); err != nil {
		return 0, fmt.Errorf("commit published: %w", err)
	}
	r.m.published.Add(float64(n))
	if perr != nil {
		return n, perr
	}
	return n, nil
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

// publishError is a failure to publish, as opposed to a failure of the database.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }
