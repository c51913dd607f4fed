// Package benchauth holds the two authenticators that the benchmarks hold events/auth to, for
// docs/performance.md: Fixed, which skips authentication (the baseline of no authorization), and
// Remote, which asks account who the caller is on every request (the synchronous design that this
// project replaces). Both put the user in the request context where auth.Authenticator.Require
// does (auth.WithUser), so the handlers behind them run exactly as in production.
//
// Only the binaries built with the build tag bench wire them (blog/cmd/blog/bench.go,
// shop/cmd/shop/bench.go), under /bench/noauth/ and /bench/sync/; a production binary does not
// link this package.
package benchauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
)

// Fixed lets every request through as one fixed user, without looking at the request: the
// same endpoints with the authentication step skipped. The user is taken from the service's
// replica once, by the handler of Set, before the load starts.
type Fixed struct {
	users auth.Users
	user  atomic.Pointer[events.User]
}

// NewFixed returns a Fixed that takes its user from users (the replica).
func NewFixed(users auth.Users) *Fixed { return &Fixed{users: users} }

// Require puts the fixed user in the request context and calls h; it answers 503 until Set has
// chosen the user.
func (f *Fixed) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := f.user.Load()
		if u == nil {
			web.Unavailable("no fixed user yet: PUT /bench/user/{id} first", time.Second).Write(w)
			return
		}
		h.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), *u)))
	})
}

// Set returns the handler of PUT /bench/user/{id}: it looks the user up in the replica (waiting
// for it as a request would) and makes it the fixed user; 204, or 404 for a malformed id, or the
// lookup's failure as 503.
func (f *Fixed) Set() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := uuid.Parse(r.PathValue("id"))
		if err != nil {
			web.NotFound("no such user").Write(w)
			return
		}
		u, err := f.users.User(r.Context(), id, 1)
		if err != nil {
			web.Unavailable(fmt.Sprintf("look up user %s: %v", id, err), time.Second).Write(w)
			return
		}
		f.user.Store(&u)
		w.WriteHeader(http.StatusNoContent)
	})
}

// Remote authenticates every request by calling account's GET /v1/users/me with the request's
// Authorization header, and lets it through as the user account answers with: one HTTP round trip
// to account per request, on kept-alive connections.
type Remote struct {
	me     string
	client *http.Client
	log    *slog.Logger
}

// remoteTimeout bounds the call to account.
const remoteTimeout = 5 * time.Second

// NewRemote returns a Remote asking the account service at accountURL; a nil log discards.
func NewRemote(accountURL string, log *slog.Logger) *Remote {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Remote{
		me: strings.TrimRight(accountURL, "/") + "/v1/users/me",
		client: &http.Client{Timeout: remoteTimeout, Transport: &http.Transport{
			// As many kept connections as the load has clients: a synchronous design done well.
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
		}},
		log: log,
	}
}

// Require asks account who the request's bearer is and calls h with that user in the context.
// account's refusals (401, 403, 429) are passed on as account gave them; when account cannot be
// reached or fails, the answer is 503.
func (a *Remote) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := a.whoami(r.Context(), r.Header.Values("Authorization"), w)
		if err != nil {
			a.log.WarnContext(r.Context(), "ask account who the caller is", "err", err)
			web.Unavailable("account could not be asked who the caller is", time.Second).Write(w)
			return
		}
		if u == nil {
			return // account's refusal has been passed on
		}
		if !u.Active() {
			web.NewProblem(http.StatusForbidden, web.CodeUserDisabled, "the user is disabled").Write(w)
			return
		}
		h.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), *u)))
	})
}

// whoami calls GET /v1/users/me with authorization. It returns the user, or nil after writing
// account's refusal (a 4xx) to w, or an error.
func (a *Remote) whoami(ctx context.Context, authorization []string, w http.ResponseWriter) (*events.User, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.me, nil)
	if err != nil {
		return nil, err
	}
	req.Header["Authorization"] = authorization
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		var u events.User
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
			return nil, fmt.Errorf("decode user: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return &u, nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		for _, k := range []string{"Content-Type", "WWW-Authenticate", "Retry-After"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		return nil, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil, fmt.Errorf("account answered %d", resp.StatusCode)
}
