package web

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/authmesh/events/logging"
)

// logLines decodes the JSON lines of a log.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// byMsg returns the lines with message msg.
func byMsg(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// loggedHandler is Handler around a mux of test routes, logging through events/logging's handler
// (as service.NewLogger does) at level.
func loggedHandler(t *testing.T, level slog.Level) (http.Handler, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(logging.NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		// What events/auth's middleware does once it has authenticated the caller.
		r = r.WithContext(logging.WithUserID(r.Context(), "user-1"))
		log.InfoContext(r.Context(), "thing looked up", "thing", r.PathValue("id"))
		Encode(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	mux.HandleFunc("GET /v1/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	HandleHealth(mux, nil)
	return Handler(mux, log, newRegistry()), &buf
}

func serve(h http.Handler, method, path, requestID string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if requestID != "" {
		r.Header.Set("X-Request-Id", requestID)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// A request gets one access line, and the handler's own line carries the same request id; both
// name the user the middleware authenticated.
func TestHandlerLogs(t *testing.T) {
	h, buf := loggedHandler(t, slog.LevelInfo)
	w := serve(h, "GET", "/v1/things/42", "req-abc")
	if got := w.Header().Get("X-Request-Id"); got != "req-abc" {
		t.Fatalf("X-Request-Id = %q, want the client's req-abc", got)
	}
	lines := logLines(t, buf)
	own := byMsg(lines, "thing looked up")
	access := byMsg(lines, "request")
	if len(own) != 1 || len(access) != 1 || len(lines) != 2 {
		t.Fatalf("log has %d lines, %d of the handler and %d access lines; want 1 and 1:\n%s", len(lines), len(own), len(access), buf)
	}
	if own[0]["request_id"] != "req-abc" || own[0]["user_id"] != "user-1" {
		t.Errorf("handler's line %v: want request_id req-abc and user_id user-1", own[0])
	}
	a := access[0]
	for k, want := range map[string]any{
		"level": "INFO", "method": "GET", "route": "GET /v1/things/{id}", "path": "/v1/things/42",
		"status": 200.0, "bytes": float64(w.Body.Len()), "request_id": "req-abc", "user_id": "user-1",
		"remote_addr": "192.0.2.1:1234",
	} {
		if a[k] != want {
			t.Errorf("access line %s = %v, want %v", k, a[k], want)
		}
	}
	if d, ok := a["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("access line duration_ms = %v, want a duration", a["duration_ms"])
	}
}

// Without a request id from the client, the one made for the request is sent back and logged.
func TestHandlerMakesRequestID(t *testing.T) {
	h, buf := loggedHandler(t, slog.LevelInfo)
	w := serve(h, "GET", "/v1/things/1", "")
	id := w.Header().Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id in the answer")
	}
	for _, l := range logLines(t, buf) {
		if l["request_id"] != id {
			t.Errorf("line %v: request_id, want %s", l, id)
		}
	}
	// One too long is replaced.
	long := strings.Repeat("x", 129)
	if got := serve(h, "GET", "/v1/things/1", long).Header().Get("X-Request-Id"); got == long || got == "" {
		t.Errorf("X-Request-Id of 129 bytes answered with %q, want a new one", got)
	}
}

// Probes and scrapes are logged at debug only; unknown routes and panics get their access line.
func TestHandlerAccessLevels(t *testing.T) {
	h, buf := loggedHandler(t, slog.LevelInfo)
	serve(h, "GET", "/healthz", "probe")
	serve(h, "GET", "/readyz", "probe")
	if buf.Len() != 0 {
		t.Errorf("probes logged at info:\n%s", buf)
	}

	h, buf = loggedHandler(t, slog.LevelDebug)
	serve(h, "GET", "/healthz", "probe")
	access := byMsg(logLines(t, buf), "request")
	if len(access) != 1 || access[0]["level"] != "DEBUG" || access[0]["route"] != "GET /healthz" {
		t.Errorf("probe at debug: access lines %v, want one at DEBUG of GET /healthz", access)
	}

	h, buf = loggedHandler(t, slog.LevelInfo)
	serve(h, "GET", "/nowhere", "r-404")
	serve(h, "GET", "/v1/panic", "r-500")
	lines := logLines(t, buf)
	access = byMsg(lines, "request")
	if len(access) != 2 {
		t.Fatalf("access lines %v, want 2", access)
	}
	if a := access[0]; a["route"] != "unrouted" || a["status"] != 404.0 || a["request_id"] != "r-404" {
		t.Errorf("access line of an unknown route %v, want route unrouted, status 404", a)
	}
	if a := access[1]; a["route"] != "GET /v1/panic" || a["status"] != 500.0 || a["request_id"] != "r-500" {
		t.Errorf("access line of a panic %v, want status 500", a)
	}
	if p := byMsg(lines, "panic"); len(p) != 1 || p[0]["request_id"] != "r-500" || p[0]["level"] != "ERROR" {
		t.Errorf("panic lines %v, want one at ERROR with request_id r-500", p)
	}
}
