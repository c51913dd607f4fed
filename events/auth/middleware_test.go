package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/logging"
	"github.com/authmesh/events/replica"
	"github.com/authmesh/events/web"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// fakeUsers is a Users of fixed answers; it records the version asked for.
type fakeUsers struct {
	users map[uuid.UUID]events.User
	err   error
	asked int64
}

func (f *fakeUsers) User(_ context.Context, id uuid.UUID, minVersion int64) (events.User, error) {
	f.asked = minVersion
	if f.err != nil {
		return events.User{}, f.err
	}
	u, ok := f.users[id]
	if !ok {
		return events.User{}, auth.ErrUnknownUser
	}
	return u, nil
}

func TestRequire(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	keys, err := auth.NewKeySet(iss.JWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog"}

	// The token claims admin and version 3; the service's view says user only.
	tokenUser := authtest.NewUser(events.RoleAdmin)
	tokenUser.Version = 3
	stored := tokenUser
	stored.Roles = []string{events.RoleUser}
	stored.Version = 4
	disabled := authtest.NewUser()
	disabled.Status = events.StatusDisabled
	unknown := authtest.NewUser()
	tok := iss.Token(t, tokenUser)
	other := authtest.NewIssuer(t) // a key the verifier does not know

	type want struct {
		status       int
		code         string // of the problem; empty for 200
		authenticate string
		retryAfter   string
	}
	unauthenticated := want{http.StatusUnauthorized, web.CodeUnauthenticated, "Bearer", ""}
	invalid := want{http.StatusUnauthorized, web.CodeUnauthenticated, `Bearer error="invalid_token"`, ""}
	lagging := want{http.StatusServiceUnavailable, web.CodeReplicaLagging, "", "1"}
	ok := want{status: http.StatusOK}

	tests := []struct {
		name   string
		header map[string][]string
		target string
		cookie *http.Cookie
		err    error // of Users
		want   want
	}{
		{name: "valid", header: authHeader("Bearer " + tok), want: ok},
		{name: "J23 bearer lower case", header: authHeader("bearer " + tok), want: ok},
		{name: "bearer upper case", header: authHeader("BEARER " + tok), want: ok},
		{name: "extra spaces", header: authHeader("Bearer   " + tok + " "), want: ok},
		{name: "no header", want: unauthenticated},
		{name: "J23 basic", header: authHeader("Basic dXNlcjpwYXNz"), want: unauthenticated},
		{name: "J23 token as basic", header: authHeader("Basic " + tok), want: unauthenticated},
		{name: "J23 token alone", header: authHeader(tok), want: unauthenticated},
		{name: "J23 token in query", target: "/?access_token=" + tok, want: unauthenticated},
		{name: "J23 token in cookie", cookie: &http.Cookie{Name: "access_token", Value: tok}, want: unauthenticated},
		{name: "bearer without token", header: authHeader("Bearer "), want: invalid},
		{name: "two headers", header: authHeader("Bearer "+tok, "Bearer "+tok), want: invalid},
		{name: "garbage token", header: authHeader("Bearer abc.def.ghi"), want: invalid},
		{name: "unknown key", header: authHeader("Bearer " + other.Token(t, tokenUser)), want: invalid},
		{name: "J20 unknown user", header: authHeader("Bearer " + iss.Token(t, unknown)), want: invalid},
		{name: "J21 disabled user", header: authHeader("Bearer " + iss.Token(t, disabled)),
			want: want{status: http.StatusForbidden, code: web.CodeUserDisabled}},
		{name: "not current", header: authHeader("Bearer " + tok), err: auth.ErrNotCurrent, want: lagging},
		{name: "replica lagging", header: authHeader("Bearer " + tok), err: replica.ErrLagging, want: lagging},
		{name: "replica stale", header: authHeader("Bearer " + tok), err: replica.ErrStale, want: lagging},
		{name: "replica lagging wrapped", header: authHeader("Bearer " + tok), err: fmt.Errorf("user: %w", replica.ErrLagging), want: lagging},
		{name: "unknown user wrapped", header: authHeader("Bearer " + tok), err: fmt.Errorf("user: %w", auth.ErrUnknownUser), want: invalid},
		{name: "users failing", header: authHeader("Bearer " + tok), err: errors.New("connection refused"),
			want: want{http.StatusServiceUnavailable, web.CodeUnavailable, "", "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &fakeUsers{users: map[uuid.UUID]events.User{stored.ID: stored, disabled.ID: disabled}, err: tt.err}
			var got *events.User
			h := auth.New(v, users, nil).Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				u, ok := auth.UserFrom(r.Context())
				if !ok {
					t.Error("UserFrom() found no user in the handler")
				}
				got = &u
			}))
			target := tt.target
			if target == "" {
				target = "/"
			}
			req := httptest.NewRequest(http.MethodGet, target, nil)
			for _, v := range tt.header["Authorization"] {
				req.Header.Add("Authorization", v)
			}
			if tt.cookie != nil {
				req.AddCookie(tt.cookie)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			res := rec.Result()
			if res.StatusCode != tt.want.status {
				t.Fatalf("status = %d, want %d (body %s)", res.StatusCode, tt.want.status, rec.Body)
			}
			if h := res.Header.Get("WWW-Authenticate"); h != tt.want.authenticate {
				t.Errorf("WWW-Authenticate = %q, want %q", h, tt.want.authenticate)
			}
			if h := res.Header.Get("Retry-After"); h != tt.want.retryAfter {
				t.Errorf("Retry-After = %q, want %q", h, tt.want.retryAfter)
			}
			if tt.want.status == http.StatusOK {
				if got == nil {
					t.Fatal("handler not called")
				}
				// Everything, roles included, comes from Users, not from the token.
				if diff := cmp.Diff(stored, *got); diff != "" {
					t.Errorf("user in context (-want +got):\n%s", diff)
				}
				if users.asked != tokenUser.Version {
					t.Errorf("Users asked for version %d, want the token's %d", users.asked, tokenUser.Version)
				}
				return
			}
			if got != nil {
				t.Error("handler called on a refused request")
			}
			if ct := res.Header.Get("Content-Type"); ct != web.ProblemContentType {
				t.Errorf("Content-Type = %q, want %q", ct, web.ProblemContentType)
			}
			var p web.Problem
			if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
				t.Fatalf("decode problem: %v", err)
			}
			if p.Code != tt.want.code || p.Status != tt.want.status {
				t.Errorf("problem code %q status %d, want %q %d", p.Code, p.Status, tt.want.code, tt.want.status)
			}
		})
	}
}

