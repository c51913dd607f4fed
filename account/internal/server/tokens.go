package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events/web"
	"github.com/prometheus/client_golang/prometheus"
)

// loginRequest is the body of POST /v1/tokens. Its fields are not validated: anything that is not
// a right email and password is the same invalid_credentials.
type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// tokenResponse is the answer to a successful login (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// errInvalidCredentials is every failed login: unknown email, wrong password, disabled user.
var errInvalidCredentials = errors.New("invalid credentials")

// invalidCredentials is the one answer to every failed login, byte for byte.
func invalidCredentials() *web.Problem {
	p := web.NewProblem(http.StatusUnauthorized, web.CodeInvalidCredentials, "the email or password is wrong")
	p.Authenticate = "Bearer"
	return p
}

// handleLogin exchanges an email and password for an access token.
//
// Failed logins are throttled per account (see credentials.throttleKey) and per client
// address (account.EmailLimit, account.AddressLimit): once a limit is reached, every login for
// that key gets 429 rate_limited, even with the right password, until the window frees. Only
// failures count, so the users behind one address are not locked out by their own logins. An
// unknown email is checked against a dummy hash, so it costs what a wrong password costs.
func handleLogin(log *slog.Logger, store *postgres.Store, hasher *password.Hasher, signer *token.Signer, logins *prometheus.CounterVec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var req loginRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		cred, err := lookUp(ctx, store, req.Email)
		if err != nil {
			logins.WithLabelValues("error").Inc()
			writeError(w, r, log, err)
			return
		}
		keys := []throttleKey{
			{account.EmailLimit, cred.throttleKey(req.Email)},
			{account.AddressLimit, clientAddress(r)},
		}
		wait, err := retryAfterFor(ctx, store, keys)
		if err != nil {
			logins.WithLabelValues("error").Inc()
			writeError(w, r, log, err)
			return
		}
		if wait > 0 {
			logins.WithLabelValues("rate_limited").Inc()
			p := web.NewProblem(http.StatusTooManyRequests, web.CodeRateLimited, "too many failed logins; retry later")
			p.RetryAfter = wait
			p.Write(w)
			return
		}

		u, err := cred.check(ctx, hasher, req.Password)
		if errors.Is(err, errInvalidCredentials) {
			logins.WithLabelValues("invalid_credentials").Inc()
			recordFailure(ctx, log, store, keys)
			invalidCredentials().Write(w)
			return
		}
		if err != nil {
			logins.WithLabelValues("error").Inc()
			writeError(w, r, log, err)
			return
		}
		tok, err := signer.Sign(u.Snapshot())
		if err != nil {
			logins.WithLabelValues("error").Inc()
			writeError(w, r, log, err)
			return
		}
		logins.WithLabelValues("success").Inc()
		log.InfoContext(ctx, "token issued", "user_id", u.ID, "version", u.Version)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		web.Encode(w, http.StatusOK, tokenResponse{
			AccessToken: tok,
			TokenType:   "Bearer",
			ExpiresIn:   int64(signer.TTL / time.Second),
		})
	})
}

// credentials are what a login is checked against: the user with the email, if any, and the
// hash to verify (the dummy one when there is no such user).
type credentials struct {
	user  account.User
	hash  string
	found bool
}

// lookUp finds the credentials of email. An address that could never have been registered is
// not looked up (a NUL byte, which Postgres text cannot hold, would fail the query).
func lookUp(ctx context.Context, store *postgres.Store, email string) (credentials, error) {
	c := credentials{hash: password.Dummy}
	if account.ValidateEmail(email) != "" {
		return c, nil
	}
	u, hash, err := store.Credentials(ctx, email)
	switch {
	case errors.Is(err, account.ErrNotFound):
		return c, nil
	case err != nil:
		return c, err
	}
	return credentials{user: u, hash: hash, found: true}, nil
}

// throttleKey is the key of the per-account limit: the user's id when the email names one, so
// that every spelling Postgres matches to the account (lower() folds more than ASCII) counts
// against it alike; else the lower-cased email, so unknown emails are throttled like known ones.
func (c credentials) throttleKey(email string) string {
	if c.found {
		return "user:" + c.user.ID.String()
	}
	return "email:" + strings.ToLower(email)
}

// check returns the user if password is right and the user active, else errInvalidCredentials,
// or an error of the hasher. The hash is verified in every case, so that the time taken does not
// tell an unknown email from a wrong password.
func (c credentials) check(ctx context.Context, hasher *password.Hasher, pw string) (account.User, error) {
	ok, err := hasher.Verify(ctx, pw, c.hash)
	if err != nil {
		return account.User{}, err
	}
	if !ok || !c.found || !c.user.Snapshot().Active() {
		return account.User{}, errInvalidCredentials
	}
	return c.user, nil
}

// throttleKey is a key counted under a limit.
type throttleKey struct {
	limit account.LoginLimit
	key   string
}

// retryAfterFor returns how long the most restrictive of keys refuses logins; zero if none does.
func retryAfterFor(ctx context.Context, store *postgres.Store, keys []throttleKey) (time.Duration, error) {
	var wait time.Duration
	for _, k := range keys {
		d, err := store.LoginRetryAfter(ctx, k.limit, k.key)
		if err != nil {
			return 0, err
		}
		wait = max(wait, d)
	}
	return wait, nil
}

// recordFailure counts a failed login under each key and logs the failure that reaches a limit.
// A failure it cannot record is logged; the client still gets its 401.
func recordFailure(ctx context.Context, log *slog.Logger, store *postgres.Store, keys []throttleKey) {
	for _, k := range keys {
		n, err := store.RecordLoginFailure(ctx, k.limit, k.key)
		if err != nil {
			log.WarnContext(ctx, "record login failure", "scope", k.limit.Scope, "err", err)
			continue
		}
		if n == k.limit.Max {
			log.WarnContext(ctx, "logins throttled", "scope", k.limit.Scope, "key", k.key,
				"failures", n, "window", k.limit.Window.String())
		}
	}
}

// clientAddress is the key of the per-address limit: the host of the connection's remote
// address (X-Forwarded-For is not trusted: any client can set it). An IPv6 client is keyed by its
// /64, which one host usually holds whole.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.String()
		}
	}
	return addr.String()
}
