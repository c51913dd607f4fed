package server

import (
	"testing"
	"time"

	"github.com/authmesh/blog/internal/blog"
	"github.com/google/uuid"
)

func TestCursorRoundTrip(t *testing.T) {
	want := blog.Key{CreatedAt: time.Date(2026, 11, 28, 9, 0, 0, 123456000, time.UTC), ID: uuid.New()}
	s := formatCursor(want)
	got, err := parseCursor(s)
	if err != nil {
		t.Fatalf("parseCursor(%q) = %v", s, err)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || got.ID != want.ID {
		t.Errorf("parseCursor(formatCursor(%v)) = %v", want, got)
	}
	for _, bad := range []string{"", "!!", "bm9uZQ", formatCursor(want)[:10], formatCursor(want) + "="} {
		if _, err := parseCursor(bad); err == nil {
			t.Errorf("parseCursor(%q) = nil error, want one", bad)
		}
	}
}
