package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/authmesh/events"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

const (
	// pageSize is how many pending rows one read takes.
	pageSize = 1000
	// window is how many publishes may await their acknowledgement at once.
	window = 1000
	// markBatch is how many acknowledged rows are gathered before they are marked in one UPDATE;
	// whatever is left is marked when the pass ends.
	markBatch = 500
	// dbTimeout bounds each statement of the relay, even after ctx is done (the acknowledged rows of
	// a stopping relay are still marked).
	dbTimeout = 10 * time.Second
)

// errNoProgress is the failure of a publish whose acknowledgement did not come within the publish
// timeout of the previous one.
var errNoProgress = errors.New("no acknowledgement within the publish timeout")

// A pass reads the pending rows once, a page at a time in id order, and publishes them
// asynchronously, up to window publishes awaiting their acknowledgement at once. Only the relay's
// goroutine uses it.
//
// Order per user. JetStream stores the messages of one connection in the order they were sent, but
// a publish in the middle of a window can fail while later ones are stored: a broker that goes away
// loses what was in the socket yet stores what the client buffered while it reconnected; during a
// stream-leader election some publishes get "no responders" while later ones reach the new leader;
// a stream may refuse one message and take the next. Retrying the failed one would store it after
// them. So a pass never has two events of one user in flight: an event is sent only once every
// earlier event of its user has been acknowledged, that is, stored. A failed publish can then be
// overtaken only by events of other users, and it is sent again before any later event of its own
// user. Rows of a user who has an event in flight are held back, in id order, while the rows of
// other users pass them.
//
// No transaction. The relay used to publish inside a transaction that locked its batch. With
// publishes in flight, that transaction would sit idle while acknowledgements come in, and for as
// long as publishing stalls in an outage or an election (4 to 9 s): the services' sessions end a
// transaction idle for 10 s (events/pg), and the marks would go with it; meanwhile it would hold
// its row locks and the vacuum horizon. Nothing needs it: the advisory lock already makes this
// relay the only publisher, each read is one statement, and acknowledged rows are marked by short
// UPDATEs, each committed at once, while publishing goes on. A crash between an acknowledgement
// and its mark publishes the row again, which the stream de-duplicates by its Nats-Msg-Id.
//
// Late commits. The reads of a pass page forward by id. A row with a lower id that commits after
// the pass went past it is read by the next pass, which starts again from the lowest pending id;
// the row's NOTIFY, received meanwhile, starts that pass as soon as this one ends. For one user, id
// order is commit order: account writes a user's events in the transactions that update the
// user's row, which serialize on it.
type pass struct {
	conn      *pgx.Conn
	link      *link
	timeout   time.Duration
	published prometheus.Counter
	tracer    trace.Tracer
	log       *slog.Logger

	// limit is the publishes in flight at most: 1 after a failure, until a first acknowledgement
	// shows that the stream answers again, window otherwise.
	limit int
	// after is the id of the last row read; more says that the last read filled its page.
	after int64
	more  bool

	queue   []row            // rows read and not yet sent, in id order
	held    map[string][]row // rows waiting for an earlier event of their user, in id order
	ready   []row            // held rows whose user has nothing in flight any more: sent first
	nHeld   int              // rows held or ready
	waiting map[string]int   // each user's rows in flight, held or ready

	flight []inFlight // publishes awaiting their acknowledgement, oldest first
	// progress is when the window last moved: the start of the pass or the last acknowledgement.
	progress time.Time
	acked    []acked // acknowledged rows not yet marked
	// marker marks full batches of acknowledged rows while the pass publishes on; nil until the
	// first full batch.
	marker *marker
	// err is the first failure of the pass; nothing is sent after it.
	err error
}

type inFlight struct {
	row  row
	ack  jetstream.PubAckFuture
	sent time.Time
	span trace.Span // the publish span of a row with a trace context, else nil
}

type acked struct{ id, seq int64 }

