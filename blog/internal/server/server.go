// Package server is the blog's HTTP API: routes, handlers, and the mapping of the blog's errors
// to the contract's problem details. It is the only package of the blog that knows HTTP.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/authmesh/blog/internal/blog"
	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
)

// Authenticator lets through only requests of an authenticated, active user, whom it puts in the
// request context (auth.UserFrom), and answers the others itself. *auth.Authenticator is one.
type Authenticator interface {
	Require(h http.Handler) http.Handler
}

// New returns a mux serving the blog's API. The caller adds health, metrics and the global
// middleware (service.Base.Serve does).
func New(log *slog.Logger, store *postgres.Store, authn Authenticator) *http.ServeMux {
	mux := http.NewServeMux()
	addRoutes(mux, log, store, authn)
	return mux
}

// post is the JSON of a post.
type post struct {
	ID         uuid.UUID `json:"id"`
	AuthorID   uuid.UUID `json:"author_id"`
	AuthorName string    `json:"author_name"`
	Title      string    `json:"title"`
	Body       string    `json:"body"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func toJSON(p blog.Post) post {
	return post{
		ID:         p.ID,
		AuthorID:   p.AuthorID,
		AuthorName: p.AuthorName,
		Title:      p.Title,
		Body:       p.Body,
		CreatedAt:  p.CreatedAt.UTC(),
		UpdatedAt:  p.UpdatedAt.UTC(),
	}
}

// errNoUser means a protected handler ran without Require: a wiring bug, hence a 500.
var errNoUser = errors.New("no authenticated user in the request context")

// user returns the user Require put in the request context.
func user(r *http.Request) (events.User, error) {
	u, ok := auth.UserFrom(r.Context())
	if !ok {
		return events.User{}, errNoUser
	}
	return u, nil
}

// parsePage reads ?author_id=, then ?limit= and ?cursor= as web.ParsePage does; anything
// malformed is a 400. A blog.Cursor has the fields of a web.Cursor, so the position converts as it
// is.
func parsePage(r *http.Request) (blog.Query, error) {
	var author uuid.UUID
	if s := r.URL.Query().Get("author_id"); s != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return blog.Query{}, web.BadRequest("author_id must be a UUID")
		}
		author = id
	}
	page, err := web.ParsePage(r)
	if err != nil {
		return blog.Query{}, err
	}
	return blog.Query{AuthorID: author, After: (*blog.Cursor)(page.After), Limit: page.Limit}, nil
}

// fieldErrors converts the blog's field errors to the contract's.
func fieldErrors(err *blog.ValidationError) []web.FieldError {
	out := make([]web.FieldError, len(err.Fields))
	for i, f := range err.Fields {
		out[i] = web.FieldError{Field: f.Field, Message: f.Message}
	}
	return out
}

// validErrors returns the field errors of a Validate result, or none.
func validErrors(err error) []web.FieldError {
	if v, ok := errors.AsType[*blog.ValidationError](err); ok {
		return fieldErrors(v)
	}
	return nil
}

// writeError answers err as a problem: the blog's sentinels map to their statuses, anything else
// is logged in full and answered with a generic 500.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if p, ok := errors.AsType[*web.Problem](err); ok {
		p.Write(w)
		return
	}
	if v, ok := errors.AsType[*blog.ValidationError](err); ok {
		web.Invalid(fieldErrors(v)).Write(w)
		return
	}
	switch {
	case errors.Is(err, blog.ErrNotFound):
		web.NotFound("no such post").Write(w)
	case errors.Is(err, blog.ErrForbidden):
		web.Forbidden("you may not do this to this post").Write(w)
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		log.DebugContext(r.Context(), "request canceled", "method", r.Method, "path", r.URL.Path)
		web.Unavailable("the request was canceled", time.Second).Write(w)
	case errors.Is(err, blog.ErrUnavailable):
		log.WarnContext(r.Context(), "storage unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		web.Unavailable("the service is temporarily unavailable", 2*time.Second).Write(w)
	default:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		web.Internal().Write(w)
	}
}
