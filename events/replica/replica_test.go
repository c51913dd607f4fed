package replica_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmesh/events/replica"
)

// patience bounds every wait for something that must eventually happen.
const patience = 15 * time.Second

type env struct {
	pool *pgxpool.Pool
	pub  jetstream.JetStream // connected as account, which publishes the events
	js   jetstream.JetStream // connected as blog, whose replica consumes them
	srv  *natstest.Server
}

func newEnv(t *testing.T) env {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := replica.Migrate(context.Background(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	srv := natstest.New(t)
	return env{pool: pool, pub: srv.JetStream(t, natstest.Account), js: srv.JetStream(t, natstest.Blog), srv: srv}
}

func newReplica(t *testing.T, cfg replica.Config) *replica.Replica {
	t.Helper()
	if cfg.Durable == "" {
		cfg.Durable = "test"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	r, err := replica.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// start runs r until the returned stop is called (or the test ends); stop returns Run's result.
func start(t *testing.T, r *replica.Replica) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(patience):
				err = errors.New("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond until it holds, failing the test after patience.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servicetest.Eventually(t, patience, what, cond)
}

func publishRaw(t *testing.T, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, subject, data)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func publishEvent(t *testing.T, js jetstream.JetStream, subject string, e events.Event) uint64 {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return publishRaw(t, js, subject, data)
}

func event(t *testing.T, u events.User) events.Event {
	t.Helper()
	e, err := events.NewEvent(events.UserRoleChanged, u, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func applied(t *testing.T, pool *pgxpool.Pool) uint64 {
	t.Helper()
	seq, err := replica.Applied(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func consumerInfo(t *testing.T, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := js.Consumer(ctx, events.StreamName, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// metric sums the values (the sample counts, for histograms) of the series of name whose labels
// include the given name/value pairs.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// TestRunWaitsForStream: a replica started before account has created the stream (which blog and
// shop may not create) is not ready and waits, then applies the first events once it exists.
func TestRunWaitsForStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	time.Sleep(300 * time.Millisecond) // Run has looked for the stream and not found it
	if err := r.Ready(t.Context()); !errors.Is(err, replica.ErrNotAttached) {
		t.Fatalf("Ready() before the stream exists = %v, want ErrNotAttached", err)
	}
	u := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, u) // creates the stream, as account does
	eventually(t, "ready once the stream exists", func() bool { return r.Ready(t.Context()) == nil })
	got, err := r.User(t.Context(), u.ID, u.Version)
	if err != nil || got.Version != u.Version {
		t.Fatalf("User() = %+v, %v; want version %d", got, err, u.Version)
	}
}

func TestApplyVersionGate(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := replica.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		versions    []int64 // in delivery order
		wantChanged []bool
		wantVersion int64
	}{
		{"first", []int64{1}, []bool{true}, 1},
		{"duplicate", []int64{1, 1}, []bool{true, false}, 1},
		{"in order", []int64{1, 2, 3}, []bool{true, true, true}, 3},
		{"reorder v3 then v2", []int64{1, 3, 2}, []bool{true, true, false}, 3},
		{"replay", []int64{1, 2, 3, 1, 2, 3}, []bool{true, true, true, false, false, false}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := authtest.NewUser()
			state := func(v int64) events.User {
				u := base
				u.Version = v
				u.DisplayName = fmt.Sprintf("at v%d", v)
				if v%2 == 0 {
					u.Roles = []string{events.RoleUser, events.RoleAdmin}
				}
				return u
			}
			for i, v := range tt.versions {
				var changed bool
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var err error
					changed, err = replica.Apply(ctx, tx, uint64(i+1), event(t, state(v)))
					return err
				})
				if err != nil {
					t.Fatalf("replica.Apply v%d: %v", v, err)
				}
				if changed != tt.wantChanged[i] {
					t.Errorf("replica.Apply v%d (#%d) changed = %v, want %v", v, i+1, changed, tt.wantChanged[i])
				}
			}
			got, found, stale, err := replica.Lookup(ctx, pool, base.ID)
			if err != nil || !found || stale {
				t.Fatalf("lookup = found %v, stale %v, err %v; want found", found, stale, err)
			}
			if diff := cmp.Diff(state(tt.wantVersion), got); diff != "" {
				t.Errorf("replica row (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunAppliesBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Metrics: reg})

	// Every user gets v1, v3, then v2: v2 arrives late and is skipped.
	const users = 50
	want := map[uuid.UUID]events.User{}
	for range users {
		u := authtest.NewUser()
		for _, v := range []int64{1, 3, 2} {
			u.Version = v
			u.DisplayName = fmt.Sprintf("v%d", v)
			authtest.PublishUser(t, e.pub, events.UserRoleChanged, u)
		}
		u.Version, u.DisplayName = 3, "v3"
		want[u.ID] = u
	}
	start(t, r)
	eventually(t, "all applied", func() bool { return applied(t, e.pool) == 3*users })

	// Acked after the commit that counted them.
	eventually(t, "all acked", func() bool {
		info := consumerInfo(t, e.js, "test")
		return info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 3*users
	})

	for id, w := range want {
		got, err := r.User(context.Background(), id, 3)
		if err != nil {
			t.Fatalf("User(%s): %v", id, err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("User(%s) (-want +got):\n%s", id, diff)
		}
	}
	if got := metric(t, reg, "replica_events_applied_total"); got != 2*users {
		t.Errorf("applied = %v, want %v", got, 2*users)
	}
	if got := metric(t, reg, "replica_events_skipped_total"); got != users {
		t.Errorf("skipped = %v, want %v", got, users)
	}
	if got := metric(t, reg, "replica_batch_apply_seconds"); got < 1 || got >= 3*users {
		t.Errorf("batches = %v, want at least 1 and fewer than the %d events", got, 3*users)
	}
}

func TestAckAfterCommit(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	good, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(good.Close)
	if err := replica.Migrate(ctx, good); err != nil {
		t.Fatal(err)
	}
	broken, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // every transaction fails: the database is unreachable for this instance
	srv := natstest.New(t)
	js := srv.JetStream(t, natstest.Blog)

	u := authtest.NewUser()
	authtest.PublishUser(t, srv.JetStream(t, natstest.Account), events.UserCreated, u)
	a := newReplica(t, replica.Config{Pool: broken, JS: js, Durable: "shared"})
	stopA := start(t, a)
	eventually(t, "consumer declared", func() bool { return a.Ready(t.Context()) == nil })
	eventually(t, "event delivered to the broken instance", func() bool {
		return consumerInfo(t, js, "shared").Delivered.Consumer >= 1
	})
	if err := stopA(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if info := consumerInfo(t, js, "shared"); info.AckFloor.Stream != 0 {
		t.Fatalf("ack floor = %d after failed commits, want 0 (acked before commit)", info.AckFloor.Stream)
	}

	b := newReplica(t, replica.Config{Pool: good, JS: js, Durable: "shared", Wait: patience})
	start(t, b)
	got, err := b.User(ctx, u.ID, 1)
	if err != nil {
		t.Fatalf("User after redelivery: %v", err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("User (-want +got):\n%s", diff)
	}
	if info := consumerInfo(t, js, "shared"); info.Delivered.Consumer < 2 {
		t.Errorf("deliveries = %d, want at least 2 (redelivered)", info.Delivered.Consumer)
	}
}

func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Metrics: reg, Wait: 200 * time.Millisecond})

	first := authtest.NewUser()
	publishEvent(t, e.pub, events.Subject(events.UserCreated, first.ID), event(t, first))

	garbled := uuid.New()
	seqGarbled := publishRaw(t, e.pub, events.Subject(events.UserCreated, garbled), []byte("{not json"))

	invalid := uuid.New()
	bad, _ := json.Marshal(map[string]any{"id": uuid.New(), "type": "user.created", "user": map[string]any{"id": invalid}})
	seqInvalid := publishRaw(t, e.pub, events.Subject(events.UserCreated, invalid), bad)

	payloadUser, subjectUser := authtest.NewUser(), uuid.New()
	seqMismatch := publishEvent(t, e.pub, events.Subject(events.UserCreated, subjectUser), event(t, payloadUser))

	// Valid JSON and a valid event, but Postgres refuses the NUL: the batch fails on a data
	// exception, and the event is found by applying the batch one by one.
	nul := authtest.NewUser()
	nul.DisplayName = "a\x00b"
	seqNUL := publishEvent(t, e.pub, events.Subject(events.UserCreated, nul.ID), event(t, nul))

	seqNoUser := publishRaw(t, e.pub, "users.created.not-a-uuid", []byte("\xff\xfe"))

	last := authtest.NewUser()
	seqLast := publishEvent(t, e.pub, events.Subject(events.UserCreated, last.ID), event(t, last))

	start(t, r)
	eventually(t, "all handled", func() bool { return applied(t, e.pool) == seqLast })

	dls, err := replica.DeadLetters(context.Background(), e.pool)
	if err != nil {
		t.Fatal(err)
	}
	type dl struct {
		Seq    uint64
		UserID *uuid.UUID
		Reason string // prefix
	}
	want := []dl{
		{seqGarbled, &garbled, "decode: "},
		{seqInvalid, &invalid, "invalid event: "},
		{seqMismatch, &subjectUser, "subject names user "},
		{seqNUL, &nul.ID, "apply: "},
		{seqNoUser, nil, "decode: "},
	}
	var got []dl
	for _, d := range dls {
		prefix, _, _ := strings.Cut(d.Reason, ":")
		if strings.HasPrefix(d.Reason, "subject names user ") {
			prefix = "subject names user "
		} else {
			prefix += ": "
		}
		got = append(got, dl{d.Seq, d.UserID, prefix})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s\nall: %+v", diff, dls)
	}
	// Settled after the commit that counted them.
	eventually(t, "poison terminated, nothing pending", func() bool {
		info := consumerInfo(t, e.js, "test")
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	})
	if got := metric(t, reg, "replica_events_dead_lettered_total"); got != float64(len(want)) {
		t.Errorf("dead-lettered = %v, want %d", got, len(want))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range []events.User{first, last} {
		if _, err := r.User(ctx, u.ID, 1); err != nil {
			t.Errorf("User(good %s): %v", u.ID, err)
		}
	}
	for _, id := range []uuid.UUID{garbled, invalid, subjectUser, nul.ID} {
		if _, err := r.User(ctx, id, 1); !errors.Is(err, replica.ErrStale) {
			t.Errorf("User(dead-lettered %s) = %v, want ErrStale", id, err)
		}
	}
	if _, err := r.User(ctx, payloadUser.ID, 1); !errors.Is(err, replica.ErrLagging) {
		t.Errorf("User(payload user of the mismatch) = %v, want ErrLagging", err)
	}
}

func TestUserWokenByAnotherInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if _, err := bus.EnsureStream(ctx, e.pub); err != nil {
		t.Fatal(err)
	}
	// Instance a only serves User: its consumer takes no events, so only b applies them.
	idle := bus.ConsumerConfig("idle")
	idle.FilterSubject = "users.none.>"
	if _, err := e.js.CreateConsumer(ctx, events.StreamName, idle); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "idle", Wait: time.Minute, Metrics: reg})
	start(t, a)
	eventually(t, "listener up", a.Listening)

	b := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "writer"})
	start(t, b)

	// The waiter is registered before a's first read, so b may apply the event before that read
	// runs: then a finds the user at once (a hit) and nothing was woken. Try again with another
	// user until a read came first and the NOTIFY of b's commit woke a (caught up); a's listener
	// is up, so a does not re-check on a timer: only that NOTIFY can wake it before uctx ends.
	for try := 1; ; try++ {
		hits := metric(t, reg, "replica_lookups_total", "result", replica.ResultHit)
		u := wokenLookup(t, ctx, a, func(u events.User) { authtest.PublishUser(t, e.pub, events.UserCreated, u) })
		if got := metric(t, reg, "replica_lookups_total", "result", replica.ResultCaughtUp); got == 1 {
			return
		} else if metric(t, reg, "replica_lookups_total", "result", replica.ResultHit) == hits || try == 5 {
			t.Fatalf("user %s: lookups caught_up = %v after %d tries, want 1", u.ID, got, try)
		}
	}
}

// wokenLookup looks a new user up in a, waiting for it, and has publish make it exist once a
// waits; it fails t unless the lookup returns the user.
func wokenLookup(t *testing.T, ctx context.Context, a *replica.Replica, publish func(events.User)) events.User {
	t.Helper()
	u := authtest.NewUser()
	type result struct {
		u   events.User
		err error
	}
	res := make(chan result, 1)
	uctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	go func() {
		got, err := a.User(uctx, u.ID, 1)
		res <- result{got, err}
	}()
	eventually(t, "waiter registered", func() bool { return a.Waiting(u.ID) == 1 })
	publish(u)
	r := <-res
	if r.err != nil {
		t.Fatalf("User: %v", r.err)
	}
	if diff := cmp.Diff(u, r.u); diff != "" {
		t.Errorf("User (-want +got):\n%s", diff)
	}
	return u
}

func TestUserWithoutListenerRechecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "reader", Wait: patience}) // never Run
	b := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Durable: "writer"})
	start(t, b)

	u := authtest.NewUser()
	res := make(chan error, 1)
	go func() {
		_, err := a.User(context.Background(), u.ID, 1)
		res <- err
	}()
	eventually(t, "waiter registered", func() bool { return a.Waiting(u.ID) == 1 })
	authtest.PublishUser(t, e.pub, events.UserCreated, u)
	if err := <-res; err != nil {
		t.Fatalf("User: %v", err)
	}
}

