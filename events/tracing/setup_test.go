package tracing_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/authmesh/events/tracing"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace receiver: it decodes each export's protobuf body and
// hands over its spans.
func otlpReceiver(t *testing.T) (url string, spans <-chan *tracepb.ResourceSpans) {
	t.Helper()
	got := make(chan *tracepb.ResourceSpans, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
			t.Errorf("OTLP receiver: %s %s (%s): %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			select {
			case got <- rs:
			default:
				t.Error("OTLP receiver: too many exports")
			}
		}
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = io.Copy(w, bytes.NewReader(out))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// TestSetupExportsOverOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, Setup exports the spans of the
// requests that Handler traces to that endpoint over OTLP/HTTP, under the service's name, each
// named after its route pattern; the probes are not traced, and Shutdown flushes what is buffered.
func TestSetupExportsOverOTLP(t *testing.T) {
	url, spans := otlpReceiver(t)
	clearOTEL(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000") // only Shutdown exports
	prop := otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(prop)
	})

	tr, err := tracing.Setup(t.Context(), "account", nil)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/users/{id}/roles", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	h := tr.Handler(mux, mux)
	for _, path := range []string{"/v1/users/42/roles", "/healthz", "/nowhere"} {
		method := http.MethodPut
		if path == "/healthz" {
			method = http.MethodGet
		}
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, path, nil))
	}
	_, span := otel.Tracer("test").Start(context.Background(), "through the global provider")
	span.End()
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	names := map[string]string{} // span name → http.route
	timeout := time.After(patience)
	for len(names) < 3 {
		select {
		case rs := <-spans:
			var service string
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			if service != "account" {
				t.Errorf("exported service.name = %q, want account", service)
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					var route string
					for _, a := range s.Attributes {
						if a.Key == "http.route" {
							route = a.GetValue().GetStringValue()
						}
					}
					names[s.Name] = route
				}
			}
		case <-timeout:
			t.Fatalf("exported spans %v, want the two requests' and the global provider's", names)
		}
	}
	want := map[string]string{"PUT /v1/users/{id}/roles": "/v1/users/{id}/roles", "unrouted": "", "through the global provider": ""}
	for name, route := range want {
		if got, ok := names[name]; !ok || got != route {
			t.Errorf("span %q: exported %v, route %q; want route %q", name, ok, got, route)
		}
	}
	for name := range names {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected span %q exported", name)
		}
	}
}
