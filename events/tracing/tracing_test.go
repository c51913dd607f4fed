package tracing

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

// TestEnabled: tracing is on only when the environment names an OTLP endpoint or asks for the
// OTLP exporter, off when it asks for none or disables the SDK, and a setting that Setup cannot
// honour is an error rather than a silent difference.
func TestEnabled(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{name: "unset", env: nil, want: false},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: true},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, want: true},
		{name: "blank endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, want: false},
		{name: "otlp exporter, default endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, want: false},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, want: false},
		{name: "http/protobuf", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, want: true},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: true},
		{name: "traces protocol wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, want: true},
		{name: "grpc while off", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: false},
		{name: "other exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := enabled(func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("enabled = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func spanContext(state string) context.Context {
	ts, err := trace.ParseTraceState(state)
	if err != nil {
		panic(err)
	}
	return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 15: 0x0b},
		SpanID:     trace.SpanID{0x0c, 7: 0x0d},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
	}))
}

// TestText: the text an outbox row keeps is the traceparent, with the tracestate after a space,
// and it gives back the same span context, as do the NATS headers; no span context is "" and no
// headers.
func TestText(t *testing.T) {
	const tp = "00-0a00000000000000000000000000000b-0c0000000000000d-01"
	for _, tt := range []struct{ state, want string }{
		{"", tp},
		{"vendor=a b,other=c", tp + " vendor=a b,other=c"},
	} {
		ctx := spanContext(tt.state)
		text := Text(ctx)
		if text != tt.want {
			t.Errorf("Text = %q, want %q", text, tt.want)
		}
		want := trace.SpanContextFromContext(ctx)
		if got := trace.SpanContextFromContext(FromText(context.Background(), text)); !got.Equal(want) {
			t.Errorf("FromText(%q) = %v, want %v", text, got, want)
		}
		h := nats.Header{}
		Inject(FromText(context.Background(), text), h)
		if got := h.Get(HeaderTraceparent); got != tp {
			t.Errorf("traceparent header = %q, want %q", got, tp)
		}
		if got := h.Get(HeaderTracestate); got != tt.state {
			t.Errorf("tracestate header = %q, want %q", got, tt.state)
		}
		if got := trace.SpanContextFromContext(FromHeader(context.Background(), h)); !got.Equal(want) {
			t.Errorf("FromHeader(%v) = %v, want %v", h, got, want)
		}
	}

	if got := Text(context.Background()); got != "" {
		t.Errorf("Text without a span = %q, want \"\"", got)
	}
	h := nats.Header{}
	Inject(context.Background(), h)
	if len(h) != 0 {
		t.Errorf("Inject without a span set %v", h)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-0c0000000000000d-01"} {
		if sc := trace.SpanContextFromContext(FromText(context.Background(), bad)); sc.IsValid() {
			t.Errorf("FromText(%q) = %v, want no span context", bad, sc)
		}
		if sc := trace.SpanContextFromContext(FromHeader(context.Background(), nats.Header{HeaderTraceparent: {bad}})); sc.IsValid() {
			t.Errorf("FromHeader(%q) = %v, want no span context", bad, sc)
		}
	}
}
