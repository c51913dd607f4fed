package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Read says which messages of the stream ReadStream reads.
type Read int

const (
	// LastPerSubject reads the last message of each subject (users.<type>.<user_id>: at most three
	// per user), so the cost grows with the users rather than the history. It misses a higher
	// version followed on its subject by a lower one, which only a database that went on after a
	// restore publishes.
	LastPerSubject Read = iota
	// Whole reads every message: the highest version a replica ever saw, whatever the order.
	Whole
)

const (
	// readAhead is how many messages the ordered consumer keeps in flight.
	readAhead = 4096
	// readIdle is how long a read waits for the next message before it asks the server whether
	// any is left.
	readIdle = time.Second
)

// Stream is what ReadStream found.
type Stream struct {
	Exists  bool   // whether the stream USERS exists
	LastSeq uint64 // the stream's last sequence when the read began; the read goes up to it
	Read    uint64 // messages read
	Invalid uint64 // messages that cannot be decoded or are invalid, left out as replicas leave them out
	// Users holds the newest state of every user with a valid message, with the time of its
	// earliest message read (its user.created) as CreatedAt.
	Users map[uuid.UUID]postgres.StreamUser
}

// ReadStream reads the USERS stream up to its last sequence, as read says, with an ordered
// consumer (nothing kept on the server beyond the read), and returns each user's newest state:
// its highest version, with the state of the first message that carries it, as a replica holds
// it, and Conflict set when another message carries that version in another state. It does not
// create the stream: a missing one is Exists false.
func ReadStream(ctx context.Context, js jetstream.JetStream, read Read) (Stream, error) {
	st := Stream{Users: make(map[uuid.UUID]postgres.StreamUser)}
	s, err := js.Stream(ctx, events.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	st.Exists = true
	st.LastSeq = s.CachedInfo().State.LastSeq
	if st.LastSeq == 0 {
		return st, nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.StreamSubjects},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if read == LastPerSubject {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return st, fmt.Errorf("read stream %s: %w", events.StreamName, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(readAhead))
	if err != nil {
		return st, fmt.Errorf("read stream %s: %w", events.StreamName, err)
	}
	defer it.Stop()
	// Next does not watch ctx: stopping the iterator ends a Next in progress.
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer stopOnCancel()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(readIdle))
		switch {
		case ctx.Err() != nil:
			return st, ctx.Err()
		case errors.Is(err, nats.ErrTimeout):
			// Quiet: either nothing is left after our position, or the server is slow.
			info, err := cons.Info(ctx)
			if err != nil {
				return st, fmt.Errorf("read stream %s: %w", events.StreamName, err)
			}
			if info.NumPending == 0 {
				return st, nil
			}
			continue
		case err != nil:
			return st, fmt.Errorf("read stream %s: %w", events.StreamName, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return st, fmt.Errorf("read stream %s: %w", events.StreamName, err)
		}
		if meta.Sequence.Stream > st.LastSeq {
			return st, nil // published after the read began
		}
		st.Read++
		st.take(msg.Subject(), msg.Data())
		if meta.Sequence.Stream == st.LastSeq || meta.NumPending == 0 {
			return st, nil
		}
	}
}

// take keeps the event in data if it is the newest of its user so far.
func (st *Stream) take(subject string, data []byte) {
	e, ok := parse(subject, data)
	if !ok {
		st.Invalid++
		return
	}
	cur, seen := st.Users[e.User.ID]
	switch {
	case !seen:
		cur = postgres.StreamUser{User: e.User, CreatedAt: e.OccurredAt}
	case e.User.Version > cur.Version:
		cur = postgres.StreamUser{User: e.User, CreatedAt: cur.CreatedAt}
	case e.User.Version == cur.Version && !account.SameState(e.User, cur.User):
		cur.Conflict = true
	}
	if e.OccurredAt.Before(cur.CreatedAt) {
		cur.CreatedAt = e.OccurredAt
	}
	st.Users[e.User.ID] = cur
}

// parse decodes the event of a message of the stream and reports whether a replica would apply
// it: a valid event on its user's subject (as events/replica decides).
func parse(subject string, data []byte) (events.Event, bool) {
	var e events.Event
	if err := json.Unmarshal(data, &e); err != nil || e.Validate() != nil {
		return e, false
	}
	id, ok := events.SubjectUser(subject)
	return e, ok && id == e.User.ID
}
