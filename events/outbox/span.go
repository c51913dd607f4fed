package outbox

import (
	"context"
	"strings"
	"time"

	"github.com/authmesh/events/tracing"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the relay's spans.
const tracerName = "github.com/authmesh/events/outbox"

// streamSeqKey is the attribute of the stream sequence a message was stored at.
const streamSeqKey = attribute.Key("messaging.nats.stream.sequence")

// startPublish records the dwell of ev in the outbox, from its creation until now, as the span
// "outbox dwell", and starts its publish span; both are children of the span that wrote the row.
// It returns the publish span and a context holding it, which the message carries on. A retried
// publish has spans of its own (the failed one's record its error).
func startPublish(tracer trace.Tracer, ev row, now time.Time) (context.Context, trace.Span) {
	parent := tracing.FromText(context.Background(), ev.Trace)
	msgID := semconv.MessagingMessageID(ev.EventID.String())
	created := ev.CreatedAt
	if created.After(now) { // the database's clock may be a little ahead
		created = now
	}
	_, dwell := tracer.Start(parent, "outbox dwell",
		trace.WithTimestamp(created),
		trace.WithAttributes(msgID, attribute.Int64("outbox.id", ev.ID)))
	dwell.End(trace.WithTimestamp(now))
	dest := destination(ev.Subject)
	return tracer.Start(parent, "publish "+dest,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(now),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(ev.Subject),
			semconv.MessagingDestinationTemplate(dest+".{user_id}"),
			msgID,
			attribute.Int("messaging.message.body.size", len(ev.Payload))))
}

// endPublish ends a publish span (nil for a row without a trace context) with the stream's
// acknowledgement, or the failure.
func endPublish(span trace.Span, ack *jetstream.PubAck, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(streamSeqKey.Int64(int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	}
	span.End()
}

// destination is the subject of a user event without its user id: users.created.<id> is
// users.created, a name of low cardinality for spans.
func destination(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i > 0 {
		return subject[:i]
	}
	return subject
}
