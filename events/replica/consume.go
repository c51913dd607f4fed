package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/internal/retry"
	"github.com/authmesh/events/pg"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// batchSize caps the events applied in one transaction, and so the events the server sends
	// this instance ahead of their acks.
	batchSize = 256
	// pullExpiry is the life of a pull request. The server sends heartbeats every half of it, so a
	// pull request it lost (a restart, a failover) is noticed and made again within that time.
	pullExpiry = 5 * time.Second
	// stopWait bounds how long a stop waits for the events already sent to this instance, which it
	// applies before returning.
	stopWait = 2 * time.Second
	// batchTimeout bounds the apply, commit and acks of one batch, even after ctx is done. It is
	// below bus.AckWait, so a batch is settled before the server would redeliver it.
	batchTimeout = 8 * time.Second
	// maxNakDelay caps the delay before a batch that failed on a transient error is redelivered:
	// after an outage of Postgres, the replica is at most this late to resume.
	maxNakDelay = 10 * time.Second
	// maxReasonLen caps the reason given to the server with a Term.
	maxReasonLen = 200
)

// item is one delivered message, decoded. A non-empty reason means it cannot be applied and goes
// to dead letters.
type item struct {
	msg       jetstream.Msg
	seq       uint64
	delivered uint64
	event     events.Event
	reason    string
}

// consume applies events until ctx is done. When following the consumer fails (it was deleted,
// NATS stopped answering for it), it declares the consumer again and follows it anew, after a
// delay.
func (r *Replica) consume(ctx context.Context) {
	db := &applyConn{pool: r.cfg.Pool}
	defer db.close()
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		err := r.follow(ctx, db, &bo)
		if ctx.Err() != nil {
			return
		}
		r.cfg.Log.Warn("follow events", "durable", r.cfg.Durable, "err", err)
		if !retry.Sleep(ctx, bo.Next()) {
			return
		}
		r.reensure(ctx)
	}
}

