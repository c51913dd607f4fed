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
	"unicode/utf8"

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
// Logins are throttled per account (see credentials.throttleKey) and per client address
// (account.EmailLimit, account.AddressLimit). An attempt is counted before its password is
// checked, atomically (postgres.Store.BeginLogin), so that a burst of simultaneous attempts gets
// no more answers than the limit; a successful login is then forgotten, so only failures count
// and the users behind one address are not locked out by their own logins. Once a limit is
// reached, every login for that key gets 429 rate_limited, even with the right password, until the
// window frees. An unknown email is checked against a dummy hash, so it costs what a wrong
// password costs; a password longer than any account can have is refused unhashed, as a failure.
//
// The client address is the connection's, or the one X-Forwarded-For gives when the connection
// comes from one of trusted (see clientAddr).
func handleLogin(log *slog.Logger, store *postgres.Store, hasher *password.Hasher, signer *token.Signer, trusted []netip.Prefix, logins *prometheus.CounterVec) http.Handler {
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
		keys := []postgres.LoginKey{
			{Limit: account.EmailLimit, Key: cred.throttleKey(req.Email)},
			{Limit: account.AddressLimit, Key: clientAddress(r, trusted)},
		}
		attempt, wait, err := store.BeginLogin(ctx, keys)
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

		// From here the attempt counts as a failure until it is settled.
		u, err := cred.check(ctx, hasher, req.Password)
		switch {
		case errors.Is(err, errInvalidCredentials):
			settle(ctx, log, store.FailLogin, attempt)
			logins.WithLabelValues("invalid_credentials").Inc()
			logThrottled(ctx, log, keys, attempt)
			invalidCredentials().Write(w)
			return
		case err != nil:
			// No verdict on the password (the hasher was busy, the client went away): no failure.
			settle(ctx, log, store.ForgetLogin, attempt)
			logins.WithLabelValues("error").Inc()
			writeError(w, r, log, err)
			return
		}
		settle(ctx, log, store.ForgetLogin, attempt) // the right password: no failure, token or not
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

// settleTimeout bounds settling a login attempt, which goes on when the client has gone away.
const settleTimeout = 5 * time.Second

// settle records how attempt ended, with store.FailLogin or store.ForgetLogin. An attempt it
// cannot settle is logged and soon taken for a failure (see postgres.BeginLogin); the client still
// gets its answer.
func settle(ctx context.Context, log *slog.Logger, how func(context.Context, postgres.LoginAttempt) error, attempt postgres.LoginAttempt) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := how(ctx, attempt); err != nil {
		log.WarnContext(ctx, "settle login attempt", "err", err)
	}
}

// logThrottled logs the failure that brings a key to its limit.
func logThrottled(ctx context.Context, log *slog.Logger, keys []postgres.LoginKey, attempt postgres.LoginAttempt) {
	for i, k := range keys {
		if i < len(attempt.Counts) && attempt.Counts[i] == k.Limit.Max {
			log.WarnContext(ctx, "logins throttled", "scope", k.Limit.Scope, "key", k.Key,
				"failures", k.Limit.Max, "window", k.Limit.Window.String())
		}
	}
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
// tell an unknown email from a wrong password; but a password longer than registration allows is
// refused unhashed, for no account can have it, and hashing it would only let anyone make the
// server work harder per request.
func (c credentials) check(ctx context.Context, hasher *password.Hasher, pw string) (account.User, error) {
	if len(pw) > account.MaxPassword && utf8.RuneCountInString(pw) > account.MaxPassword {
		return account.User{}, errInvalidCredentials
	}
	ok, err := hasher.Verify(ctx, pw, c.hash)
	if err != nil {
		return account.User{}, err
	}
	if !ok || !c.found || !c.user.Snapshot().Active() {
		return account.User{}, errInvalidCredentials
	}
	return c.user, nil
}

// clientAddress is the key of the per-address limit: the client's address (see clientAddr), an
// IPv6 one by its /64, which one host usually holds whole.
func clientAddress(r *http.Request, trusted []netip.Prefix) string {
	addr, ok := clientAddr(r, trusted)
	if !ok {
		return r.RemoteAddr // not an address: keyed as it is
	}
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.String()
		}
	}
	return addr.String()
}

// clientAddr is the address of the client: the connection's, unless that is one of the trusted
// proxies. Then it is the address X-Forwarded-For gives for the client: the rightmost one (of all
// the header's values, in order) that is not itself a trusted proxy, every entry right of it
// having been appended by trusted proxies; the leftmost when all are trusted. Anything left of
// that entry is the client's to write, and ignored. A malformed entry on the way, or no header,
// leaves the connection's address. ok is false when the connection's address is no address.
func clientAddr(r *http.Request, trusted []netip.Prefix) (addr netip.Addr, ok bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	conn, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	conn = conn.Unmap()
	if !isTrusted(conn, trusted) {
		return conn, true
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return conn, true
		}
		if i == 0 || !isTrusted(a, trusted) {
			return a, true
		}
	}
	return conn, true // no header
}

// parseHop parses an entry of X-Forwarded-For: an address, bracketed or not, with or without a
// port (some proxies add it).
func parseHop(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// isTrusted reports whether addr is in one of the trusted prefixes.
func isTrusted(addr netip.Addr, trusted []netip.Prefix) bool {
	addr = addr.WithZone("") // Contains never matches an address with a zone
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
