package benchauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/benchauth"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// users is a replica holding one user.
type users struct{ u events.User }

func (s users) User(_ context.Context, id uuid.UUID, _ int64) (events.User, error) {
	if id != s.u.ID {
		return events.User{}, errors.New("not found")
	}
	return s.u, nil
}

// echo answers 200 with the user of the context as JSON, or 500 without one.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	u, ok := auth.UserFrom(r.Context())
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(u)
})

func TestFixed(t *testing.T) {
	u := authtest.NewUser()
	f := benchauth.NewFixed(users{u})
	mux := http.NewServeMux()
	mux.Handle("PUT /bench/user/{id}", f.Set())
	mux.Handle("GET /x", f.Require(echo))

	if got := serve(mux, "GET", "/x", ""); got.Code != http.StatusServiceUnavailable {
		t.Errorf("before Set: GET = %d, want 503", got.Code)
	}
	if got := serve(mux, "PUT", "/bench/user/"+uuid.NewString(), ""); got.Code != http.StatusServiceUnavailable {
		t.Errorf("Set of an unknown user = %d, want 503", got.Code)
	}
	if got := serve(mux, "PUT", "/bench/user/nope", ""); got.Code != http.StatusNotFound {
		t.Errorf("Set of a malformed id = %d, want 404", got.Code)
	}
	if got := serve(mux, "PUT", "/bench/user/"+u.ID.String(), ""); got.Code != http.StatusNoContent {
		t.Fatalf("Set = %d, want 204", got.Code)
	}
	got := serve(mux, "GET", "/x", "")
	if got.Code != http.StatusOK {
		t.Fatalf("GET = %d, want 200", got.Code)
	}
	wantUser(t, got, u)
}

func TestRemote(t *testing.T) {
	u := authtest.NewUser()
	disabled := authtest.NewUser()
	disabled.Status = events.StatusDisabled
	// account: knows two tokens.
	account := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/users/me" {
			http.NotFound(w, r)
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			_ = json.NewEncoder(w).Encode(map[string]any{"id": u.ID, "email": u.Email, "display_name": u.DisplayName,
				"roles": u.Roles, "status": u.Status, "version": u.Version, "created_at": "2026-12-01T00:00:00Z"})
		case "Bearer disabled":
			_ = json.NewEncoder(w).Encode(disabled)
		case "Bearer broken":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"status":401,"code":"unauthenticated"}`))
		}
	}))
	defer account.Close()
	h := benchauth.NewRemote(account.URL+"/", nil).Require(echo)

	got := serve(h, "GET", "/x", "Bearer good")
	if got.Code != http.StatusOK {
		t.Fatalf("good token: %d, want 200", got.Code)
	}
	wantUser(t, got, u)

	tests := []struct {
		name, authorization string
		want                int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"bad token", "Bearer bad", http.StatusUnauthorized},
		{"disabled", "Bearer disabled", http.StatusForbidden},
		{"account fails", "Bearer broken", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := serve(h, "GET", "/x", tt.authorization)
			if got.Code != tt.want {
				t.Errorf("status %d, want %d; body %s", got.Code, tt.want, got.Body)
			}
			if tt.want == http.StatusUnauthorized && got.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Errorf("WWW-Authenticate %q, want account's", got.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func serve(h http.Handler, method, path, authorization string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func wantUser(t *testing.T, got *httptest.ResponseRecorder, want events.User) {
	t.Helper()
	var u events.User
	if err := json.Unmarshal(got.Body.Bytes(), &u); err != nil {
		t.Fatalf("decode %s: %v", got.Body, err)
	}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("user in the context (-want +got):\n%s", diff)
	}
}
