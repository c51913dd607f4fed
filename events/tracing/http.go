package tracing

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Handler returns h traced: every request but the probes (/healthz, /readyz, /metrics) gets a
// server span, named after the route pattern of mux that serves it ("PUT /v1/users/{id}/roles"),
// which continues the caller's W3C trace context when the request carries one. h is the service's
// whole handler (web.Handler of mux), so the span covers everything the service does for the
// request. When tracing is off, Handler returns h itself.
func (t *Tracing) Handler(mux *http.ServeMux, h http.Handler) http.Handler {
	if !t.Enabled() {
		return h
	}
	route := func(r *http.Request) string {
		if _, p := mux.Handler(r); p != "" {
			return p
		}
		return "unrouted"
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, p := mux.Handler(r); p != "" {
			if _, path, ok := strings.Cut(p, " "); ok { // "GET /x": the pattern names its method
				p = path
			}
			trace.SpanFromContext(r.Context()).SetAttributes(semconv.HTTPRoute(p))
		}
		h.ServeHTTP(w, r)
	})
	return otelhttp.NewHandler(inner, "http",
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return route(r) }),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}))
}
