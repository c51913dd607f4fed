package replica

import (
	"context"
	"strings"
	"time"

	"github.com/authmesh/events/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the replica's spans.
const tracerName = "github.com/authmesh/events/replica"

// Attributes of an apply span beside the messaging ones.
const (
	streamSeqKey = attribute.Key("messaging.nats.stream.sequence")
	// appliedKey is false when the version gate skipped the event: the replica held its version
	// or a newer one (a duplicate, a redelivery, a replay).
	appliedKey = attribute.Key("replica.applied")
)

// startApply starts an apply span for each item whose message carries a trace context (the
// traceparent header the relay sets), as a child of the span that published it, at start: the
// trace of the request that changed the user goes on into this replica. The spans of one batch
// share its times, as they share its transaction. It returns nil when no item carries one.
func (r *Replica) startApply(items []item, start time.Time) []trace.Span {
	var spans []trace.Span
	for i, it := range items {
		h := it.msg.Headers()
		if len(h[tracing.HeaderTraceparent]) == 0 {
			continue
		}
		parent := tracing.FromHeader(context.Background(), h)
		if !trace.SpanContextFromContext(parent).IsValid() {
			continue
		}
		if spans == nil {
			spans = make([]trace.Span, len(items))
		}
		subject := it.msg.Subject()
		dest := subject
		if i := strings.LastIndexByte(subject, '.'); i > 0 {
			dest = subject[:i] // users.created.<id> is users.created
		}
		attrs := []attribute.KeyValue{
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("apply"),
			semconv.MessagingDestinationName(subject),
			semconv.MessagingConsumerGroupName(r.cfg.Durable),
			streamSeqKey.Int64(int64(it.seq)),
			attribute.Int64("messaging.nats.delivered", int64(it.delivered)),
		}
		if it.reason == "" {
			attrs = append(attrs, semconv.MessagingMessageID(it.event.ID.String()))
		}
		if len(items) > 1 {
			attrs = append(attrs, semconv.MessagingBatchMessageCount(len(items)))
		}
		_, spans[i] = r.tracer.Start(parent, "apply "+dest,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithTimestamp(start),
			trace.WithAttributes(attrs...))
	}
	return spans
}

// endApply ends the spans of startApply once the batch has committed (err nil) or failed: an
// applied or skipped event, a dead letter (an error, with its reason), or the batch's failure.
func endApply(spans []trace.Span, items []item, changed []bool, err error) {
	for i, span := range spans {
		if span == nil {
			continue
		}
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		case items[i].reason != "":
			span.SetStatus(codes.Error, "dead-lettered: "+items[i].reason)
		default:
			span.SetAttributes(appliedKey.Bool(changed[i]))
		}
		span.End()
	}
}
