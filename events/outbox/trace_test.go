package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/tracing"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestRelayTracesRows: a row written under a span is published with the trace context of a
// publish span of the relay's, a child of that span like the row's "outbox dwell"; a publish that
// fails (no stream yet: no responders) is a failed publish span, and the retry has spans of its
// own. A row written without a span makes no span and carries no trace context. Republish sends
// the row's own trace context.
func TestRelayTracesRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // no stream yet: the first publishes fail
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	ctx, req := tp.Tracer("test").Start(context.Background(), "request")
	traced := newEvent(t)
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, traced) }); err != nil {
		t.Fatalf("Add: %v", err)
	}
	req.End()
	plain := add(t, e.pool, 1)[0]
	stop := start(t, outbox.RelayConfig{Pool: e.pool, JS: e.js, TracerProvider: tp})
	eventually(t, "both published", published(t, e.pool, 2))
	stop()

	spans := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.Name() == "request" {
			continue
		}
		if id := attr(s, "messaging.message.id"); id != traced.ID.String() {
			t.Errorf("span %q of message %q, want only spans of the traced row's message %s", s.Name(), id, traced.ID)
		}
		if s.Parent().SpanID() != req.SpanContext().SpanID() || s.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("span %q is not a child of the request's span", s.Name())
		}
		spans[s.Name()] = append(spans[s.Name()], s)
	}
	pubs, dwells := spans["publish users.created"], spans["outbox dwell"]
	if len(pubs) < 2 || len(dwells) != len(pubs) {
		t.Fatalf("%d publish and %d dwell spans, want a failed publish and its retry, each with its dwell", len(pubs), len(dwells))
	}
	if s := pubs[0]; s.Status().Code != codes.Error {
		t.Errorf("first publish span status %v, want an error (no stream yet)", s.Status())
	}
	last := pubs[len(pubs)-1]
	if last.Status().Code == codes.Error || last.SpanKind() != trace.SpanKindProducer {
		t.Errorf("last publish span: status %v, kind %v; want ok, producer", last.Status(), last.SpanKind())
	}

	msgs := messages(t, e)
	want := traceparent(last.SpanContext())
	if got := msgs[traced.Subject()].Get(tracing.HeaderTraceparent); got != want {
		t.Errorf("traced message traceparent = %q, want the publish span's %q", got, want)
	}
	if h := msgs[plain.Subject()]; h.Get(tracing.HeaderTraceparent) != "" {
		t.Errorf("untraced message has headers %v", h)
	}

	if err := e.srv.JetStream(t, natstest.Ops).DeleteStream(t.Context(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Republish(t.Context(), e.pool, e.js, time.Time{}); err != nil {
		t.Fatalf("Republish: %v", err)
	}
	msgs = messages(t, e)
	if got, want := msgs[traced.Subject()].Get(tracing.HeaderTraceparent), traceparent(req.SpanContext()); got != want {
		t.Errorf("republished message traceparent = %q, want the row's %q", got, want)
	}
	if h := msgs[plain.Subject()]; h.Get(tracing.HeaderTraceparent) != "" {
		t.Errorf("republished untraced message has headers %v", h)
	}
}

// messages returns the headers of the messages of the stream, by subject.
func messages(t *testing.T, e env) map[string]nats.Header {
	t.Helper()
	s, err := bus.EnsureStream(t.Context(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]nats.Header{}
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			return out
		}
		out[m.Subject] = m.Header
	}
}

func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, a := range s.Attributes() {
		if a.Key == key {
			return a.Value.Emit()
		}
	}
	return ""
}
