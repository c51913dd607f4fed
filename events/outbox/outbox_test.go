package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// patience bounds every wait for something that must eventually happen.
const patience = 20 * time.Second

type env struct {
	dbURL  string
	pool   *pgxpool.Pool
	js     jetstream.JetStream // connected as account, which runs the relay
	reader jetstream.JetStream // connected as blog, which reads what the relay published
	srv    *natstest.Server
}

func newEnv(t *testing.T) env {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	srv := natstest.New(t)
	e := env{
		dbURL:  dbURL,
		pool:   newPool(t, dbURL),
		js:     srv.JetStream(t, natstest.Account),
		reader: srv.JetStream(t, natstest.Blog),
		srv:    srv,
	}
	if err := outbox.Migrate(context.Background(), e.pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return e
}

func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// start runs a relay until the returned stop is called (or the test ends).
func start(t *testing.T, cfg outbox.RelayConfig) (stop func()) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	return servicetest.Go(t, outbox.NewRelay(cfg).Run)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servicetest.Eventually(t, patience, what, cond)
}

func newEvent(t testing.TB) events.Event {
	t.Helper()
	e, err := events.NewEvent(events.UserCreated, authtest.NewUser(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// add writes n events, one transaction each, and returns them in order.
func add(t testing.TB, pool *pgxpool.Pool, n int) []events.Event {
	t.Helper()
	var evs []events.Event
	for range n {
		e := newEvent(t)
		err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
			return outbox.Add(context.Background(), tx, e)
		})
		if err != nil {
			t.Fatalf("Add: %v", err)
		}
		evs = append(evs, e)
	}
	return evs
}

func status(t testing.TB, pool *pgxpool.Pool) outbox.Stats {
	t.Helper()
	s, err := outbox.Status(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func published(t *testing.T, pool *pgxpool.Pool, n int64) func() bool {
	return func() bool {
		s := status(t, pool)
		return s.Pending == 0 && s.Published == n
	}
}

// stored is a message of the stream.
type stored struct {
	Seq     uint64
	Subject string
	MsgID   string
	EventID uuid.UUID
}

// stream reads every message of the USERS stream in order.
func stream(t *testing.T, js jetstream.JetStream) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		var e events.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("msg %d: %v", seq, err)
		}
		out = append(out, stored{Seq: seq, Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), EventID: e.ID})
	}
	return out
}

// want is what the stream must hold for evs published in order from sequence first.
func want(evs []events.Event, first uint64) []stored {
	var out []stored
	for i, e := range evs {
		out = append(out, stored{Seq: first + uint64(i), Subject: e.Subject(), MsgID: e.ID.String(), EventID: e.ID})
	}
	return out
}

// streamSeqs returns the stream_seq recorded for each event id.
func streamSeqs(t *testing.T, pool *pgxpool.Pool) map[uuid.UUID]uint64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT event_id, stream_seq FROM outbox WHERE stream_seq IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]uint64{}
	var id uuid.UUID
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
		out[id] = uint64(seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func seqsOf(msgs []stored) map[uuid.UUID]uint64 {
	out := map[uuid.UUID]uint64{}
	for _, m := range msgs {
		out[m.EventID] = m.Seq
	}
	return out
}

func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			m := mf.GetMetric()[0]
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestRelayPublishesInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	evs := add(t, e.pool, 130) // more than one batch
	reg := prometheus.NewRegistry()
	// No stream yet: the relay creates it.
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, Metrics: reg})
	eventually(t, "all published", published(t, e.pool, int64(len(evs))))

	msgs := stream(t, e.reader)
	if diff := cmp.Diff(want(evs, 1), msgs); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(seqsOf(msgs), streamSeqs(t, e.pool)); diff != "" {
		t.Errorf("recorded stream_seq (-stream +outbox):\n%s", diff)
	}
	if got := metric(t, reg, "outbox_published_total"); got != float64(len(evs)) {
		t.Errorf("published metric = %v, want %d", got, len(evs))
	}
	eventually(t, "pending gauge 0", func() bool { return metric(t, reg, "outbox_pending_events") == 0 })

	// The relay keeps running: a later Add is published on its NOTIFY.
	more := add(t, e.pool, 1)
	eventually(t, "later event published", published(t, e.pool, int64(len(evs)+1)))
	if diff := cmp.Diff(want(append(evs, more...), 1), stream(t, e.reader)); diff != "" {
		t.Errorf("stream after a later Add (-want +got):\n%s", diff)
	}
}

func TestAddRejectsInvalidEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ev := newEvent(t)
	ev.User.Email = ""
	err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
		return outbox.Add(context.Background(), tx, ev)
	})
	if !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("Add(invalid) = %v, want ErrInvalid", err)
	}
	if s := status(t, e.pool); s.Pending != 0 {
		t.Errorf("pending = %d, want 0", s.Pending)
	}
}

// TestGapTrap is E15: a transaction that took a lower id but commits after a later one has been
// published must still be published.
func TestGapTrap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tx1, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	late := newEvent(t)
	if err := outbox.Add(ctx, tx1, late); err != nil { // takes id 1
		t.Fatal(err)
	}
	early := add(t, e.pool, 1) // takes id 2, commits first

	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js})
	eventually(t, "committed event published", published(t, e.pool, 1))
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "late event published", published(t, e.pool, 2))
	if diff := cmp.Diff(want([]events.Event{early[0], late}, 1), stream(t, e.reader)); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
}

func TestRelaySurvivesNATSOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, Metrics: reg, PublishTimeout: 300 * time.Millisecond})
	before := add(t, e.pool, 5)
	eventually(t, "published before the outage", published(t, e.pool, 5))

	e.srv.Stop()
	during := add(t, e.pool, 20)
	eventually(t, "publish failures", func() bool { return metric(t, reg, "outbox_publish_errors_total") >= 2 })
	if s := status(t, e.pool); s.Pending != 20 || s.Published != 5 {
		t.Errorf("status during the outage = %+v, want 20 pending, 5 published", s)
	}
	e.srv.Start()
	eventually(t, "published after the outage", published(t, e.pool, 25))

	// Publishes that timed out may still have reached the stream: their retries, with the same
	// Nats-Msg-Id, are de-duplicated. Every event is there once, in order.
	msgs := stream(t, e.reader)
	if diff := cmp.Diff(want(append(before, during...), 1), msgs); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(seqsOf(msgs), streamSeqs(t, e.pool)); diff != "" {
		t.Errorf("recorded stream_seq (-stream +outbox):\n%s", diff)
	}
}

