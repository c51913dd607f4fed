// Package server is account's HTTP API (see routes.go): registration, login, user
// administration, and the public keys. It is the only package that knows HTTP.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is what the API needs.
type Config struct {
	Log    *slog.Logger
	Store  *postgres.Store
	Hasher *password.Hasher
	Keys   *token.Keys
	Signer *token.Signer
	// Metrics, when set, receives the login metrics.
	Metrics prometheus.Registerer
	// PublicURL is the base of the URLs in openid-configuration (no trailing slash): the
	// configured one, never the request's Host.
	PublicURL string
	// TrustedProxies are the proxies whose X-Forwarded-For gives the client's address to login
	// throttling; with none, the header is ignored.
	TrustedProxies []netip.Prefix
}

// Authenticator lets through only requests of an authenticated, active user, whom it puts in the
// request context (auth.UserFrom), and answers the others itself. *auth.Authenticator is one.
type Authenticator interface {
	Require(h http.Handler) http.Handler
}

// New returns a mux serving the API. Account's own endpoints verify tokens with the keys of
// cfg.Keys (kept current by it) and read users from the database, so a disabled user's token is
// refused at once.
func New(cfg Config) *http.ServeMux {
	verifier := &auth.Verifier{Keys: cfg.Keys.Set(), Issuer: cfg.Signer.Issuer}
	authn := auth.New(verifier, users{cfg.Store}, cfg.Log, auth.WithMetrics(cfg.Metrics))
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "account_logins_total",
		Help: "Login attempts by result: success, invalid_credentials, rate_limited, error.",
	}, []string{"result"})
	hashes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "account_password_hashes_total",
		Help: "Password hashes computed, by registrations and logins alike.",
	}, func() float64 { return float64(cfg.Hasher.Runs()) })
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(logins, hashes)
	}
	mux := http.NewServeMux()
	addRoutes(mux, cfg, authn, logins)
	return mux
}

// users is the auth.Users of account: its own database, the source of truth.
type users struct{ store *postgres.Store }

// User returns the user's current state; minVersion needs no wait, the database being the
// source of every version.
func (u users) User(ctx context.Context, id uuid.UUID, _ int64) (events.User, error) {
	usr, err := u.store.User(ctx, id)
	if errors.Is(err, account.ErrNotFound) {
		return events.User{}, auth.ErrUnknownUser
	}
	if err != nil {
		return events.User{}, err
	}
	return usr.Snapshot(), nil
}

// retryAfter is the Retry-After of 503 answers.
const retryAfter = 2 * time.Second

// writeError answers err: a problem as it is, a domain error with its status, anything else as a
// 500 that reveals nothing, logged in full.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	ctx := r.Context()
	var p *web.Problem
	switch {
	case errors.As(err, &p):
	case errors.Is(err, account.ErrNotFound):
		p = web.NotFound("no such user")
	case errors.Is(err, account.ErrEmailTaken):
		p = web.NewProblem(http.StatusConflict, web.CodeEmailTaken, "a user with this email exists")
	case errors.Is(err, account.ErrLastAdmin):
		p = web.NewProblem(http.StatusConflict, web.CodeLastAdmin, "this would leave no active admin; make another user an admin first")
	case errors.Is(err, password.ErrBusy):
		log.WarnContext(ctx, "password hashing saturated", "path", r.URL.Path)
		p = web.Unavailable("the service is busy; retry shortly", retryAfter)
	case ctx.Err() != nil:
		// The client went away or timed out; nobody reads the answer.
		log.DebugContext(ctx, "request ended", "path", r.URL.Path, "err", err)
		p = web.Unavailable("the request was cancelled", retryAfter)
	case errors.Is(err, account.ErrUnavailable):
		log.WarnContext(ctx, "database unavailable", "path", r.URL.Path, "err", err)
		p = web.Unavailable("the service is temporarily unavailable; retry shortly", retryAfter)
	default:
		log.ErrorContext(ctx, "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		p = web.Internal()
	}
	p.Write(w)
}

// userJSON is a user as the API shows it.
type userJSON struct {
	ID          uuid.UUID `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Roles       []string  `json:"roles"`
	Status      string    `json:"status"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func toJSON(u account.User) userJSON {
	roles := u.Roles
	if roles == nil {
		roles = []string{}
	}
	return userJSON{
		ID:          u.ID,
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Roles:       roles,
		Status:      u.Status,
		Version:     u.Version,
		CreatedAt:   u.CreatedAt.UTC(),
		UpdatedAt:   u.UpdatedAt.UTC(),
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

// parsePage reads ?limit= and ?cursor= as web.ParsePage does. An account.Cursor has the fields of
// a web.Cursor, so the position converts as it is.
func parsePage(r *http.Request) (account.Page, error) {
	p, err := web.ParsePage(r)
	if err != nil {
		return account.Page{}, err
	}
	return account.Page{Limit: p.Limit, After: (*account.Cursor)(p.After)}, nil
}

// requireAdmin lets through only users who may administer users (account.CanAdminister); it must
// run inside Authenticator.Require.
func requireAdmin(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !account.CanAdminister(u) {
			web.Forbidden("this requires the admin role").Write(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}
