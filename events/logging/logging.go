// Package logging adds to every log record what the context knows about the request it belongs
// to: the request id that web.Handler gives each request (request_id), and the user that the
// middleware of events/auth authenticated (user_id). Code that logs with the request's context,
// log.InfoContext(r.Context(), ...), gets both on its lines without naming them; a line logged
// without a context (log.Info) carries neither.
//
// It is a slog.Handler around another one (service.NewLogger wraps the JSON handler with it), not
// a logger of its own: everyone keeps calling log/slog.
package logging

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// The keys of the attributes a Handler adds.
const (
	RequestIDKey = "request_id"
	UserIDKey    = "user_id"
)

// Handler is a slog.Handler that adds request_id and user_id from the context of each record
// (WithRequestID, WithUserID) before handing it to the handler it wraps. A record or a logger
// (Logger.With) that names one of them itself keeps its own: no line has the key twice. Inside a
// group (Logger.WithGroup) the added attributes land in the group, as the record's own do.
type Handler struct {
	inner slog.Handler
	// ownRequestID and ownUserID say that the logger's own attributes (WithAttrs) name the key in
	// the group that is open, where the added attributes would land.
	ownRequestID, ownUserID bool
}

// NewHandler returns a Handler around inner.
func NewHandler(inner slog.Handler) *Handler { return &Handler{inner: inner} }

// Enabled reports whether the wrapped handler handles records of level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// Handle adds the context's request id and user id to r, unless r or the logger has them, and
// hands r to the wrapped handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var rid, uid string
	if ctx != nil {
		if !h.ownRequestID {
			rid = RequestID(ctx)
		}
		if !h.ownUserID {
			uid = UserID(ctx)
		}
	}
	if rid == "" && uid == "" {
		return h.inner.Handle(ctx, r)
	}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case RequestIDKey:
			rid = ""
		case UserIDKey:
			uid = ""
		}
		return rid != "" || uid != ""
	})
	if rid == "" && uid == "" {
		return h.inner.Handle(ctx, r)
	}
	// A copy that shares nothing with the caller's record, which another handler may also get.
	r = r.Clone()
	if rid != "" {
		r.AddAttrs(slog.String(RequestIDKey, rid))
	}
	if uid != "" {
		r.AddAttrs(slog.String(UserIDKey, uid))
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a Handler whose records carry attrs.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	for _, a := range attrs {
		switch a.Key {
		case RequestIDKey:
			c.ownRequestID = true
		case UserIDKey:
			c.ownUserID = true
		}
	}
	return &c
}

// WithGroup returns a Handler whose records' attributes go in the group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	// The new group is empty: nothing in it names the keys yet.
	return &Handler{inner: h.inner.WithGroup(name)}
}

type requestKey struct{}

type userKey struct{}

// request is what the context of one request knows: its id, fixed, and its user, noted once the
// middleware has authenticated it.
type request struct {
	id   string
	user atomic.Pointer[string]
}

// WithRequestID returns ctx carrying the request id id; it starts a request: the user that
// WithUserID notes later on a context derived from it is also seen through ctx itself, so that the
// line logged once the request is done (web.Handler's access line) names the user too.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestKey{}, &request{id: id})
}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string {
	if req, ok := ctx.Value(requestKey{}).(*request); ok {
		return req.id
	}
	return ""
}

// WithUserID returns ctx carrying the id of the authenticated user, and notes it for the request
// ctx belongs to (see WithRequestID).
func WithUserID(ctx context.Context, id string) context.Context {
	if req, ok := ctx.Value(requestKey{}).(*request); ok {
		req.user.Store(&id)
	}
	return context.WithValue(ctx, userKey{}, id)
}

// UserID returns the user id of ctx: the one WithUserID gave it, else the one noted for its
// request, else "".
func UserID(ctx context.Context) string {
	if id, ok := ctx.Value(userKey{}).(string); ok {
		return id
	}
	if req, ok := ctx.Value(requestKey{}).(*request); ok {
		if id := req.user.Load(); id != nil {
			return *id
		}
	}
	return ""
}
