package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/logging"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors a Users returns that Require understands; any other error is a failed lookup (503
// unavailable). A Users wraps them in errors of its own (errors.Is sees through).
var (
	// ErrUnknownUser means the source of truth lacks the user (account's own database): the
	// request is unauthenticated, 401. A replica never returns it; it waits, then answers
	// ErrNotCurrent.
	ErrUnknownUser = errors.New("unknown user")
	// ErrNotCurrent means the user is not current yet: this service does not hold the user at the
	// token's version (a replica that lags, or that could not apply one of the user's events). The
	// answer is 503 replica_lagging with Retry-After.
	ErrNotCurrent = errors.New("user not current yet")
)

// Users gives the current state of a user, at least at version minVersion, or an error of the
// ones above.
type Users interface {
	User(ctx context.Context, id uuid.UUID, minVersion int64) (events.User, error)
}

// Authenticator is the HTTP middleware of token authentication.
type Authenticator struct {
	verifier *Verifier
	users    Users
	log      *slog.Logger
	// tokens remembers the tokens that verified (nil: none is remembered).
	tokens *tokenCache
	m      *metrics
}

// Option configures an Authenticator.
type Option func(*options)

type options struct {
	cacheSize int
	metrics   prometheus.Registerer
}

// WithTokenCache sets how many verified tokens the authenticator remembers (DefaultTokenCacheSize
// by default); 0 verifies every token afresh.
func WithTokenCache(size int) Option { return func(o *options) { o.cacheSize = size } }

// WithMetrics registers the authenticator's metrics (token cache lookups by result, decisions by
// outcome) with reg.
func WithMetrics(reg prometheus.Registerer) Option { return func(o *options) { o.metrics = reg } }

// New returns an authenticator. A nil log discards.
func New(v *Verifier, users Users, log *slog.Logger, opts ...Option) *Authenticator {
	o := options{cacheSize: DefaultTokenCacheSize}
	for _, opt := range opts {
		opt(&o)
	}
	return &Authenticator{
		verifier: v,
		users:    users,
		log:      orDiscard(log),
		tokens:   newTokenCache(o.cacheSize, v.Keys, v.Now),
		m:        newMetrics(o.metrics),
	}
}

// retryAfter is the Retry-After of the 503 answers: the replica usually catches up in
// milliseconds, and a brief outage should not keep clients away for long.
const retryAfter = time.Second

// Require lets through only requests with a valid bearer token in the Authorization header, of an
// active user, and puts the user in the request context (see UserFrom). It answers 401
// unauthenticated with WWW-Authenticate: Bearer (and error="invalid_token" when a token was sent),
// 403 user_disabled, or 503 replica_lagging with Retry-After when the replica lags or is stale
// for the user.
func (a *Authenticator) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p := a.authenticate(r)
		a.m.decided(p)
		if p != nil {
			p.Write(w)
			return
		}
		h.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
	})
}

// authenticate returns the user of r's token, or the problem to answer. It logs failures without
// the token.
func (a *Authenticator) authenticate(r *http.Request) (events.User, *web.Problem) {
	ctx := r.Context()
	token, sent := bearer(r.Header)
	if token == "" {
		if sent {
			a.log.DebugContext(ctx, "authentication refused", "reason", "malformed authorization header")
			return events.User{}, invalidToken()
		}
		return events.User{}, unauthenticated()
	}
	t, err := a.verify(token)
	if err != nil {
		a.log.DebugContext(ctx, "authentication refused", "err", err)
		return events.User{}, invalidToken()
	}
	id := t.subject
	u, err := a.users.User(ctx, id, t.ver)
	switch {
	case errors.Is(err, ErrUnknownUser):
		a.log.InfoContext(ctx, "authentication refused", "user_id", id, "err", err)
		return events.User{}, invalidToken()
	case errors.Is(err, ErrNotCurrent):
		a.log.InfoContext(ctx, "user not current in replica", "user_id", id, "ver", t.ver, "err", err)
		p := web.NewProblem(http.StatusServiceUnavailable, web.CodeReplicaLagging,
			"the latest state of this user has not reached this service yet; retry shortly")
		p.RetryAfter = retryAfter
		return events.User{}, p
	case err != nil:
		level := slog.LevelError
		if ctx.Err() != nil { // the client went away; nothing is wrong here
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "look up user", "user_id", id, "err", err)
		return events.User{}, web.Unavailable("the user could not be looked up; retry shortly", retryAfter)
	}
	if !u.Active() {
		a.log.InfoContext(ctx, "authentication refused", "user_id", id, "reason", "user disabled")
		return events.User{}, web.NewProblem(http.StatusForbidden, web.CodeUserDisabled, "the user is disabled")
	}
	return u, nil
}

// verify returns what token establishes: from the cache when it verified before under the same
// keys and has not expired, else from the Verifier (and then remembered).
func (a *Authenticator) verify(token string) (verified, error) {
	if a.tokens == nil {
		return a.verifyAfresh(token, 0)
	}
	if t, ok := a.tokens.get(token); ok {
		a.m.cacheHits.Inc()
		return t, nil
	}
	a.m.cacheMisses.Inc()
	gen := a.verifier.Keys.gen() // before the keys Verify reads (see KeySet.gen)
	t, err := a.verifyAfresh(token, gen)
	if err != nil {
		return verified{}, err
	}
	a.tokens.add(token, t)
	return t, nil
}

// verifyAfresh checks token with the Verifier.
func (a *Authenticator) verifyAfresh(token string, gen uint64) (verified, error) {
	c, err := a.verifier.Verify(token)
	if err != nil {
		return verified{}, err
	}
	id, err := uuid.Parse(c.Subject) // Verify checked it; this only converts
	if err != nil {
		return verified{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	t := verified{subject: id, ver: c.Ver, gen: gen}
	if c.ExpiresAt != nil {
		t.exp = c.ExpiresAt.Time
	}
	return t, nil
}

// bearer returns the token of the Authorization header (scheme Bearer, in any case), and whether
// a bearer credential was sent at all. Only the header is read: a token in the query string or a
// cookie would leak into logs and be open to CSRF. Several Authorization headers, or a Bearer
// without a token, count as sent but give no token.
func bearer(h http.Header) (token string, sent bool) {
	vals := h.Values("Authorization")
	if len(vals) == 0 {
		return "", false
	}
	if len(vals) > 1 {
		return "", true
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

func unauthenticated() *web.Problem {
	p := web.NewProblem(http.StatusUnauthorized, web.CodeUnauthenticated, "a bearer token is required")
	p.Authenticate = "Bearer"
	return p
}

func invalidToken() *web.Problem {
	p := web.NewProblem(http.StatusUnauthorized, web.CodeUnauthenticated, "the access token is invalid or expired")
	p.Authenticate = `Bearer error="invalid_token"`
	return p
}

type ctxKey struct{}

// UserFrom returns the authenticated user that Require put in ctx.
func UserFrom(ctx context.Context) (events.User, bool) {
	u, ok := ctx.Value(ctxKey{}).(events.User)
	return u, ok
}

// WithUser returns ctx carrying u, as Require does; for tests of handlers. The lines logged with
// it name the user (user_id, events/logging), and so does the request's access line.
func WithUser(ctx context.Context, u events.User) context.Context {
	return context.WithValue(logging.WithUserID(ctx, u.ID.String()), ctxKey{}, u)
}
