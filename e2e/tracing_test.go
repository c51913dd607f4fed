package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// exported is a span as an OTLP receiver got it, with the service that sent it.
type exported struct {
	service string
	span    *tracepb.Span
}

// collector is an OTLP/HTTP trace receiver: it keeps every span exported to it.
type collector struct {
	mu    sync.Mutex
	spans []exported
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		var service string
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, exported{service: service, span: s})
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of the trace id, by "service span-name".
func (c *collector) trace(id []byte) map[string][]*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, e := range c.spans {
		if bytes.Equal(e.span.TraceId, id) {
			out[e.service+" "+e.span.Name] = append(out[e.service+" "+e.span.Name], e.span)
		}
	}
	return out
}

func (c *collector) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.spans {
		out = append(out, e.service+" "+e.span.Name)
	}
	return out
}

// TestTraceAcrossServices runs the binaries with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP
// receiver of the test's: a registration sent with a caller's traceparent makes one trace of
// account's request, the event's dwell in the outbox and its publish, and the apply of the event
// in blog's and shop's replicas, each a child of the span before it; the probes are not traced.
func TestTraceAcrossServices(t *testing.T) {
	col := &collector{}
	rx := httptest.NewServer(col)
	t.Cleanup(rx.Close)
	s := stack.ForTest(t, stack.Options{BinDir: binDir, AdminEmail: adminEmail, AdminPassword: adminPassword,
		Env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rx.URL, "OTEL_BSP_SCHEDULE_DELAY=100"}})

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	body, _ := json.Marshal(map[string]any{"email": "traced@example.com", "password": apitest.Password, "display_name": "Traced"})
	apitest.Send(t, http.MethodPost, s.URL["account"]+"/v1/users", http.Header{
		"Content-Type": {"application/json"},
		"Traceparent":  {"00-" + traceID + "-" + callerSpan + "-01"},
	}, body).Want(t, http.StatusCreated, "register")

	tid, _ := hex.DecodeString(traceID)
	want := []string{"account POST /v1/users", "account outbox dwell", "account publish users.created",
		"blog apply users.created", "shop apply users.created"}
	var spans map[string][]*tracepb.Span
	deadline := time.Now().Add(30 * time.Second)
	for {
		spans = col.trace(tid)
		missing := 0
		for _, w := range want {
			if len(spans[w]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s has %d spans of %v after 30 s; exported: %v", traceID, len(spans), want, col.names())
		}
		time.Sleep(100 * time.Millisecond)
	}
	one := func(name string) *tracepb.Span {
		t.Helper()
		if len(spans[name]) != 1 {
			t.Fatalf("%d spans %q in the trace, want 1", len(spans[name]), name)
		}
		return spans[name][0]
	}
	parentOf := func(child, parent string, parentID []byte) {
		t.Helper()
		s := one(child)
		if !bytes.Equal(s.ParentSpanId, parentID) {
			t.Errorf("span %q has parent %x, want %s (%x)", child, s.ParentSpanId, parent, parentID)
		}
		if s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("span %q failed: %s", child, s.Status.GetMessage())
		}
	}
	caller, _ := hex.DecodeString(callerSpan)
	request := one("account POST /v1/users")
	parentOf("account POST /v1/users", "the caller's span", caller)
	parentOf("account outbox dwell", "the request", request.SpanId)
	parentOf("account publish users.created", "the request", request.SpanId)
	publish := one("account publish users.created")
	for _, svc := range []string{"blog", "shop"} {
		parentOf(svc+" apply users.created", "the publish", publish.SpanId)
	}
	for _, name := range col.names() {
		if strings.Contains(name, "/healthz") || strings.Contains(name, "/readyz") || strings.Contains(name, "/metrics") {
			t.Errorf("a probe was traced: %s", name)
		}
	}
}
