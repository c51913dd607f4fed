package web

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestCursor(t *testing.T) {
	t.Parallel()
	c := Cursor{CreatedAt: time.Date(2026, 11, 28, 9, 0, 0, 123456000, time.UTC), ID: uuid.New()}
	got, ok := parseCursor(c.encode())
	if !ok {
		t.Fatalf("parseCursor(%q) failed", c.encode())
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("cursor round trip (-want +got):\n%s", diff)
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, bad := range []string{
		"", "!!", "!!!", "Zm9v", "aGVsbG8", "MjAyNnx4", "bm9uZQ",
		c.encode()[:10], c.encode() + "=", strings.Repeat("A", 200),
		enc("123"), enc("abc." + uuid.NewString()), enc("-5." + uuid.NewString()), enc("0." + uuid.NewString()),
		enc("123.not-a-uuid-but-36-characters-lo"), enc("123." + strings.ReplaceAll(uuid.NewString(), "-", "")),
		enc("999999999999999999." + uuid.NewString()),
	} {
		if got, ok := parseCursor(bad); ok {
			t.Errorf("parseCursor(%q) = %v, want a failure", bad, got)
		}
	}
}

func TestParsePage(t *testing.T) {
	t.Parallel()
	after := Cursor{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), ID: uuid.New()}
	const (
		badLimit  = "limit must be an integer from 1 to 100"
		badCursor = "cursor is not one this service gave"
	)
	tests := []struct {
		name   string
		query  string
		want   Page
		detail string // of the 400, when one is wanted
	}{
		{"defaults", "", Page{Limit: 20}, ""},
		{"empty values", "limit=&cursor=", Page{Limit: 20}, ""},
		{"limit 1", "limit=1", Page{Limit: 1}, ""},
		{"limit 100", "limit=100", Page{Limit: 100}, ""},
		{"limit 37", "limit=37", Page{Limit: 37}, ""},
		{"cursor", "limit=5&cursor=" + after.encode(), Page{Limit: 5, After: &after}, ""},
		{"limit 0", "limit=0", Page{}, badLimit},
		{"limit 101", "limit=101", Page{}, badLimit},
		{"limit negative", "limit=-1", Page{}, badLimit},
		{"limit not a number", "limit=abc", Page{}, badLimit},
		{"limit fraction", "limit=1.5", Page{}, badLimit},
		{"limit exponent", "limit=1e2", Page{}, badLimit},
		{"limit with a space", "limit=%205", Page{}, badLimit},
		{"limit overflowing", "limit=99999999999999999999", Page{}, badLimit},
		{"bad cursor", "cursor=!!!", Page{}, badCursor},
		{"forged cursor", "cursor=bm90IGEgY3Vyc29y", Page{}, badCursor},
		{"bad limit before bad cursor", "limit=0&cursor=!!!", Page{}, badLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePage(httptest.NewRequest(http.MethodGet, "/v1/things?"+tt.query, nil))
			if tt.detail == "" {
				if err != nil {
					t.Fatalf("ParsePage(%q) = %v", tt.query, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ParsePage(%q) (-want +got):\n%s", tt.query, diff)
				}
				return
			}
			p, ok := errors.AsType[*Problem](err)
			if !ok {
				t.Fatalf("ParsePage(%q) = %v, %v; want a *Problem", tt.query, got, err)
			}
			if p.Status != http.StatusBadRequest || p.Code != CodeBadRequest || p.Detail != tt.detail {
				t.Errorf("ParsePage(%q) = %d %s %q, want 400 %s %q", tt.query, p.Status, p.Code, p.Detail, CodeBadRequest, tt.detail)
			}
		})
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	next := Cursor{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), ID: uuid.New()}
	double := func(n int) int { return 2 * n }
	tests := []struct {
		name string
		list any
		want string
	}{
		{"zero value", List[int]{}, `{"items":[]}`},
		{"no items", NewList([]int(nil), nil, double), `{"items":[]}`},
		{"last page", NewList([]int{1, 2}, nil, double), `{"items":[2,4]}`},
		{"more to come", NewList([]int{1}, &next, double), `{"items":[2],"next_cursor":"` + next.encode() + `"}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.list)
		if err != nil {
			t.Fatalf("%s: Marshal = %v", tt.name, err)
		}
		if string(b) != tt.want {
			t.Errorf("%s: Marshal = %s, want %s", tt.name, b, tt.want)
		}
	}
}

// jsonItem has a method MarshalJSON, whose output encoding/json compacts and escapes.
type jsonItem struct{ s string }

func (i jsonItem) MarshalJSON() ([]byte, error) { return json.Marshal(map[string]string{"s ": i.s}) }

func TestListEncodesAsJSONEncoderWould(t *testing.T) {
	t.Parallel()
	next := Cursor{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), ID: uuid.New()}
	type item struct {
		ID   uuid.UUID `json:"id"`
		Body string    `json:"body"`
		At   time.Time `json:"at"`
		Opt  *int      `json:"opt,omitempty"`
	}
	// Characters encoding/json escapes: HTML, controls, U+2028/U+2029, invalid UTF-8 (replaced).
	nasty := "<a href=\"x\">&amp;</a>\u2028\u2029\x00\x1f\t\n\\ é 😀 \xff"
	one := 1
	tests := []struct {
		name string
		list any
	}{
		{"zero value", List[item]{}},
		{"empty items", List[item]{Items: []item{}}},
		{"empty with a cursor", NewList([]int(nil), &next, func(n int) int { return n })},
		{"one item", NewList([]item{{ID: uuid.New(), Body: "b", At: next.CreatedAt}}, nil, func(i item) item { return i })},
		{"escaping", NewList([]string{nasty, strings.Repeat(nasty, 1000), ""}, &next, func(s string) item {
			return item{Body: s, Opt: &one}
		})},
		{"pointers and null", List[*item]{Items: []*item{{Body: "x"}, nil}, NextCursor: next.encode()}},
		{"values with MarshalJSON", List[jsonItem]{Items: []jsonItem{{"<"}, {nasty}}}},
		{"nested lists", List[[]string]{Items: [][]string{nil, {}, {"a", "<"}}}},
		{"pointer to a list", &List[int]{Items: []int{1, 2, 3}, NextCursor: "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var want strings.Builder
			if err := json.NewEncoder(&want).Encode(tt.list); err != nil {
				t.Fatalf("json.Encoder = %v", err)
			}
			w := httptest.NewRecorder()
			Encode(w, http.StatusOK, tt.list)
			if got := w.Body.String(); got != want.String() {
				t.Errorf("Encode wrote\n%.300s\nwant (as json.Encoder)\n%.300s", got, want.String())
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if !json.Valid(w.Body.Bytes()) {
				t.Errorf("Encode wrote invalid JSON: %.300s", w.Body.String())
			}
		})
	}
}

// failingWriter accepts n bytes, then fails every write.
type failingWriter struct {
	n      int
	writes int // after the failure
}

var errClosed = errors.New("client went away")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		w.writes++
		return 0, errClosed
	}
	k := min(len(p), w.n)
	w.n -= k
	if k < len(p) {
		return k, errClosed
	}
	return k, nil
}

func TestListStopsAtAWriteError(t *testing.T) {
	t.Parallel()
	l := NewList(make([]string, 100), nil, func(s string) string { return strings.Repeat("x", 1000) })
	w := &failingWriter{n: 5000}
	if err := l.writeJSON(w); !errors.Is(err, errClosed) {
		t.Fatalf("writeJSON to a failing writer = %v, want %v", err, errClosed)
	}
	if w.writes != 0 {
		t.Errorf("writeJSON wrote %d more times after the first error, want none", w.writes)
	}
}

// liveHeapWriter discards what it is given, and records the most live heap seen at a write.
type liveHeapWriter struct{ peak uint64 }

func (w *liveHeapWriter) Write(p []byte) (int, error) {
	runtime.GC() // what is left is live: held by the encoder while it writes
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	w.peak = max(w.peak, s[0].Value.Uint64())
	return len(p), nil
}

// TestListIsWrittenItemByItem: while a list is written, the heap holds about one encoded item,
// never the whole encoded page. Each item here is 500 KB of text that JSON makes 1.8 MB.
//
// It runs alone (not in parallel), so that the heap it measures is its own.
func TestListIsWrittenItemByItem(t *testing.T) {
	const items = 10
	item := strings.Repeat("<&\u2028", 100_000) // 5 bytes of text, 18 of JSON
	encoded := 18 * 100_000
	l := NewList(make([]int, items), nil, func(int) string { return item })

	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	base := s[0].Value.Uint64()
	w := &liveHeapWriter{}
	Encode(&recorderWriter{w: w}, http.StatusOK, l)
	// The item being written, its encoding's buffer in encoding/json's pool, and slack; the page
	// whole would be 10 items.
	growth := w.peak - min(w.peak, base)
	t.Logf("live heap growth while writing %d items of %d bytes of JSON: %d bytes", items, encoded, growth)
	if growth > 4*uint64(encoded) {
		t.Errorf("live heap while writing a list of %d items of %d bytes of JSON grew by %d bytes, want at most 4 items", items, encoded, growth)
	}
}

// recorderWriter is an http.ResponseWriter that passes the body to w and keeps nothing.
type recorderWriter struct {
	w      io.Writer
	header http.Header
}

func (r *recorderWriter) Header() http.Header {
	if r.header == nil {
		r.header = http.Header{}
	}
	return r.header
}
func (r *recorderWriter) Write(p []byte) (int, error) { return r.w.Write(p) }
func (r *recorderWriter) WriteHeader(int)             {}
