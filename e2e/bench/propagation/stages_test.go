package propagation

import (
	"context"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stages of a change's way from the PUT's answer to its enforcement on a service. Their sum is
// the change's propagation to the service.
const (
	stageRelay   = iota // PUT answered → the message stored in the stream (the outbox relay's share)
	stageDeliver        // stored → the replica's apply transaction began (replica updated_at)
	stageApply          // the apply transaction began → its NOTIFY read
	stages
)

var stageNames = [stages]string{
	"PUT answered → stored in the stream",
	"stored → replica transaction",
	"replica transaction → NOTIFY",
}

// stage returns how long c spent in each stage on service i.
func (c *change) stage(i int) [stages]time.Duration {
	return [stages]time.Duration{
		stageRelay:   c.stored.Sub(c.answered),
		stageDeliver: c.applied[i].Sub(c.stored),
		stageApply:   c.notified[i].Sub(c.applied[i]),
	}
}

// outboxRow is what account's outbox recorded of an event.
type outboxRow struct {
	created time.Time
	seq     uint64
}

// changeKey identifies an event by its user and the version it carries.
type changeKey struct {
	user    uuid.UUID
	version int64
}

// timestamps fills in, for every change, its outbox row (account's database) and its message's
// timestamp in the stream (read as the operator).
func timestamps(ctx context.Context, accountDB, natsURL string, changes []*change) error {
	rows, err := outboxRows(ctx, accountDB)
	if err != nil {
		return err
	}
	first, last := ^uint64(0), uint64(0)
	for _, c := range changes {
		r, ok := rows[changeKey{c.user.id, c.version}]
		if !ok {
			return fmt.Errorf("no published outbox row for version %d of %s", c.version, c.user.id)
		}
		c.created, c.seq = r.created, r.seq
		first, last = min(first, r.seq), max(last, r.seq)
	}
	stored, err := streamTimes(ctx, natsURL, first, last)
	if err != nil {
		return err
	}
	for _, c := range changes {
		t, ok := stored[c.seq]
		if !ok {
			return fmt.Errorf("message %d not in the stream", c.seq)
		}
		c.stored = t
	}
	return nil
}

// outboxRows reads every published row of account's outbox.
func outboxRows(ctx context.Context, dbURL string) (map[changeKey]outboxRow, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("account database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	const q = `SELECT (e->'user'->>'id')::uuid, (e->'user'->>'version')::bigint, created_at, stream_seq
		FROM (SELECT convert_from(payload, 'UTF8')::jsonb AS e, created_at, stream_seq
			FROM outbox WHERE stream_seq IS NOT NULL) AS o`
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	out := map[changeKey]outboxRow{}
	var k changeKey
	var r outboxRow
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&k.user, &k.version, &r.created, &seq}, func() error {
		r.seq = uint64(seq)
		out[k] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// streamTimes reads the stream's timestamp of the messages first to last, through an ordered
// consumer.
func streamTimes(ctx context.Context, natsURL string, first, last uint64) (map[uint64]time.Time, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   first,
	})
	if err != nil {
		return nil, fmt.Errorf("read the stream: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read the stream: %w", err)
	}
	defer it.Stop()
	out := map[uint64]time.Time{}
	for {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return nil, fmt.Errorf("read the stream at %d of %d..%d: %w", len(out), first, last, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		out[meta.Sequence.Stream] = meta.Timestamp
		if meta.Sequence.Stream >= last {
			return out, nil
		}
	}
}
