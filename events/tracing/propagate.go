package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C trace-context headers, as a message of the USERS stream carries them (lower case, as
// the W3C recommendation writes them; NATS header names are case-sensitive).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// w3c is the propagator of this package: the W3C trace context, whatever the global one is.
var w3c propagation.TraceContext

// Text returns the trace context of the span in ctx as an outbox row keeps it: the W3C
// traceparent, then a space and the tracestate when there is one (a traceparent holds no space).
// It returns "" when ctx holds no valid span context, as when tracing is off.
func Text(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	tp := c[HeaderTraceparent]
	if ts := c[HeaderTracestate]; ts != "" && tp != "" {
		return tp + " " + ts
	}
	return tp
}

// split returns the traceparent and the tracestate of a text made by Text.
func split(text string) (traceparent, tracestate string) {
	traceparent, tracestate, _ = strings.Cut(strings.TrimSpace(text), " ")
	return traceparent, tracestate
}

// FromText returns ctx carrying the remote span context of text (made by Text), or ctx itself
// when text holds none or an invalid one.
func FromText(ctx context.Context, text string) context.Context {
	if text == "" {
		return ctx
	}
	tp, ts := split(text)
	c := propagation.MapCarrier{HeaderTraceparent: tp}
	if ts != "" {
		c[HeaderTracestate] = ts
	}
	return w3c.Extract(ctx, c)
}

// Inject writes the span context of ctx into h as the traceparent and tracestate headers; it
// writes nothing when ctx holds no valid span context.
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		w3c.Inject(ctx, headerCarrier(h))
	}
}

// FromHeader returns ctx carrying the remote span context of h's traceparent and tracestate, or
// ctx itself when h carries none or an invalid one.
func FromHeader(ctx context.Context, h nats.Header) context.Context {
	if len(h[HeaderTraceparent]) == 0 {
		return ctx
	}
	return w3c.Extract(ctx, headerCarrier(h))
}

// headerCarrier carries a trace context in NATS headers. Unlike propagation.HeaderCarrier it keeps
// the names as given: nats.Header, unlike http.Header, does not canonicalize them.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
