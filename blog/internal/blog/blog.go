// Package blog is the vocabulary of the blog service: posts, what makes a post valid, and who may
// change or remove one. It knows neither the database nor HTTP.
package blog

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits of a post, counted in characters (Unicode code points).
const (
	MaxTitle = 200
	MaxBody  = 100_000
)

// Errors the store and the handlers share.
var (
	// ErrNotFound means no post has the requested id.
	ErrNotFound = errors.New("post not found")
	// ErrForbidden means the user may not do this to the post.
	ErrForbidden = errors.New("not allowed")
	// ErrUnavailable means the database cannot serve right now; the request may be retried.
	ErrUnavailable = errors.New("storage unavailable")
)

// Post is a blog post as readers see it.
type Post struct {
	ID       uuid.UUID
	AuthorID uuid.UUID
	// AuthorName is the author's display name from the user replica at read time; empty if the
	// replica does not hold the author.
	AuthorName string
	Title      string
	Body       string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Cursor is the position after which a page of posts starts: the sort key of the last post seen
// (lists are newest first: CreatedAt descending, then ID descending).
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// Cursor returns the position of p in post lists.
func (p Post) Cursor() Cursor { return Cursor{CreatedAt: p.CreatedAt, ID: p.ID} }

// Query selects one page of posts, newest first.
type Query struct {
	// AuthorID, unless uuid.Nil, keeps only that author's posts.
	AuthorID uuid.UUID
	// After, when set, starts the page after the post with this key.
	After *Cursor
	// Limit is the most posts of the page, at least 1. A page may hold fewer, with Next set, when
	// the store bounds the bytes of a page (postgres.PageBytes).
	Limit int
}

// Page is one page of posts.
type Page struct {
	Posts []Post
	// Next is the key to pass as Query.After for the next page; nil on the last page.
	Next *Cursor
}

// FieldError names one invalid field.
type FieldError struct {
	Field   string
	Message string
}

// ValidationError lists the invalid fields of a draft or a patch.
type ValidationError struct {
	Fields []FieldError
}

// Error implements error.
func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	return "invalid post: " + strings.Join(msgs, "; ")
}

// Draft is a new post as its author writes it.
type Draft struct {
	Title string
	Body  string
}

// Validate returns a *ValidationError naming every invalid field, or nil.
func (d Draft) Validate() error {
	var errs []FieldError
	if msg := checkTitle(d.Title); msg != "" {
		errs = append(errs, FieldError{Field: "title", Message: msg})
	}
	if msg := checkBody(d.Body); msg != "" {
		errs = append(errs, FieldError{Field: "body", Message: msg})
	}
	return invalid(errs)
}

// Patch is a change to a post; a nil field is left as it is.
type Patch struct {
	Title *string
	Body  *string
}

// Validate returns a *ValidationError naming every invalid field, or nil. A patch that sets
// neither field is invalid: it is almost certainly a client bug (a misspelt field is already
// refused as unknown, so this catches an empty object), and refusing it keeps updated_at honest.
func (p Patch) Validate() error {
	if p.Title == nil && p.Body == nil {
		const msg = "give title, body or both"
		return invalid([]FieldError{{Field: "title", Message: msg}, {Field: "body", Message: msg}})
	}
	var errs []FieldError
	if p.Title != nil {
		if msg := checkTitle(*p.Title); msg != "" {
			errs = append(errs, FieldError{Field: "title", Message: msg})
		}
	}
	if p.Body != nil {
		if msg := checkBody(*p.Body); msg != "" {
			errs = append(errs, FieldError{Field: "body", Message: msg})
		}
	}
	return invalid(errs)
}

func invalid(errs []FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Fields: errs}
}

// checkTitle returns why title is invalid, or "". A title is one line: 1..MaxTitle characters,
// not blank, without control characters. It is stored as given, not trimmed.
func checkTitle(title string) string {
	if strings.TrimSpace(title) == "" {
		return "is required"
	}
	if n := utf8.RuneCountInString(title); n > MaxTitle {
		return fmt.Sprintf("must be at most %d characters, not %d", MaxTitle, n)
	}
	if strings.ContainsFunc(title, unicode.IsControl) {
		return "must not contain control characters"
	}
	return ""
}

// checkBody returns why body is invalid, or "". A body is 1..MaxBody characters, not blank, and
// without NUL (which Postgres text cannot hold); newlines and tabs are welcome.
func checkBody(body string) string {
	if strings.TrimSpace(body) == "" {
		return "is required"
	}
	if n := utf8.RuneCountInString(body); n > MaxBody {
		return fmt.Sprintf("must be at most %d characters, not %d", MaxBody, n)
	}
	if strings.ContainsRune(body, 0) {
		return "must not contain NUL characters"
	}
	return ""
}
