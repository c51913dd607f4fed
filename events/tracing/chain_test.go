package tracing_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/servicetest"
	"github.com/authmesh/events/tracing"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// patience bounds every wait for something that must eventually happen.
const patience = 20 * time.Second

// replicas are the services that keep a replica, each with its durable consumer.
var replicas = []string{natstest.Blog, natstest.Shop}

// chain is account's side of a change of a user (a traced HTTP handler that writes the event to
// the outbox in its transaction, and the relay) and the replicas of blog and shop, each on its
// own database, over a private NATS server.
type chain struct {
	url      string        // the handler's server
	pool     *pgxpool.Pool // account's database
	js       jetstream.JetStream
	replicas map[string]*replica.Replica
}

// newChain starts the chain. tr traces account's requests; providers[service] makes the spans of
// the relay (account) and of each replica; a missing one is the global provider.
func newChain(t *testing.T, tr *tracing.Tracing, providers map[string]trace.TracerProvider) chain {
	t.Helper()
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := natstest.New(t)
	c := chain{pool: pgtest.NewPool(t), js: srv.JetStream(t, natstest.Account), replicas: map[string]*replica.Replica{}}
	if err := outbox.Migrate(ctx, c.pool); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStream(ctx, c.js); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/users", func(w http.ResponseWriter, r *http.Request) {
		e, err := events.NewEvent(events.UserCreated, authtest.NewUser(), time.Now())
		if err == nil {
			err = pgx.BeginFunc(r.Context(), c.pool, func(tx pgx.Tx) error { return outbox.Add(r.Context(), tx, e) })
		}
		if err != nil {
			log.Error("add event", "err", err)
			web.Internal().Write(w)
			return
		}
		web.Encode(w, http.StatusCreated, map[string]string{"id": e.User.ID.String()})
	})
	hs := httptest.NewServer(tr.Handler(mux, web.Handler(mux, log, prometheus.NewRegistry())))
	t.Cleanup(hs.Close)
	c.url = hs.URL

	servicetest.Go(t, outbox.NewRelay(outbox.RelayConfig{
		Pool: c.pool, JS: c.js, Log: log, TracerProvider: providers[natstest.Account],
	}).Run)
	for _, name := range replicas {
		pool := pgtest.NewPool(t)
		if err := replica.Migrate(ctx, pool); err != nil {
			t.Fatal(err)
		}
		rep, err := replica.New(replica.Config{
			Pool: pool, JS: srv.JetStream(t, name), Durable: name, Log: log, TracerProvider: providers[name],
		})
		if err != nil {
			t.Fatal(err)
		}
		servicetest.Go(t, rep.Run)
		c.replicas[name] = rep
	}
	return c
}

// createUser makes a user through the handler, sending headers, and waits until both replicas
// hold it. It returns the user's id.
func (c chain) createUser(t *testing.T, headers ...string) uuid.UUID {
	t.Helper()
	res := servicetest.Do(t, http.MethodPost, c.url+"/v1/users", "", "", headers...)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/users: %d %s", res.Status, res.Body)
	}
	var body struct{ ID uuid.UUID }
	res.Decode(t, &body)
	for name, rep := range c.replicas {
		servicetest.Eventually(t, patience, name+" replica holds the user", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			_, err := rep.User(ctx, body.ID, 1)
			return err == nil
		})
	}
	return body.ID
}

// row returns the creation time and the stored trace context (NULL as nil) of the user's event.
func (c chain) row(t *testing.T, user uuid.UUID) (time.Time, *string) {
	t.Helper()
	var created time.Time
	var tc *string
	err := c.pool.QueryRow(t.Context(), `SELECT created_at, trace_context FROM outbox WHERE subject = $1`,
		events.Subject(events.UserCreated, user)).Scan(&created, &tc)
	if err != nil {
		t.Fatalf("read outbox row: %v", err)
	}
	return created, tc
}

// message returns the message the stream holds for the user's event.
func (c chain) message(t *testing.T, user uuid.UUID) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := c.js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), events.Subject(events.UserCreated, user))
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	return m
}

