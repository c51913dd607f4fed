package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/tracing"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// republishTimeout bounds the wait for the acknowledgement of one publish of Republish, an
// operator's command that publishes one event at a time and stops at the first failure.
const republishTimeout = 5 * time.Second

// row is an event of the outbox, as published.
type row struct {
	ID        int64
	EventID   uuid.UUID
	Subject   string
	Payload   []byte
	CreatedAt time.Time
	// Trace is the trace context of the request that wrote the row (tracing.Text), "" when none.
	Trace string
}

// rowColumns are the columns of a row, in the order of its fields.
const rowColumns = `id, event_id, subject, payload, created_at, COALESCE(trace_context, '')`

// message returns the message of ev: its subject, its payload and, when the row has one, the trace
// context of parent (a span of the relay's, or else the row's own context) as the traceparent and
// tracestate headers.
func (ev row) message(parent context.Context) *nats.Msg {
	msg := &nats.Msg{Subject: ev.Subject, Data: ev.Payload, Header: nats.Header{}}
	if ev.Trace != "" {
		tracing.Inject(parent, msg.Header)
	}
	return msg
}

// publish publishes ev to the USERS stream with its event id as Nats-Msg-Id, waiting up to
// timeout for the acknowledgement, and returns the acknowledgement: its Sequence is the original
// one when the stream reports a Duplicate. When the stream does not exist, it creates it and tries
// again.
func publish(ctx context.Context, js jetstream.JetStream, timeout time.Duration, ev row) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pub := func() (*jetstream.PubAck, error) {
		msg := ev.message(tracing.FromText(ctx, ev.Trace))
		// No retries inside the client: a missing stream is reported at once (it would otherwise
		// look like a timeout), and the callers retry with their own backoff.
		return js.PublishMsg(ctx, msg,
			jetstream.WithMsgID(ev.EventID.String()),
			jetstream.WithExpectStream(events.StreamName),
			jetstream.WithRetryAttempts(0))
	}
	ack, err := pub()
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if _, err := bus.EnsureStream(ctx, js); err != nil {
			return nil, fmt.Errorf("publish event %s: %w", ev.EventID, err)
		}
		ack, err = pub()
	}
	if err != nil {
		return nil, fmt.Errorf("publish event %s: %w", ev.EventID, err)
	}
	return ack, nil
}

// Republished is what Republish did.
type Republished struct {
	// Published counts the events sent to the stream.
	Published int
	// Duplicates counts those the stream already held (within its duplicate window) and so did
	// not store again.
	Duplicates int
}

// Republish publishes again every kept event created at or after since (every event when since
// is zero), in id order, with its original Nats-Msg-Id and trace context, and records the stream sequence each
// gets. It restores a stream that lost messages or was recreated; inside the stream's duplicate
// window, an event the stream still holds is not stored twice. It reports what it did, also when
// it stops on an error; running it again is safe.
func Republish(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, since time.Time) (Republished, error) {
	// Paging by id is right here, unlike in the relay: this is a pass over what exists now, and
	// rows committed later are the relay's to publish.
	const page = `SELECT ` + rowColumns + ` FROM outbox
		WHERE id > $1 AND created_at >= $2 ORDER BY id LIMIT 500`
	const mark = `UPDATE outbox SET stream_seq = $2, published_at = COALESCE(published_at, now())
		WHERE id = $1`
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		return Republished{}, err
	}
	var n Republished
	var after int64
	for {
		rows, err := pool.Query(ctx, page, after, since)
		if err != nil {
			return n, fmt.Errorf("read outbox: %w", err)
		}
		batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			return n, fmt.Errorf("read outbox: %w", err)
		}
		if len(batch) == 0 {
			return n, nil
		}
		for _, ev := range batch {
			ack, err := publish(ctx, js, republishTimeout, ev)
			if err != nil {
				return n, err
			}
			if ack.Duplicate {
				n.Duplicates++
			}
			if _, err := pool.Exec(ctx, mark, ev.ID, int64(ack.Sequence)); err != nil {
				return n, fmt.Errorf("record seq of event %s: %w", ev.EventID, err)
			}
			n.Published++
			after = ev.ID
		}
	}
}
