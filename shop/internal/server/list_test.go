package server

import (
	"testing"
	"time"

	"github.com/authmesh/shop/internal/shop"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestCursor(t *testing.T) {
	t.Parallel()
	c := shop.Cursor{CreatedAt: time.Date(2026, 11, 28, 9, 0, 0, 123456000, time.UTC), ID: uuid.New()}
	got, ok := decodeCursor(encodeCursor(c))
	if !ok {
		t.Fatalf("decodeCursor(encodeCursor(%v)) failed", c)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("cursor round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "!!", "aGVsbG8", "MjAyNnx4"} {
		if _, ok := decodeCursor(bad); ok {
			t.Errorf("decodeCursor(%q) succeeded", bad)
		}
	}
}