// provider returns a tracer provider of the service name that records its spans in rec.
func provider(t *testing.T, name string, rec *tracetest.SpanRecorder) *sdktrace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(name))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// TestTraceCrossesTheAsynchronousHop: one request that changes a user, sent with the caller's
// traceparent, makes one trace across account, blog and shop: account's server span continues the
// caller's span; its trace context is stored with the outbox row; the relay records the row's
// dwell (from its creation to its publish) and the publish, both children of the request's span,
// and sends the publish span's context as the message's traceparent; each replica's apply span is
// a child of the publish span, in its own service.
func TestTraceCrossesTheAsynchronousHop(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	providers := map[string]trace.TracerProvider{}
	for _, name := range []string{natstest.Account, natstest.Blog, natstest.Shop} {
		providers[name] = provider(t, name, rec)
	}
	c := newChain(t, tracing.ForProvider(providers[natstest.Account].(*sdktrace.TracerProvider)), providers)

	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	user := c.createUser(t, "traceparent", traceparent(caller))

	// The replica ends its span just after its commit, which createUser has seen.
	var spans map[string][]sdktrace.ReadOnlySpan
	servicetest.Eventually(t, patience, "an apply span in each replica", func() bool {
		spans = byName(rec.Ended())
		return len(spans["apply users.created"]) == len(replicas)
	})
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		if len(spans[name]) != 1 {
			t.Fatalf("%d spans %q, want 1; spans: %v", len(spans[name]), name, names(spans))
		}
		return spans[name][0]
	}
	request, dwell, publish := one("POST /v1/users"), one("outbox dwell"), one("publish users.created")

	tid := caller.TraceID()
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != tid {
			t.Errorf("span %q of %s is in trace %s, want the caller's %s", s.Name(), service(s), s.SpanContext().TraceID(), tid)
		}
	}
	check := func(s sdktrace.ReadOnlySpan, svc string, kind trace.SpanKind, parent trace.SpanContext) {
		t.Helper()
		if got := service(s); got != svc {
			t.Errorf("span %q is of service %q, want %q", s.Name(), got, svc)
		}
		if s.SpanKind() != kind {
			t.Errorf("span %q is of kind %v, want %v", s.Name(), s.SpanKind(), kind)
		}
		if s.Parent().SpanID() != parent.SpanID() {
			t.Errorf("span %q has parent %s, want %s", s.Name(), s.Parent().SpanID(), parent.SpanID())
		}
		if s.Status().Code == codes.Error {
			t.Errorf("span %q failed: %s", s.Name(), s.Status().Description)
		}
	}
	check(request, natstest.Account, trace.SpanKindServer, caller)
	if !request.Parent().IsRemote() {
		t.Error("the request's span does not continue a remote parent")
	}
	check(dwell, natstest.Account, trace.SpanKindInternal, request.SpanContext())
	check(publish, natstest.Account, trace.SpanKindProducer, request.SpanContext())

	// The hop: the row keeps the request's context, the message carries the publish's.
	created, stored := c.row(t, user)
	if want := traceparent(request.SpanContext()); stored == nil || *stored != want {
		t.Errorf("outbox row trace_context = %v, want %q", deref(stored), want)
	}
	if !dwell.StartTime().Equal(created) {
		t.Errorf("dwell starts at %v, want the row's created_at %v", dwell.StartTime(), created)
	}
	if !dwell.EndTime().Equal(publish.StartTime()) {
		t.Errorf("dwell ends at %v, the publish starts at %v: want the same instant", dwell.EndTime(), publish.StartTime())
	}
	msg := c.message(t, user)
	if got, want := msg.Header.Get(tracing.HeaderTraceparent), traceparent(publish.SpanContext()); got != want {
		t.Errorf("message traceparent = %q, want the publish span's %q", got, want)
	}
	if got, want := attr(publish, "messaging.nats.stream.sequence"), attribute.Int64Value(int64(msg.Sequence)); got != want {
		t.Errorf("publish span's stream sequence = %v, want %v", got.Emit(), want.Emit())
	}

	applied := map[string]bool{}
	for _, s := range spans["apply users.created"] {
		svc := service(s)
		applied[svc] = true
		check(s, svc, trace.SpanKindConsumer, publish.SpanContext())
		if !s.Parent().IsRemote() {
			t.Errorf("%s's apply span does not continue a remote parent", svc)
		}
		if got := attr(s, string(semconv.MessagingConsumerGroupNameKey)).AsString(); got != svc {
			t.Errorf("%s's apply span names consumer %q", svc, got)
		}
		if !attr(s, "replica.applied").AsBool() {
			t.Errorf("%s's apply span says the event was not applied", svc)
		}
		if s.StartTime().Before(publish.StartTime()) {
			t.Errorf("%s applies at %v, before the publish at %v", svc, s.StartTime(), publish.StartTime())
		}
	}
	for _, name := range replicas {
		if !applied[name] {
			t.Errorf("no apply span of %s", name)
		}
	}
}

// TestTracingOff: with no OTEL_* variable set, Setup installs nothing and the chain runs as
// before: the global tracer provider stays the no-op one, the row stores no trace context, the
// message carries no traceparent even when the request did, and a replica that traces (shop here)
// makes no span for an untraced event.
func TestTracingOff(t *testing.T) {
	clearOTEL(t)
	global := otel.GetTracerProvider()
	tr, err := tracing.Setup(t.Context(), "account", nil)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	if tr.Enabled() {
		t.Fatal("tracing is on with no OTEL_* variable set")
	}
	if otel.GetTracerProvider() != global {
		t.Fatal("Setup installed a tracer provider")
	}
	if h := http.Handler(http.NewServeMux()); tr.Handler(nil, h) != h {
		t.Error("Handler wraps the handler with tracing off")
	}
	rec := tracetest.NewSpanRecorder()
	c := newChain(t, tr, map[string]trace.TracerProvider{natstest.Shop: provider(t, natstest.Shop, rec)})

	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled,
	})
	user := c.createUser(t, "traceparent", traceparent(caller))
	if _, stored := c.row(t, user); stored != nil {
		t.Errorf("outbox row trace_context = %q, want NULL", *stored)
	}
	if h := c.message(t, user).Header; len(h[tracing.HeaderTraceparent]) > 0 || len(h[tracing.HeaderTracestate]) > 0 {
		t.Errorf("message headers = %v, want no trace context", h)
	}
	if ended := rec.Ended(); len(ended) > 0 {
		t.Errorf("shop made %d spans for an untraced event: %v", len(ended), names(byName(ended)))
	}
}

func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

func byName(spans []sdktrace.ReadOnlySpan) map[string][]sdktrace.ReadOnlySpan {
	m := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		m[s.Name()] = append(m[s.Name()], s)
	}
	return m
}

func names(spans map[string][]sdktrace.ReadOnlySpan) map[string]int {
	m := map[string]int{}
	for k, v := range spans {
		m[k] = len(v)
	}
	return m
}

func service(s sdktrace.ReadOnlySpan) string {
	v, _ := s.Resource().Set().Value(semconv.ServiceNameKey)
	return v.AsString()
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// clearOTEL unsets, for the test, the OTEL_* variables that would turn tracing on.
func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
}