// follow keeps a pull request open on the consumer, so the server sends each event as soon as it
// is stored, without a round trip of ours, and applies the events as they arrive: the first one
// at once, in a batch with whatever else has arrived by then, while the next batch arrives. A
// backlog is thus applied a full batch at a time, and a lone event with no wait. After a batch that
// failed (and was nak'd), it waits bo's next delay. When ctx is done it stops the pull, applies
// the events already sent to it and returns nil; it returns an error when the pull cannot go on.
func (r *Replica) follow(ctx context.Context, db *applyConn, bo *retry.Backoff) error {
	arrived := make(chan jetstream.Msg, batchSize)
	quit := make(chan struct{})
	defer close(quit)
	lost := make(chan error, 1)
	cc, err := r.cons.Consume(func(m jetstream.Msg) {
		select {
		case arrived <- m:
		case <-quit:
			// Nobody will apply it here: have it redelivered now rather than after AckWait.
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(batchSize),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if consumerLost(err) {
				select {
				case lost <- err:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	for {
		select {
		case m := <-arrived:
			if r.handle(ctx, db, withArrived(m, arrived)) {
				bo.Reset()
			} else {
				retry.Sleep(ctx, bo.Next())
			}
		case err := <-lost:
			cc.Stop()
			r.applyArrived(ctx, db, arrived)
			return err
		case <-ctx.Done():
			r.drain(ctx, db, cc, arrived)
			return nil
		}
	}
}

// consumerLost reports whether err, reported while following the consumer, means that the pull
// cannot go on: the consumer is gone, or nothing answers for it. The rest (missed heartbeats,
// reconnections) the client recovers from by pulling again.
func consumerLost(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrBadRequest) ||
		errors.Is(err, jetstream.ErrConnectionClosed)
}

// withArrived returns first and the events that have arrived after it, up to batchSize, without
// waiting for more.
func withArrived(first jetstream.Msg, arrived <-chan jetstream.Msg) []jetstream.Msg {
	msgs := []jetstream.Msg{first}
	for len(msgs) < batchSize {
		select {
		case m := <-arrived:
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

// drain stops the pull and applies the events already sent to this instance, which the client
// hands over until it reports the pull closed, waiting at most stopWait for that.
func (r *Replica) drain(ctx context.Context, db *applyConn, cc jetstream.ConsumeContext, arrived chan jetstream.Msg) {
	cc.Drain()
	closed := cc.Closed()
	timeout := time.NewTimer(stopWait)
	defer timeout.Stop()
	for {
		select {
		case m := <-arrived:
			r.handle(ctx, db, withArrived(m, arrived))
		case <-closed:
			r.applyArrived(ctx, db, arrived)
			return
		case <-timeout.C:
			cc.Stop()
			r.applyArrived(ctx, db, arrived)
			return
		}
	}
}

// applyArrived applies the events that have arrived and are not applied yet.
func (r *Replica) applyArrived(ctx context.Context, db *applyConn, arrived chan jetstream.Msg) {
	for len(arrived) > 0 {
		r.handle(ctx, db, withArrived(<-arrived, arrived))
	}
}

// attach declares the durable consumer, waiting as long as it takes for the stream: account
// creates it, and blog and shop may not (deploy/nats/auth.conf), so a replica started first waits
// for account instead of failing. It reports false when ctx ended first.
func (r *Replica) attach(ctx context.Context) bool {
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	waiting := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := bus.EnsureConsumer(cctx, r.cfg.JS, r.cfg.Durable)
		cancel()
		switch {
		case err == nil:
			r.cons = cons
			r.attached.Store(true)
			r.cfg.Log.Info("replica consumer ready", "stream", events.StreamName, "durable", r.cfg.Durable)
			return true
		case ctx.Err() != nil:
			return false
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if !waiting {
				r.cfg.Log.Info("waiting for the stream; account creates it", "stream", events.StreamName)
				waiting = true
			}
		default:
			r.cfg.Log.Warn("declare replica consumer", "durable", r.cfg.Durable, "err", err)
		}
		if !retry.Sleep(ctx, bo.Next()) {
			return false
		}
	}
}

// reensure declares the consumer again, in case following it failed because it was deleted.
func (r *Replica) reensure(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if cons, err := bus.EnsureConsumer(ctx, r.cfg.JS, r.cfg.Durable); err == nil {
		r.cons = cons
	}
}

// handle applies msgs in one transaction and settles them: ack, or term for dead letters, after
// the commit. When the batch fails on a transient error, it naks the batch and reports false.
// When it fails on an error that a message causes (data exception, constraint), it applies the
// messages one by one and dead-letters the ones that fail, so one message never blocks the rest.
func (r *Replica) handle(ctx context.Context, db *applyConn, msgs []jetstream.Msg) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
	defer cancel()

	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			// Not a message of a consumer: there is no sequence to record it under.
			user, id := msgIDs(m)
			r.cfg.Log.Error("event without metadata, terminated", "user_id", user, "event_id", id, "subject", m.Subject(), "err", err)
			_ = m.TermWithReason("no metadata")
			continue
		}
		r.m.pending.Set(float64(meta.NumPending))
		items = append(items, decode(m, meta))
	}
	if len(items) == 0 {
		return true
	}

	err := r.commit(ctx, db, items)
	if err == nil {
		r.settle(items)
		return true
	}
	if transient(err) {
		r.cfg.Log.Warn("apply batch, will retry", batchLogArgs(items, "err", err)...)
		r.nak(items)
		return false
	}
	r.cfg.Log.Warn("apply batch, applying its events one by one", batchLogArgs(items, "err", err)...)
	for i := range items {
		one := items[i : i+1]
		err := r.commit(ctx, db, one)
		if err != nil && !transient(err) {
			one[0].reason = "apply: " + err.Error()
			r.cfg.Log.Warn("event cannot be applied, dead-lettered", one[0].logArgs("err", err)...)
			err = r.commit(ctx, db, one)
			if err != nil && !transient(err) {
				r.cfg.Log.Error("dead letter cannot be recorded, event terminated", one[0].logArgs("err", err)...)
				err = nil
			}
		}
		if err != nil {
			r.cfg.Log.Warn("apply event, will retry", one[0].logArgs("err", err)...)
			r.nak(items[i:])
			return false
		}
		r.settle(one)
	}
	return true
}

// decode turns m into an item; a message that cannot be applied gets a reason.
func decode(m jetstream.Msg, meta *jetstream.MsgMetadata) item {
	it := item{msg: m, seq: meta.Sequence.Stream, delivered: meta.NumDelivered}
	it.event, it.reason = parse(m.Subject(), m.Data())
	return it
}

// parse decodes and checks a message of the stream. A non-empty reason says why it cannot be
// applied; the durable consumer, rebuilds, verify and retries all judge a message by it.
func parse(subject string, data []byte) (e events.Event, reason string) {
	if err := json.Unmarshal(data, &e); err != nil {
		return e, "decode: " + err.Error()
	}
	if err := e.Validate(); err != nil {
		return e, err.Error()
	}
	id, ok := events.SubjectUser(subject)
	switch {
	case !ok:
		return e, "subject names no user"
	case id != e.User.ID:
		return e, fmt.Sprintf("subject names user %s, payload user %s", id, e.User.ID)
	}
	return e, ""
}

// deadLetter is the dead letter of it, with text made safe for a text column.
func (it item) deadLetter() DeadLetter {
	d := DeadLetter{
		Seq:     it.seq,
		Subject: clean(it.msg.Subject()),
		Data:    it.msg.Data(),
		Reason:  clean(it.reason),
	}
	if id, ok := events.SubjectUser(it.msg.Subject()); ok {
		d.UserID = &id
	}
	return d
}

// logArgs are the attributes of a log line about it, then more: its user, its event id and its
// stream sequence, which every line of the pipeline names (account's outbox names the same), so
// that one event can be followed from account's log to the replicas'. The user is the one its
// subject names (the one a dead letter is recorded for), and the ids are the payload's where the
// message names none.
func (it item) logArgs(more ...any) []any {
	user, id := msgIDs(it.msg)
	if user == "" && it.event.User.ID != uuid.Nil {
		user = it.event.User.ID.String()
	}
	if it.event.ID != uuid.Nil {
		id = it.event.ID.String()
	}
	return append([]any{"user_id", user, "event_id", id, "stream_seq", it.seq}, more...)
}

// msgIDs returns the user and the event id of a message as its subject and its Nats-Msg-Id header
// name them; "" for what they do not name.
func msgIDs(m jetstream.Msg) (user, event string) {
	if id, ok := events.SubjectUser(m.Subject()); ok {
		user = id.String()
	}
	if h := m.Headers(); h != nil {
		event = h.Get(jetstream.MsgIDHeader)
	}
	return user, event
}

// batchLogArgs are the attributes of a log line about a batch, then more: its size and the stream
// sequences of its first and last events (the lines about one of its events name it).
func batchLogArgs(items []item, more ...any) []any {
	return append([]any{"events", len(items), "first_stream_seq", items[0].seq, "last_stream_seq", items[len(items)-1].seq}, more...)
}

// clean makes s valid UTF-8 without NUL, as Postgres text requires.
func clean(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// commit applies items, records their dead letters and the last applied sequence, in one
// transaction on db, sent in one round trip. While it commits, the users of the batch are kept out
// of this instance's view (view.hold). The events that carry a trace context get an apply span.
func (r *Replica) commit(ctx context.Context, db *applyConn, items []item) error {
	start := time.Now()
	b := &pgx.Batch{}
	changed := make([]bool, len(items))
	var dead int
	var last uint64
	for i, it := range items {
		last = max(last, it.seq)
		if it.reason != "" {
			queueDeadLetter(b, it.deadLetter())
			dead++
			continue
		}
		queueApply(b, it.seq, it.event, &changed[i])
	}
	queueSetApplied(b, last)
	users := batchUsers(items)
	spans := r.startApply(items, start)
	r.view.hold(users)
	err := db.run(ctx, b)
	r.view.release(users)
	endApply(spans, items, changed, err)
	if err != nil {
		return err
	}
	var applied int
	now := time.Now()
	for i, c := range changed {
		if c {
			applied++
			r.m.observeLag(items[i].event.OccurredAt, now)
		}
	}
	r.m.batchSeconds.Observe(time.Since(start).Seconds())
	r.m.applied.Add(float64(applied))
	r.m.skipped.Add(float64(len(items) - dead - applied))
	r.m.deadLettered.Add(float64(dead))
	r.m.lastSeq.Set(float64(last))
	return nil
}

// batchUsers returns the users that items change or make stale: those of their events, and those
// their subjects name.
func batchUsers(items []item) []uuid.UUID {
	ids := make([]uuid.UUID, 0, len(items))
	for _, it := range items {
		if it.reason == "" {
			ids = append(ids, it.event.User.ID)
		} else if id, ok := events.SubjectUser(it.msg.Subject()); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// applyConn is the connection the consumer applies events on: its own, taken out of the pool.
// Under load the service's requests hold every connection of the pool, and an apply queued behind
// them would leave the replica stale for longer, for the very requests it makes correct. A
// connection that failed is replaced at the next run.
type applyConn struct {
	pool *pgxpool.Pool
	conn *pgx.Conn
}

// run runs the statements of b in one round trip, as one transaction (the extended protocol's
// implicit one), on a new connection when the last one failed or there is none.
func (a *applyConn) run(ctx context.Context, b *pgx.Batch) error {
	if a.conn == nil || a.conn.IsClosed() {
		a.close()
		pc, err := a.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		a.conn = pc.Hijack()
	}
	err := a.conn.SendBatch(ctx, b).Close()
	if err != nil && a.conn.IsClosed() {
		a.close()
	}
	return err
}

// close closes the connection, if any.
func (a *applyConn) close() {
	if a.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = a.conn.Close(ctx)
	a.conn = nil
}

// settle acks the committed items and terminates the dead-lettered ones. A lost ack only causes a
// redelivery, which the version gate skips.
func (r *Replica) settle(items []item) {
	for _, it := range items {
		var err error
		if it.reason != "" {
			err = it.msg.TermWithReason(truncate(it.reason, maxReasonLen))
		} else {
			err = it.msg.Ack()
		}
		if err != nil {
			r.cfg.Log.Debug("settle event", it.logArgs("err", err)...)
		} else if it.reason == "" && r.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
			r.cfg.Log.Debug("event committed", it.logArgs("type", it.event.Type, "version", it.event.User.Version)...)
		}
	}
}

// nak asks for the redelivery of items after a delay that grows with their deliveries.
func (r *Replica) nak(items []item) {
	for _, it := range items {
		if err := it.msg.NakWithDelay(nakDelay(it.delivered)); err != nil {
			r.cfg.Log.Debug("nak event", it.logArgs("err", err)...)
		}
	}
}

// nakDelay is 1 s after the first delivery, doubling up to maxNakDelay.
func nakDelay(delivered uint64) time.Duration {
	if delivered < 1 {
		delivered = 1
	}
	return min(time.Second<<min(delivered-1, 10), maxNakDelay)
}

// transient reports whether err may go away by itself (connection lost, timeout, server
// shutting down, lock or serialization conflict). The classes that a message causes, data
// exception (22) and integrity constraint violation (23), are not transient; nor would retrying
// help. Everything else, including errors of our own SQL, is retried rather than dead-lettered,
// so that a bug or a missing table never throws events away.
func transient(err error) bool { return !pg.DataError(err) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
