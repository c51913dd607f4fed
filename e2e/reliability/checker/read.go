package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadStream reads the USERS stream from sequence 1 to its last sequence at the time of the call,
// with an ordered consumer, and returns the events it could decode and how many messages it could
// not (those are no change of anyone's; a run counts them apart).
func ReadStream(ctx context.Context, js jetstream.JetStream) (evs []Event, undecodable int, err error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, 0, fmt.Errorf("stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, 0, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, 0, fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return nil, 0, fmt.Errorf("read at seq %d of %d: %w", lastSeq(evs), last, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, 0, fmt.Errorf("metadata: %w", err)
		}
		var e events.Event
		if json.Unmarshal(m.Data(), &e) != nil || e.Validate() != nil {
			undecodable++
		} else {
			evs = append(evs, Event{Seq: meta.Sequence.Stream, Event: e})
		}
		if meta.Sequence.Stream >= last {
			return evs, undecodable, nil
		}
	}
}

func lastSeq(evs []Event) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// Queries of ReadStates: account's users and a replica's.
const (
	AccountUsers = `SELECT id, roles, status, version FROM users`
	ReplicaUsers = `SELECT id, roles, status, version FROM replica_users`
)

// ReadStates reads the states of every user with query (AccountUsers, ReplicaUsers).
func ReadStates(ctx context.Context, pool *pgxpool.Pool, query string) (map[uuid.UUID]State, error) {
	rows, err := pool.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	out := map[uuid.UUID]State{}
	var id uuid.UUID
	var s State
	_, err = pgx.ForEachRow(rows, []any{&id, &s.Roles, &s.Status, &s.Version}, func() error {
		out[id] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return out, nil
}
