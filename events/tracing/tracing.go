// Package tracing sets up OpenTelemetry tracing from the standard OTEL_* environment and carries
// the W3C trace context across the asynchronous hop of the user events: from the request that
// changed a user, through its outbox row (a text column) and the message's NATS headers, to the
// apply in each replica.
//
// Tracing is off unless the environment names an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or asks for the OTLP exporter (OTEL_TRACES_EXPORTER=otlp).
// Off, Setup installs nothing: the global tracer provider stays OpenTelemetry's no-op one, no span
// is recorded, no outbox row carries a trace context and no message a traceparent header.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// shutdownTimeout bounds the flush of the spans still buffered when a service stops.
const shutdownTimeout = 5 * time.Second

// Tracing is the tracing of a process, as Setup made it.
type Tracing struct {
	tp *sdktrace.TracerProvider // nil when tracing is off
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.tp != nil }

// Shutdown exports the spans still buffered and stops the exporter, within a few seconds. It does
// nothing when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracing: %w", err)
	}
	return nil
}

// Setup reads the process's OTEL_* environment (the SDK's own variables: the exporter, sampler,
// batch processor and resource read theirs themselves) and, when tracing is on, installs as the
// global ones a tracer provider that exports to OTLP over HTTP (protobuf) and the W3C trace-context
// propagator. service is service.name unless OTEL_SERVICE_NAME says otherwise. Export errors are
// logged to log. The caller calls Shutdown when it stops.
//
// It fails on a setting it cannot honour (another exporter, the gRPC or JSON protocol) rather than
// trace differently than asked.
func Setup(ctx context.Context, service string, log *slog.Logger) (*Tracing, error) {
	on, err := enabled(os.Getenv)
	if err != nil || !on {
		return &Tracing{}, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	}
	return &Tracing{tp: tp}, nil
}

// enabled reports whether the environment asks for tracing, and fails on a setting that Setup
// cannot honour.
func enabled(getenv func(string) string) (bool, error) {
	env := func(k string) string { return strings.ToLower(strings.TrimSpace(getenv(k))) }
	if env("OTEL_SDK_DISABLED") == "true" {
		return false, nil
	}
	var on bool
	switch exp := env("OTEL_TRACES_EXPORTER"); exp {
	case "none":
		return false, nil
	case "otlp":
		on = true
	case "":
		on = env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER %q: only otlp and none are supported", exp)
	}
	if !on {
		return false, nil
	}
	protocol := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if protocol != "" && protocol != "http/protobuf" {
		return false, errors.New("OTEL_EXPORTER_OTLP_PROTOCOL " + protocol + ": only http/protobuf is supported")
	}
	return true, nil
}