// drain publishes the pending rows in one pass: it returns nil once every row it read has been
// acknowledged and marked, a *publishError when a publish failed (the rows acknowledged before and
// beside it are marked), another error when the database failed. After ctx is done it sends
// nothing more, but waits for the publishes in flight and marks them. cautious starts the pass
// with a window of one, as after a failure.
func (r *Relay) drain(ctx context.Context, conn *pgx.Conn, l *link, cautious bool) (err error) {
	p := &pass{
		conn: conn, link: l, timeout: r.cfg.PublishTimeout, published: r.m.published, tracer: r.tracer, log: r.cfg.Log,
		limit: window, more: true,
		held: map[string][]row{}, waiting: map[string]int{},
		progress: time.Now(),
	}
	if cautious {
		p.limit = 1
	}
	defer func() {
		if p.marker == nil {
			return
		}
		if merr := p.marker.wait(); merr != nil {
			err = merr
		}
	}()
	for {
		if p.err == nil && ctx.Err() == nil {
			if p.more && len(p.queue)+p.nHeld < pageSize {
				if err := p.read(ctx); err != nil {
					return err
				}
			}
			p.send()
		}
		if len(p.flight) == 0 {
			if err := p.mark(ctx); err != nil {
				return err
			}
			if p.err != nil || ctx.Err() != nil || (!p.more && len(p.queue) == 0 && p.nHeld == 0) {
				return p.err
			}
			continue
		}
		p.await()
		if len(p.acked) >= markBatch {
			if p.marker == nil {
				p.marker = startMarker(ctx, r.cfg.Pool, p.published)
			}
			if err := p.marker.add(p.acked); err != nil {
				return err
			}
			p.acked = nil
		}
	}
}

// read appends the next page of pending rows to the queue: a single row while the window is one,
// as after a failure (a retry every 100 ms during an election should not read a page each time).
func (p *pass) read(ctx context.Context) error {
	const pending = `SELECT ` + rowColumns + ` FROM outbox
		WHERE published_at IS NULL AND id > $1 ORDER BY id LIMIT $2`
	size := pageSize
	if p.limit == 1 {
		size = 1
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dbTimeout)
	defer cancel()
	rows, err := p.conn.Query(ctx, pending, p.after, size)
	if err != nil {
		return fmt.Errorf("select pending: %w", err)
	}
	page, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return fmt.Errorf("select pending: %w", err)
	}
	p.more = len(page) == size
	if len(page) > 0 {
		p.after = page[len(page)-1].ID
	}
	p.queue = append(p.queue, page...)
	return nil
}

// send publishes rows while the window has room: first the held rows that may go now, then the
// queue, holding back each row whose user has an earlier one in flight or held.
func (p *pass) send() {
	for len(p.flight) < p.limit {
		ev, ok := p.next()
		if !ok {
			return
		}
		if !p.link.nc.IsConnected() {
			// The client would buffer the publish until it reconnects; the relay waits for that
			// itself, and sends afresh.
			p.err = &publishError{row: ev, err: fmt.Errorf("publish event %s: %w", ev.EventID, nats.ErrDisconnected)}
			return
		}
		ctx, span := context.Background(), trace.Span(nil)
		if ev.Trace != "" {
			ctx, span = startPublish(p.tracer, ev, time.Now())
		}
		msg := ev.message(ctx)
		// No retries inside the client: a "no responders" is reported at once, and the relay
		// retries the pass itself.
		ack, err := p.link.pub.PublishMsgAsync(msg,
			jetstream.WithMsgID(ev.EventID.String()),
			jetstream.WithExpectStream(events.StreamName),
			jetstream.WithRetryAttempts(0))
		if err != nil {
			p.err = &publishError{row: ev, err: fmt.Errorf("publish event %s: %w", ev.EventID, err)}
			endPublish(span, nil, p.err)
			return
		}
		p.flight = append(p.flight, inFlight{row: ev, ack: ack, sent: time.Now(), span: span})
	}
}

// next returns the next row to send, if any may go now.
func (p *pass) next() (row, bool) {
	if len(p.ready) > 0 {
		ev := p.ready[0]
		p.ready = p.ready[1:]
		p.nHeld--
		return ev, true
	}
	for len(p.queue) > 0 {
		ev := p.queue[0]
		p.queue = p.queue[1:]
		u := ev.user()
		p.waiting[u]++
		if p.waiting[u] == 1 {
			return ev, true
		}
		p.held[u] = append(p.held[u], ev)
		p.nHeld++
	}
	return row{}, false
}

