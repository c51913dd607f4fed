// Package outbox publishes events through a transactional outbox.
//
// A service writes an event with Add in the same Postgres transaction as the change it records, so
// the two commit together or not at all. A Relay publishes pending events to JetStream in id
// order, many at a time but never two of one user, so that the stream keeps each user's order;
// it sends the event id as Nats-Msg-Id so a retried publish is de-duplicated by the stream,
// records the stream sequence on the row once the stream has acknowledged it, and keeps published
// rows: they are the second copy of the history, from which Republish restores a stream that lost
// messages.
//
// The relay reads the rows whose published_at is NULL (never "id > last seen", which skips a
// transaction that took a lower id but committed later), wakes on the NOTIFY that Add sends with a
// polling fallback, and holds a Postgres advisory lock so that one instance publishes at a time.
//
// Tracing. Add stores the W3C trace context of the span in its ctx with the row (events/tracing);
// the relay publishes such a row with that context as the message's traceparent and tracestate
// headers, under two spans of its own in the request's trace: "outbox dwell", from the row's
// creation to its publish, and "publish", from the publish to the stream's acknowledgement. A row
// written without a span (tracing off) costs nothing more and is published without them.
package outbox

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/tracing"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel is the channel on which Add announces a new event to the relay.
const notifyChannel = "outbox"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or updates the outbox table in the service's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.Apply(ctx, pool, "outbox", migrations, "migrations")
}

// Add writes e to the outbox inside tx, the transaction of the change e records, with the trace
// context of the span in ctx, if any. It refuses an event that fails Validate (the error wraps
// events.ErrInvalid): consumers could never apply it.
func Add(ctx context.Context, tx pgx.Tx, e events.Event) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("add event %s to outbox: %w", e.ID, err)
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("marshal event %s: %w", e.ID, err)
	}
	// The NOTIFY is delivered at commit, so the relay wakes when the row is visible.
	const insert = `WITH added AS (
		INSERT INTO outbox (event_id, subject, payload, trace_context) VALUES ($1, $2, $3, $4) RETURNING id)
	SELECT pg_notify('` + notifyChannel + `', '') FROM added`
	var trace *string // NULL without a span
	if tc := tracing.Text(ctx); tc != "" {
		trace = &tc
	}
	if _, err := tx.Exec(ctx, insert, e.ID, e.Subject(), payload, trace); err != nil {
		return fmt.Errorf("add event %s to outbox: %w", e.ID, err)
	}
	return nil
}

// Has reports whether the outbox holds the event eventID, published or not. Published rows are
// kept, so every event this database made is found; an event of the stream that is not was made
// by another history of the database, one that a restore from an older backup undid.
func Has(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, eventID uuid.UUID) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE event_id = $1)`, eventID).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up event %s in the outbox: %w", eventID, err)
	}
	return ok, nil
}

// Stats is what Status reports.
type Stats struct {
	Pending          int64
	Published        int64
	OldestPendingAge time.Duration // zero when nothing is pending
}

// Status counts the outbox's pending and published events.
func Status(ctx context.Context, pool *pgxpool.Pool) (Stats, error) {
	const q = `SELECT count(*) FILTER (WHERE published_at IS NULL),
		count(*) FILTER (WHERE published_at IS NOT NULL),
		COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE published_at IS NULL)), 0)::float8
		FROM outbox`
	var s Stats
	var age float64
	if err := pool.QueryRow(ctx, q).Scan(&s.Pending, &s.Published, &age); err != nil {
		return Stats{}, fmt.Errorf("outbox status: %w", err)
	}
	s.OldestPendingAge = max(seconds(age), 0)
	return s, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
