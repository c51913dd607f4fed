package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/authmesh/events/logging"
	"github.com/google/go-cmp/cmp"
)

// newLogger returns a logger through a Handler around a JSON handler at debug, and its output.
func newLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	inner := slog.NewJSONHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{} // not compared
			}
			return a
		},
	})
	return slog.New(logging.NewHandler(inner)), &buf
}

func TestHandler(t *testing.T) {
	bg := context.Background()
	// req is the context of a request of its own for each case: WithUserID notes the user for it.
	var req context.Context
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want map[string]any
	}{
		{"no context", func(l *slog.Logger) { l.Info("m", "a", 1) },
			map[string]any{"msg": "m", "a": 1.0}},
		{"context without ids", func(l *slog.Logger) { l.InfoContext(bg, "m") },
			map[string]any{"msg": "m"}},
		{"request id", func(l *slog.Logger) { l.InfoContext(req, "m", "a", 1) },
			map[string]any{"msg": "m", "a": 1.0, "request_id": "req-1"}},
		{"request id and user id", func(l *slog.Logger) { l.WarnContext(logging.WithUserID(req, "u-1"), "m") },
			map[string]any{"msg": "m", "request_id": "req-1", "user_id": "u-1"}},
		{"user id alone", func(l *slog.Logger) { l.InfoContext(logging.WithUserID(bg, "u-1"), "m") },
			map[string]any{"msg": "m", "user_id": "u-1"}},
		{"LogAttrs", func(l *slog.Logger) { l.LogAttrs(req, slog.LevelDebug, "m", slog.Int("a", 1)) },
			map[string]any{"msg": "m", "a": 1.0, "request_id": "req-1"}},
		{"the record's own user id wins", func(l *slog.Logger) {
			l.InfoContext(logging.WithUserID(req, "caller"), "roles changed", "user_id", "target")
		}, map[string]any{"msg": "roles changed", "request_id": "req-1", "user_id": "target"}},
		{"the record's own request id wins", func(l *slog.Logger) { l.InfoContext(req, "m", "request_id", "own") },
			map[string]any{"msg": "m", "request_id": "own"}},
		{"the logger's own request id wins", func(l *slog.Logger) {
			l.With("request_id", "mine").InfoContext(logging.WithUserID(req, "u-1"), "m")
		}, map[string]any{"msg": "m", "request_id": "mine", "user_id": "u-1"}},
		{"in a group", func(l *slog.Logger) { l.WithGroup("g").InfoContext(req, "m", "a", 1) },
			map[string]any{"msg": "m", "g": map[string]any{"a": 1.0, "request_id": "req-1"}}},
		{"the group's own request id wins", func(l *slog.Logger) {
			l.WithGroup("g").With("request_id", "inner").InfoContext(req, "m")
		}, map[string]any{"msg": "m", "g": map[string]any{"request_id": "inner"}}},
		{"a request id outside the group is another key", func(l *slog.Logger) {
			l.With("request_id", "outer").WithGroup("g").InfoContext(req, "m")
		}, map[string]any{"msg": "m", "request_id": "outer", "g": map[string]any{"request_id": "req-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req = logging.WithRequestID(bg, "req-1")
			l, buf := newLogger()
			tt.log(l)
			line := strings.TrimSpace(buf.String())
			if dup := duplicateKey(t, line); dup != "" {
				t.Errorf("%s appears twice in an object of %s", dup, line)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("line (-want +got):\n%s", diff)
			}
		})
	}
}

// duplicateKey returns a key that an object of the JSON line has twice, or "".
func duplicateKey(t *testing.T, line string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	var open []map[string]bool // the containers open, innermost last; nil for an array
	atKey := false             // the next string is a key of the innermost object
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if k, ok := tok.(string); ok && atKey {
			if open[len(open)-1][k] {
				return k
			}
			open[len(open)-1][k] = true
			atKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			open = append(open, map[string]bool{})
		case json.Delim('['):
			open = append(open, nil)
		case json.Delim('}'), json.Delim(']'):
			open = open[:len(open)-1]
		}
		atKey = len(open) > 0 && open[len(open)-1] != nil
	}
}

// The user noted on a context derived from the request's is seen through the request's own
// context: the access line, logged with it once the handlers are done, names the user.
func TestUserIDNotedForTheRequest(t *testing.T) {
	req := logging.WithRequestID(context.Background(), "req-1")
	if got := logging.UserID(req); got != "" {
		t.Fatalf("UserID before authentication = %q, want none", got)
	}
	inner := logging.WithUserID(req, "u-1")
	if got := logging.UserID(req); got != "u-1" {
		t.Errorf("UserID(request context) = %q, want u-1", got)
	}
	if got := logging.UserID(inner); got != "u-1" {
		t.Errorf("UserID(derived context) = %q, want u-1", got)
	}
	// Another request knows nothing of it.
	if got := logging.UserID(logging.WithRequestID(context.Background(), "req-2")); got != "" {
		t.Errorf("UserID(other request) = %q, want none", got)
	}
}

// Lines logged concurrently with the authentication of their request do not race (go test
// -race).
func TestConcurrentUse(t *testing.T) {
	l, _ := newLogger()
	req := logging.WithRequestID(context.Background(), "req-1")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				l.InfoContext(req, "m")
			}
		})
	}
	for range 100 {
		logging.WithUserID(req, "u-1")
	}
	wg.Wait()
}

func TestEnabled(t *testing.T) {
	h := logging.NewHandler(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled does not follow the wrapped handler's level")
	}
}
