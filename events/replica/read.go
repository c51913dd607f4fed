package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// readBatch is how many messages a read of the stream hands over at a time.
	readBatch = 16384
	// readAhead is how many messages the ordered consumer keeps in flight.
	readAhead = 2 * readBatch
	// readIdle is how long a read waits for the next message before it asks the server whether
	// any is left.
	readIdle = time.Second
)

// streamRange is the part of the stream a read covers: from a sequence, from a time, or from the
// start (both zero), up to and including last.
type streamRange struct {
	fromSeq  uint64
	fromTime time.Time
	last     uint64
}

// message is a message of the stream, parsed: event is usable when reason is empty.
type message struct {
	seq     uint64
	subject string
	data    []byte
	event   events.Event
	reason  string
}

// openStream returns the USERS stream and its last sequence. It does not create the stream: an
// operator command must not invent one when pointed at the wrong server.
func openStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, *jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s info: %w", events.StreamName, err)
	}
	return s, info, nil
}

// readStream reads the messages of r in stream order with an ordered consumer (no state kept on
// the server beyond the read) and hands them to fn, parsed, in batches of up to readBatch. It
// returns when r.last is reached, when the stream holds nothing more, or on the first error of
// fn or of the read. first reports the sequence of the first message, before its batch is
// handed over, so that a caller can size the work; it may be nil.
func readStream(ctx context.Context, s jetstream.Stream, r streamRange, first func(seq uint64), fn func([]message) error) error {
	if r.last == 0 || r.fromSeq > r.last {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.StreamSubjects},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	switch {
	case r.fromSeq > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = r.fromSeq
	case !r.fromTime.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := r.fromTime
		cfg.OptStartTime = &t
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(readAhead))
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	defer it.Stop()
	// Next does not watch ctx: stopping the iterator ends a Next in progress.
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer stopOnCancel()

	batch := make([]message, 0, readBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := fn(batch)
		batch = make([]message, 0, readBatch)
		return err
	}
	started := false
	for {
		msg, err := it.Next(jetstream.NextMaxWait(readIdle))
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrTimeout):
			// Quiet: either nothing is left after our position, or the server is slow.
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("read stream: %w", err)
			}
			if info.NumPending == 0 {
				return flush()
			}
			continue
		case err != nil:
			return fmt.Errorf("read stream: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		seq := meta.Sequence.Stream
		if seq > r.last {
			return flush()
		}
		if !started {
			started = true
			if first != nil {
				first(seq)
			}
		}
		m := message{seq: seq, subject: msg.Subject(), data: msg.Data()}
		m.event, m.reason = parse(m.subject, m.data)
		batch = append(batch, m)
		if seq == r.last || meta.NumPending == 0 {
			return flush()
		}
		if len(batch) == readBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