func authHeader(vals ...string) map[string][]string {
	return map[string][]string{"Authorization": vals}
}

func TestWithUser(t *testing.T) {
	t.Parallel()
	if _, ok := auth.UserFrom(context.Background()); ok {
		t.Error("UserFrom(empty context) found a user")
	}
	u := authtest.NewUser()
	got, ok := auth.UserFrom(auth.WithUser(context.Background(), u))
	if !ok {
		t.Fatal("UserFrom(WithUser) found no user")
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("UserFrom(WithUser) (-want +got):\n%s", diff)
	}
	// The lines logged with the request's context, and its access line, name the user.
	req := logging.WithRequestID(context.Background(), "r-1")
	auth.WithUser(req, u)
	if got := logging.UserID(req); got != u.ID.String() {
		t.Errorf("logging.UserID of the request after WithUser = %q, want %s", got, u.ID)
	}
}

// An expired token is refused like any bad token.
func TestRequireExpired(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	keys, err := auth.NewKeySet(iss.JWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog", Now: func() time.Time { return time.Now().Add(time.Hour) }}
	u := authtest.NewUser()
	h := auth.New(v, &fakeUsers{users: map[uuid.UUID]events.User{u.ID: u}}, nil).Require(http.NotFoundHandler())
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+iss.Token(t, u))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
		t.Errorf("expired token: status %d WWW-Authenticate %q, want 401 invalid_token", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}