func TestUserLaggingAndCanceled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: 200 * time.Millisecond, Metrics: reg})
	start(t, r)
	eventually(t, "listener up", r.Listening)

	present := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, present)
	eventually(t, "present applied", func() bool { return applied(t, e.pool) == 1 })
	ctx := context.Background()

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name       string
		ctx        context.Context
		id         uuid.UUID
		minVersion int64
		want       error
	}{
		{"unknown user", ctx, uuid.New(), 1, replica.ErrLagging},
		{"older version", ctx, present.ID, 2, replica.ErrLagging},
		{"canceled", canceled, uuid.New(), 1, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.User(tt.ctx, tt.id, tt.minVersion); !errors.Is(err, tt.want) {
				t.Errorf("User = %v, want %v", err, tt.want)
			}
		})
	}
	if got := metric(t, reg, "replica_lookups_total", "result", replica.ResultLagging); got != 2 {
		t.Errorf("lookups lagging = %v, want 2", got)
	}
}

func TestGracefulStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js})
	const n = 600
	for range n {
		authtest.PublishUser(t, e.pub, events.UserCreated, authtest.NewUser())
	}
	stop := start(t, r)
	eventually(t, "some applied", func() bool { return applied(t, e.pool) > 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	last := applied(t, e.pool)
	var rows uint64
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM replica_users`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != last {
		t.Errorf("rows = %d, last applied = %d; want equal", rows, last)
	}
	// Everything committed is acked, and nothing fetched was left unsettled.
	eventually(t, "acks settle", func() bool {
		info := consumerInfo(t, e.js, "test")
		return info.NumAckPending == 0 && info.AckFloor.Stream == last
	})
}

func TestRunSurvivesNATSOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	ctx := context.Background()
	before := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, before)
	if _, err := r.User(ctx, before.ID, 1); err != nil {
		t.Fatalf("User before the outage: %v", err)
	}

	e.srv.Stop()
	time.Sleep(1500 * time.Millisecond) // a few fetches fail or time out
	e.srv.Start()

	after := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, after)
	if _, err := r.User(ctx, after.ID, 1); err != nil {
		t.Fatalf("User after the outage: %v", err)
	}
}

func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReplica(t, replica.Config{Pool: e.pool, JS: e.js, Wait: patience})
	start(t, r)
	eventually(t, "listener up", r.Listening)

	ctx := context.Background()
	listener := func() int32 { return listenerPID(t, e) }
	var first int32
	eventually(t, "listener connection seen", func() bool { first = listener(); return first != 0 })
	if _, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	eventually(t, "listener reconnected", func() bool {
		pid := listener()
		return pid != 0 && pid != first
	})

	u := authtest.NewUser()
	authtest.PublishUser(t, e.pub, events.UserCreated, u)
	if _, err := r.User(ctx, u.ID, 1); err != nil {
		t.Fatalf("User after the listener reconnected: %v", err)
	}
}