func TestTwoRelays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := newPool(t, e.dbURL) // a second instance of the service
	stopA := start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js})
	start(t, outbox.RelayConfig{Pool: other, JS: e.js})

	var mu sync.Mutex
	ids := map[uuid.UUID]bool{}
	var wg sync.WaitGroup
	for _, pool := range []*pgxpool.Pool{e.pool, other, e.pool, other} {
		wg.Go(func() {
			for _, ev := range add(t, pool, 15) {
				mu.Lock()
				ids[ev.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	eventually(t, "all published", published(t, e.pool, 60))

	// Stop one relay (perhaps the active one): the other takes over.
	stopA()
	for _, ev := range add(t, other, 10) {
		ids[ev.ID] = true
	}
	eventually(t, "published after a relay stopped", published(t, e.pool, 70))

	msgs := stream(t, e.reader)
	got := map[uuid.UUID]bool{}
	for _, m := range msgs {
		if got[m.EventID] {
			t.Errorf("event %s in the stream twice", m.EventID)
		}
		got[m.EventID] = true
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("events in the stream (-added +stream):\n%s", diff)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if s := status(t, e.pool); s != (outbox.Stats{}) {
		t.Errorf("Status of an empty outbox = %+v, want zero", s)
	}
	add(t, e.pool, 3)
	if _, err := e.pool.Exec(ctx, `UPDATE outbox SET created_at = now() - interval '1 hour' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	s := status(t, e.pool)
	if s.Pending != 3 || s.Published != 0 || s.OldestPendingAge < time.Hour || s.OldestPendingAge > 2*time.Hour {
		t.Errorf("Status = %+v, want 3 pending, 0 published, oldest about 1h", s)
	}
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js})
	eventually(t, "all published", published(t, e.pool, 3))
	if s := status(t, e.pool); s != (outbox.Stats{Published: 3}) {
		t.Errorf("Status after publishing = %+v, want 3 published only", s)
	}
}

func TestHas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	evs := add(t, e.pool, 2)
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js})
	eventually(t, "both published", published(t, e.pool, 2))
	for _, tt := range []struct {
		id   uuid.UUID
		want bool
	}{{evs[0].ID, true}, {evs[1].ID, true}, {uuid.New(), false}} {
		got, err := outbox.Has(context.Background(), e.pool, tt.id)
		if err != nil || got != tt.want {
			t.Errorf("Has(%s) = %v, %v; want %v (published rows are kept)", tt.id, got, err, tt.want)
		}
	}
}

func TestRepublishRestoresRecreatedStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	evs := add(t, e.pool, 12)
	stop := start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js})
	eventually(t, "all published", published(t, e.pool, 12))
	stop()

	// The stream is lost and recreated empty; it starts again from sequence 1 once a message is stored.
	if err := e.srv.JetStream(t, natstest.Ops).DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStream(ctx, e.js); err != nil {
		t.Fatal(err)
	}
	if n, err := outbox.Republish(ctx, e.pool, e.js, time.Now().Add(time.Hour)); err != nil || n != (outbox.Republished{}) {
		t.Errorf("Republish(since the future) = %+v, %v; want nothing, nil", n, err)
	}
	n, err := outbox.Republish(ctx, e.pool, e.js, time.Time{})
	if want := (outbox.Republished{Published: len(evs)}); err != nil || n != want {
		t.Fatalf("Republish = %+v, %v; want %+v, nil", n, err, want)
	}
	msgs := stream(t, e.reader)
	if diff := cmp.Diff(want(evs, 1), msgs); diff != "" {
		t.Errorf("stream after Republish (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(seqsOf(msgs), streamSeqs(t, e.pool)); diff != "" {
		t.Errorf("recorded stream_seq (-stream +outbox):\n%s", diff)
	}

	// Again, inside the duplicate window: nothing is stored twice.
	if n, err := outbox.Republish(ctx, e.pool, e.js, time.Time{}); err != nil || n != (outbox.Republished{Published: len(evs), Duplicates: len(evs)}) {
		t.Fatalf("second Republish = %+v, %v; want all %d published and reported as duplicates", n, err, len(evs))
	}
	if diff := cmp.Diff(want(evs, 1), stream(t, e.reader)); diff != "" {
		t.Errorf("stream after a second Republish (-want +got):\n%s", diff)
	}
}

// TestRelayWakesOnEveryCommit gives the relay no polling to fall back on: events committed while
// it publishes a backlog, one transaction each, are all published on their NOTIFY alone.
func TestRelayWakesOnEveryCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, Poll: time.Hour})
	var wg sync.WaitGroup
	wg.Go(func() { addInterleaved(t, e.pool, 100, 20, nil) })
	wg.Go(func() { add(t, e.pool, 200) })
	wg.Wait()
	eventually(t, "all published", published(t, e.pool, 100*20+200))
}

// TestOrderPerUserAcrossOutages stops the broker twice while the relay drains a backlog in which
// every user has many changes: publishes in flight fail in the middle of the window, while later
// ones may be stored (the client's reconnect buffer). An event of a user must still never be
// stored after a later event of that user, and every event is stored once.
func TestOrderPerUserAcrossOutages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	evs := addInterleaved(t, e.pool, 20, 250, nil)

	if _, err := bus.EnsureStream(ctx, e.js); err != nil {
		t.Fatal(err)
	}
	// The stream's count, to stop the broker in the middle of the drain (read as the operator,
	// whose connection, like every other, comes back after each restart).
	ops := e.srv.JetStream(t, natstest.Ops)
	stored := func() uint64 {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := ops.Stream(ctx, events.StreamName)
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, PublishTimeout: 300 * time.Millisecond})
	for _, at := range []int{len(evs) / 5, len(evs) / 2} {
		eventually(t, "the drain under way", func() bool { return stored() >= uint64(at) })
		e.srv.Stop()
		e.srv.Start()
	}
	eventually(t, "all published", published(t, e.pool, int64(len(evs))))
	checkOrderPerUser(t, e, evs)
}

// TestOrderPerUserAfterRejection has the stream refuse one event in the middle of a backlog (it
// is larger than the stream then accepts) while it stores those around it, as a stream does that
// fails some publishes of a window: no later event of that user may be stored before it.
func TestOrderPerUserAfterRejection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const users, changes, bigUser, bigVersion = 10, 30, 3, 5
	evs := addInterleaved(t, e.pool, users, changes, func(user, version int, u *events.User) {
		if user == bigUser && version == bigVersion {
			u.DisplayName = strings.Repeat("x", 4000)
		}
	})
	ops := e.srv.JetStream(t, natstest.Ops)
	cfg := bus.StreamConfig()
	cfg.MaxMsgSize = 2000
	if _, err := ops.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, Metrics: reg})
	eventually(t, "the refusal retried", func() bool { return metric(t, reg, "outbox_publish_errors_total") >= 3 })
	if s := status(t, e.pool); s.Published == 0 {
		t.Errorf("published = 0 while the stream refused one event; want the events before it and beside it published")
	}
	cfg.MaxMsgSize = -1
	if _, err := ops.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "all published", published(t, e.pool, int64(len(evs))))
	checkOrderPerUser(t, e, evs)
}

// addInterleaved writes changes events for each of users users, in one transaction, round robin
// (every user's first, then every user's second...), so that any window of the relay holds many
// changes of every user; change, if not nil, alters version v (from 1) of user i before it is
// written. It returns the events in order.
func addInterleaved(t *testing.T, pool *pgxpool.Pool, users, changes int, change func(i, v int, u *events.User)) []events.Event {
	t.Helper()
	ctx := context.Background()
	us := make([]events.User, users)
	for i := range us {
		us[i] = authtest.NewUser()
	}
	var evs []events.Event
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for v := 1; v <= changes; v++ {
			for i := range us {
				u := us[i]
				u.Version = int64(v)
				if change != nil {
					change(i, v, &u)
				}
				typ := events.UserRoleChanged
				if v == 1 {
					typ = events.UserCreated
				}
				ev, err := events.NewEvent(typ, u, time.Now())
				if err != nil {
					return err
				}
				if err := outbox.Add(ctx, tx, ev); err != nil {
					return err
				}
				evs = append(evs, ev)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkOrderPerUser checks that the stream holds each of evs once, every user's events in the
// order of their versions, and that the outbox recorded the sequence of each.
func checkOrderPerUser(t *testing.T, e env, evs []events.Event) {
	t.Helper()
	msgs := stream(t, e.reader)
	version := map[uuid.UUID]int64{}
	for _, ev := range evs {
		version[ev.ID] = ev.User.Version
	}
	last := map[string]int64{} // user (the subject's last token) → version last stored
	for _, m := range msgs {
		u := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		if v := version[m.EventID]; v <= last[u] {
			t.Errorf("seq %d: version %d of user %s stored after version %d", m.Seq, v, u, last[u])
		} else {
			last[u] = v
		}
	}
	if len(msgs) != len(evs) {
		t.Errorf("stream holds %d messages, want %d (each event once)", len(msgs), len(evs))
	}
	if diff := cmp.Diff(seqsOf(msgs), streamSeqs(t, e.pool)); diff != "" {
		t.Errorf("recorded stream_seq (-stream +outbox):\n%s", diff)
	}
}
