package server

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
)

// Limits of ?limit=.
const (
	defaultLimit = 20
	maxLimit     = 100
)

// list is the response of every list endpoint.
type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// newList converts a page of domain values; items is never null in JSON.
func newList[D, T any](ds []D, next *shop.Cursor, conv func(D) T) list[T] {
	l := list[T]{Items: make([]T, len(ds))}
	for i, d := range ds {
		l.Items[i] = conv(d)
	}
	if next != nil {
		l.NextCursor = encodeCursor(*next)
	}
	return l
}

// parsePage reads ?limit= (1..100, default 20) and ?cursor=; a bad one is a 400.
func parsePage(r *http.Request) (shop.Page, error) {
	q := r.URL.Query()
	page := shop.Page{Limit: defaultLimit}
	if q.Has("limit") {
		s := q.Get("limit")
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return shop.Page{}, web.BadRequest("limit must be an integer from 1 to 100")
		}
		page.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		c, ok := decodeCursor(s)
		if !ok {
			return shop.Page{}, web.BadRequest("cursor is not one this service gave")
		}
		page.After = &c
	}
	return page, nil
}

// A cursor is the base64url of "<created_at RFC 3339>|<id>" of the last item of a page.

func encodeCursor(c shop.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.CreatedAt.UTC().Format(time.RFC3339Nano) + "|" + c.ID.String()))
}

func decodeCursor(s string) (shop.Cursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return shop.Cursor{}, false
	}
	ts, id, ok := strings.Cut(string(b), "|")
	if !ok {
		return shop.Cursor{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return shop.Cursor{}, false
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return shop.Cursor{}, false
	}
	return shop.Cursor{CreatedAt: t, ID: u}, true
}
