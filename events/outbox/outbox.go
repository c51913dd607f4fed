// Package outbox publishes events through a transactional outbox.
//
// A service writes an event with Add in the same Postgres transaction as the change it records, so
// the two commit together or not at all. A Relay publishes pending events to JetStream in id
// order, with the event id as Nats-Msg-Id so a retried publish is de-duplicated by the stream,
// records the stream sequence on the row, and keeps published rows: they are the second copy of
// the history, from which Republish restores a stream that lost messages.
//
// The relay polls for rows whose published_at is NULL (never "id > last seen", which skips a
// transaction that took a lower id but committed later), wakes on the NOTIFY that Add sends with a
// polling fallback, and holds a Postgres advisory lock so that one instance publishes at a time.
package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/authmesh/events"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Migrate creates or updates the outbox table in the service's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	panic("TODO")
}

// Add writes e to the outbox inside tx, the transaction of the change e records.
func Add(ctx context.Context, tx pgx.Tx, e events.Event) error {
	panic("TODO")
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	Log  *slog.Logger
	// Poll is the fallback polling interval when no NOTIFY arrives; 1 s when zero.
	Poll time.Duration
	// Metrics, when set, receives the relay's metrics (published, pending, oldest pending age).
	Metrics prometheus.Registerer
}

// Relay publishes the outbox to JetStream.
type Relay struct {
	cfg RelayConfig
}

// NewRelay returns a relay. Call Run to start it.
func NewRelay(cfg RelayConfig) *Relay {
	return &Relay{cfg: cfg}
}

// Run publishes pending events until ctx is done, then returns nil. It survives outages of NATS
// and Postgres, retrying with backoff and losing nothing.
func (r *Relay) Run(ctx context.Context) error {
	panic("TODO")
}

// Stats is what Status reports.
type Stats struct {
	Pending          int64
	Published        int64
	OldestPendingAge time.Duration // zero when nothing is pending
}

// Status counts the outbox's pending and published events.
func Status(ctx context.Context, pool *pgxpool.Pool) (Stats, error) {
	panic("TODO")
}
