package web

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
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
