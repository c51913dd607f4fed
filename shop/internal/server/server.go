// Package server is the shop's HTTP API: the routes of docs/contract.md over the postgres store,
// with authentication by events/auth and authorization from the user replica.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/shop"
)

// Authenticator lets through only requests of an authenticated, active user, whom it puts in the
// request context (auth.UserFrom), and answers the others itself. *auth.Authenticator is one.
type Authenticator interface {
	Require(h http.Handler) http.Handler
}

// New returns a mux serving the shop's API. The caller adds health and metrics and wraps it (see
// service.Base.Serve).
func New(log *slog.Logger, store *postgres.Store, authn Authenticator) *http.ServeMux {
	mux := http.NewServeMux()
	addRoutes(mux, log, store, authn)
	return mux
}

// requireCatalogueManager lets through only users who may manage the catalogue
// (shop.CanManageCatalogue); it must run inside Authenticator.Require.
func requireCatalogueManager(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !shop.CanManageCatalogue(u) {
			web.Forbidden("only an admin may do this").Write(w)
			return
		}
		h.ServeHTTP(w, r)
	})
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

// parsePage reads ?limit= and ?cursor= as web.ParsePage does. A shop.Cursor has the fields of a
// web.Cursor, so the position converts as it is.
func parsePage(r *http.Request) (shop.Page, error) {
	p, err := web.ParsePage(r)
	if err != nil {
		return shop.Page{}, err
	}
	return shop.Page{Limit: p.Limit, After: (*shop.Cursor)(p.After)}, nil
}

// writeError answers a failed request: problems as they are, the store's errors with their
// status, and anything else, logged in full, as a generic 500.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var (
		p   *web.Problem
		oos *shop.OutOfStockError
	)
	switch {
	case errors.As(err, &p):
	case errors.Is(err, shop.ErrNotFound):
		p = web.NotFound("no such resource")
	case errors.As(err, &oos):
		p = web.NewProblem(http.StatusConflict, web.CodeOutOfStock,
			fmt.Sprintf("product %s (%q) has %d in stock, %d requested; nothing was reserved", oos.ProductID, oos.Name, oos.Available, oos.Requested))
	case errors.Is(err, shop.ErrIdempotencyKeyReused):
		p = web.NewProblem(http.StatusUnprocessableEntity, web.CodeIdempotencyKeyReused,
			"the Idempotency-Key was used before with a different request")
	case errors.Is(err, shop.ErrUnavailable):
		log.WarnContext(r.Context(), "request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		p = web.Unavailable("the shop is busy, retry shortly", time.Second)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		log.DebugContext(r.Context(), "request canceled", "method", r.Method, "path", r.URL.Path)
		p = web.Unavailable("the request was canceled", time.Second)
	default:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		p = web.Internal()
	}
	p.Write(w)
}
