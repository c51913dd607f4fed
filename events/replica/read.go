package replica

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/authmesh/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// readBatch is how many messages a read of the stream hands over at a time, and the unit of
	// work of a decoding worker.
	readBatch = 1024
	// readAhead is how many messages the ordered consumer keeps in flight.
	readAhead = 32768
	// readQueue is how many batches may wait between the ordered consumer and the reader's
	// caller, parsed or to be parsed: a few per worker keep the workers busy, and a parsed
	// message waiting is heap that every garbage collection scans.
	readQueue = 8
	// readIdle is how long a read waits for the next message before it asks the server whether
	// any is left.
	readIdle = time.Second
)

// streamRange is the part of the stream a read covers: from a sequence, from a time, or from the
// start (both zero), up to and including last; or, with lastPerSubject, only the last message of
// each subject, up to last. subjects narrows the read (default: the whole stream).
type streamRange struct {
	fromSeq        uint64
	fromTime       time.Time
	last           uint64
	lastPerSubject bool
	subjects       []string
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

// batch is a run of messages in stream order, handed from the ordered consumer to the workers
// that parse it and then, in order, to the caller of readStream.
type batch struct {
	msgs   []message
	parsed chan struct{} // closed once every message is parsed
}

// readStream reads the messages of r in stream order with an ordered consumer (no state kept on
// the server beyond the read) and hands them to fn, parsed, in batches of up to readBatch, from
// the calling goroutine. It returns when r.last is reached, when the stream holds nothing more,
// or on the first error of fn or of the read. first reports the sequence of the first message,
// before its batch is handed over, so that a caller can size the work; it may be nil.
//
// Parsing (the JSON decode, which costs as much as the read itself) runs on every core, in
// workers, while the consumer reads on and fn works: the read is one goroutine that only
// receives, and fn sees the batches in stream order all the same.
func readStream(ctx context.Context, s jetstream.Stream, r streamRange, first func(seq uint64), fn func([]message) error) error {
	if r.last == 0 || r.fromSeq > r.last {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ordered := make(chan *batch, readQueue)
	work := make(chan *batch, readQueue)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for b := range work {
				for i := range b.msgs {
					m := &b.msgs[i]
					m.event, m.reason = parse(m.subject, m.data)
				}
				close(b.parsed)
			}
		})
	}
	var readErr error
	wg.Go(func() {
		defer close(work)
		defer close(ordered)
		readErr = receive(ctx, s, r, func(msgs []message) {
			b := &batch{msgs: msgs, parsed: make(chan struct{})}
			// A send blocks while the workers or the caller are behind, which holds the read
			// back. A batch goes to work first, so that the one the caller waits for is parsed.
			work <- b
			ordered <- b
		})
	})
	var fnErr error
	for b := range ordered {
		<-b.parsed
		if fnErr != nil {
			continue // drain, so that the reader is not left blocked
		}
		if first != nil {
			first(b.msgs[0].seq)
			first = nil
		}
		if fnErr = fn(b.msgs); fnErr != nil {
			cancel()
		}
	}
	wg.Wait()
	if fnErr != nil {
		return fnErr
	}
	return readErr
}

// receive reads the messages of r and hands them unparsed to send, in batches of up to
// readBatch, until r.last, the end of the stream, ctx's end or an error of the read.
func receive(ctx context.Context, s jetstream.Stream, r streamRange, send func([]message)) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    r.subjects,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if len(cfg.FilterSubjects) == 0 {
		cfg.FilterSubjects = []string{events.StreamSubjects}
	}
	switch {
	case r.lastPerSubject:
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
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

	msgs := make([]message, 0, readBatch)
	flush := func() {
		if len(msgs) > 0 {
			send(msgs)
			msgs = make([]message, 0, readBatch)
		}
	}
	defer flush()
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
				return nil
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
			return nil
		}
		msgs = append(msgs, message{seq: seq, subject: msg.Subject(), data: msg.Data()})
		if seq == r.last || meta.NumPending == 0 {
			return nil
		}
		if len(msgs) == readBatch {
			flush()
		}
	}
}
