package tracing

import sdktrace "go.opentelemetry.io/otel/sdk/trace"

// ForProvider returns the tracing of tp, as Setup makes it when tracing is on.
func ForProvider(tp *sdktrace.TracerProvider) *Tracing { return &Tracing{tp: tp} }