// await waits for the oldest publish in flight to be acknowledged or to fail. It fails when no
// acknowledgement has come for the publish timeout since the window last moved or since it was
// sent, whichever is later: a stream that is slow but acknowledging is not failed, however many
// publishes wait behind.
func (p *pass) await() {
	head := p.flight[0]
	p.flight = p.flight[1:]
	var (
		ack *jetstream.PubAck
		err error
	)
	select {
	case ack = <-head.ack.Ok():
	case err = <-head.ack.Err():
	default:
		t := time.NewTimer(time.Until(later(head.sent, p.progress).Add(p.timeout)))
		select {
		case ack = <-head.ack.Ok():
		case err = <-head.ack.Err():
		case <-t.C:
			err = errNoProgress
		}
		t.Stop()
	}
	if err != nil {
		err = &publishError{row: head.row, err: fmt.Errorf("publish event %s: %w", head.row.EventID, err)}
		endPublish(head.span, nil, err)
		if p.err == nil {
			p.err = err
		}
		return
	}
	endPublish(head.span, ack, nil)
	p.progress = time.Now()
	p.limit = window
	p.acked = append(p.acked, acked{id: head.row.ID, seq: int64(ack.Sequence)})
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("event published", head.row.logArgs("stream_seq", ack.Sequence, "duplicate", ack.Duplicate)...)
	}
	u := head.row.user()
	if p.waiting[u]--; p.waiting[u] == 0 {
		delete(p.waiting, u)
	}
	if h := p.held[u]; len(h) > 0 {
		p.ready = append(p.ready, h[0])
		if len(h) == 1 {
			delete(p.held, u)
		} else {
			p.held[u] = h[1:]
		}
	}
}

// mark marks the acknowledged rows left, on the relay's connection.
func (p *pass) mark(ctx context.Context) error {
	if err := mark(ctx, p.conn, p.acked, p.published); err != nil {
		return err
	}
	p.acked = p.acked[:0]
	return nil
}

// A marker marks batches of acknowledged rows on a pooled connection, so that the relay goes on
// publishing meanwhile: an UPDATE of a batch costs as much as publishing it.
type marker struct {
	batches chan []acked
	done    chan struct{}
	err     error // the first failure, read after done
}

func startMarker(ctx context.Context, db execer, published prometheus.Counter) *marker {
	m := &marker{batches: make(chan []acked, 2), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for batch := range m.batches {
			if m.err == nil {
				m.err = mark(ctx, db, batch, published)
			}
		}
	}()
	return m
}

// add hands batch over to be marked, waiting while two batches are still to be marked. It
// returns the marker's failure, if any yet.
func (m *marker) add(batch []acked) error {
	select {
	case m.batches <- batch:
		return nil
	case <-m.done:
		return m.err
	}
}

// wait waits until every batch handed over is marked, and returns the first failure.
func (m *marker) wait() error {
	close(m.batches)
	<-m.done
	return m.err
}

// execer is what mark needs of a connection or pool.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// mark records rows as published, each with its stream sequence, in one UPDATE, and counts them.
// A row already marked (by a relay that held the lock before) keeps its first mark.
func mark(ctx context.Context, db execer, rows []acked, published prometheus.Counter) error {
	if len(rows) == 0 {
		return nil
	}
	const mark = `UPDATE outbox SET published_at = now(), stream_seq = acked.seq
		FROM unnest($1::bigint[], $2::bigint[]) AS acked(id, seq)
		WHERE outbox.id = acked.id AND outbox.published_at IS NULL`
	ids := make([]int64, len(rows))
	seqs := make([]int64, len(rows))
	for i, a := range rows {
		ids[i], seqs[i] = a.id, a.seq
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dbTimeout)
	defer cancel()
	if _, err := db.Exec(ctx, mark, ids, seqs); err != nil {
		return fmt.Errorf("mark %d events published: %w", len(ids), err)
	}
	published.Add(float64(len(ids)))
	return nil
}

// logArgs are the attributes of a log line about the event, then more: its user and its id, which
// every line of the pipeline names (with stream_seq once the stream has stored it), so that one
// event can be followed from account's log to the replicas'.
func (r row) logArgs(more ...any) []any {
	return append([]any{"user_id", r.user(), "event_id", r.EventID.String()}, more...)
}

// user returns the user an event is about, the last token of its subject
// (users.<type>.<user id>): the unit whose order the stream keeps.
func (r row) user() string { return r.Subject[strings.LastIndexByte(r.Subject, '.')+1:] }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
