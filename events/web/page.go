package web

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Limits of ?limit= on every list endpoint.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// maxCursorLen bounds a cursor before it is decoded; one this package made is about 70 long.
const maxCursorLen = 128

// Cursor is a position in a list sorted by creation time, then id: the sort key of the last item
// of the previous page. Clients see it only encoded, as an opaque string.
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// A cursor is encoded as base64url("<created_at in Unix microseconds>.<id>"). Postgres keeps
// microseconds, so the position of a row read from it is exact.

// encode returns the opaque form of c, the next_cursor a client sends back as ?cursor=.
func (c Cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d.%s", c.CreatedAt.UnixMicro(), c.ID))
}

// parseCursor decodes the opaque form made by encode; ok is false for anything else.
func parseCursor(s string) (c Cursor, ok bool) {
	if len(s) > maxCursorLen {
		return Cursor{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, false
	}
	micros, idText, found := strings.Cut(string(raw), ".")
	if !found || len(idText) != 36 { // only the canonical form of a UUID
		return Cursor{}, false
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || us <= 0 {
		return Cursor{}, false
	}
	id, err := uuid.Parse(idText)
	if err != nil {
		return Cursor{}, false
	}
	at := time.UnixMicro(us).UTC()
	if at.Year() > 9999 { // beyond what Postgres or RFC 3339 can hold
		return Cursor{}, false
	}
	return Cursor{CreatedAt: at, ID: id}, true
}

// Page is the page a list request asks for: at most Limit items after After, or from the start
// when After is nil.
type Page struct {
	Limit int
	After *Cursor
}

// ParsePage reads ?limit= (1..MaxLimit, DefaultLimit when absent or empty) and ?cursor= (from
// the start when absent or empty). A bad one is a 400 bad_request *Problem.
func ParsePage(r *http.Request) (Page, error) {
	q := r.URL.Query()
	page := Page{Limit: DefaultLimit}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return Page{}, BadRequest(fmt.Sprintf("limit must be an integer from 1 to %d", MaxLimit))
		}
		page.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		c, ok := parseCursor(s)
		if !ok {
			return Page{}, BadRequest("cursor is not one this service gave")
		}
		page.After = &c
	}
	return page, nil
}

// List is the response of every list endpoint: {"items":[...],"next_cursor":"..."}, next_cursor
// left out on the last page. Encode writes it item by item (see writeJSON).
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// NewList converts a page of items with conv; next, the position after the page, is nil on the
// last page.
func NewList[D, T any](items []D, next *Cursor, conv func(D) T) List[T] {
	l := List[T]{Items: make([]T, len(items))}
	for i, d := range items {
		l.Items[i] = conv(d)
	}
	if next != nil {
		l.NextCursor = next.encode()
	}
	return l
}

// MarshalJSON encodes l with "items":[] when it has none, never null.
func (l List[T]) MarshalJSON() ([]byte, error) {
	if l.Items == nil {
		l.Items = []T{}
	}
	type plain List[T] // without the method, so that Marshal does not recurse
	return json.Marshal(plain(l))
}

// writeJSON writes l to w exactly as Encode's json.Encoder would (the JSON of MarshalJSON and a
// newline), but one item at a time: only one encoded item is in memory at once, never the whole
// page. Escaping can make a page's JSON six times its text ("<" becomes \u003c), so encoding a
// page whole would cost the server up to six times the page, per request. It returns the first
// error of encoding or writing; whatever was written before stays written.
func (l List[T]) writeJSON(w io.Writer) error {
	if _, err := io.WriteString(w, `{"items":[`); err != nil {
		return err
	}
	for i, item := range l.Items {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		b, err := json.Marshal(item)
		if err != nil {
			return fmt.Errorf("encode item %d: %w", i, err)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	tail := "]}\n"
	if l.NextCursor != "" {
		next, err := json.Marshal(l.NextCursor)
		if err != nil {
			return fmt.Errorf("encode next_cursor: %w", err)
		}
		tail = `],"next_cursor":` + string(next) + "}\n"
	}
	_, err := io.WriteString(w, tail)
	return err
}
