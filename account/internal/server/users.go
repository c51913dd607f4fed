package server

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/web"
	"github.com/google/uuid"
)

// registerRequest is the body of POST /v1/users.
type registerRequest struct {
	Email       string `json:"email"`
	Password    string `json:"password"`
	DisplayName string `json:"display_name"`
}

func (r registerRequest) registration() account.Registration {
	return account.Registration{
		Email:       r.Email,
		Password:    r.Password,
		DisplayName: account.NormalizeDisplayName(r.DisplayName),
	}
}

// Valid implements web.Validator.
func (r registerRequest) Valid() []web.FieldError {
	return fieldErrors(r.registration().Validate())
}

func fieldErrors(errs []account.FieldError) []web.FieldError {
	out := make([]web.FieldError, len(errs))
	for i, e := range errs {
		out[i] = web.FieldError{Field: e.Field, Message: e.Message}
	}
	return out
}

// handleRegister creates an active user with the role user: 201 with the user and its
// Location, 409 email_taken, 422 validation_failed.
func handleRegister(log *slog.Logger, store *postgres.Store, hasher *password.Hasher) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req registerRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		reg := req.registration()
		hash, err := hasher.Hash(r.Context(), reg.Password)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		u, err := store.CreateUser(r.Context(), postgres.NewUser{
			Email:        reg.Email,
			DisplayName:  reg.DisplayName,
			PasswordHash: hash,
		})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		log.InfoContext(r.Context(), "user registered", "user_id", u.ID)
		w.Header().Set("Location", "/v1/users/"+u.ID.String())
		web.Encode(w, http.StatusCreated, toJSON(u))
	})
}

// handleMe answers the authenticated user.
func handleMe(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		me, _ := auth.UserFrom(r.Context())
		u, err := store.User(r.Context(), me.ID)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toJSON(u))
	})
}

// handleGetUser answers a user to an admin or to the user; anyone else gets the 404 of a user
// that does not exist, so ids cannot be probed.
func handleGetUser(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, _ := auth.UserFrom(r.Context())
		if me.ID != id && !me.HasRole(events.RoleAdmin) {
			writeError(w, r, log, account.ErrNotFound)
			return
		}
		u, err := store.User(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toJSON(u))
	})
}

// List paging.
const (
	defaultLimit = 20
	maxLimit     = 100
)

// handleListUsers lists users oldest first, a page at a time.
func handleListUsers(log *slog.Logger, store *postgres.Store) http.Handler {
	type response struct {
		Items      []userJSON `json:"items"`
		NextCursor string     `json:"next_cursor,omitempty"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, err := parseLimit(q.Get("limit"))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		after, err := decodeCursor(q.Get("cursor"))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		list, err := store.ListUsers(r.Context(), after, limit+1)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		resp := response{Items: []userJSON{}}
		if len(list) > limit {
			list = list[:limit]
			last := list[len(list)-1]
			resp.NextCursor = encodeCursor(postgres.Cursor{CreatedAt: last.CreatedAt, ID: last.ID})
		}
		for _, u := range list {
			resp.Items = append(resp.Items, toJSON(u))
		}
		web.Encode(w, http.StatusOK, resp)
	})
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, web.BadRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", maxLimit))
	}
	return n, nil
}

// A cursor is base64url("<created_at in Unix microseconds>.<id>"): the position of the last user
// of the previous page. Postgres keeps microseconds, so the position is exact.

func encodeCursor(c postgres.Cursor) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d.%s", c.CreatedAt.UnixMicro(), c.ID))
}

func decodeCursor(s string) (postgres.Cursor, error) {
	if s == "" {
		return postgres.Cursor{}, nil
	}
	bad := web.BadRequest("cursor is not one this service gave")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return postgres.Cursor{}, bad
	}
	micros, idText, ok := strings.Cut(string(raw), ".")
	if !ok || len(idText) != 36 {
		return postgres.Cursor{}, bad
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || us <= 0 {
		return postgres.Cursor{}, bad
	}
	id, err := uuid.Parse(idText)
	if err != nil {
		return postgres.Cursor{}, bad
	}
	at := time.UnixMicro(us).UTC()
	if at.Year() > 9999 { // beyond what Postgres or RFC 3339 can hold
		return postgres.Cursor{}, bad
	}
	return postgres.Cursor{CreatedAt: at, ID: id}, nil
}

// rolesRequest is the body of PUT /v1/users/{id}/roles.
type rolesRequest struct {
	Roles []string `json:"roles"`
}

// Valid implements web.Validator.
func (r rolesRequest) Valid() []web.FieldError {
	if r.Roles == nil {
		return []web.FieldError{{Field: "roles", Message: "is required (a list of roles)"}}
	}
	for _, role := range r.Roles {
		if !events.ValidRole(role) {
			return []web.FieldError{{Field: "roles", Message: fmt.Sprintf("unknown role %q; roles are %s",
				role, strings.Join(events.Roles, ", "))}}
		}
	}
	return nil
}

// handleSetRoles replaces a user's roles ("user" is always kept): 200 with the user at its new
// version.
func handleSetRoles(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req rolesRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		u, err := store.SetRoles(r.Context(), id, req.Roles)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, _ := auth.UserFrom(r.Context())
		log.InfoContext(r.Context(), "roles changed", "user_id", u.ID, "roles", u.Roles, "version", u.Version, "by", me.ID)
		web.Encode(w, http.StatusOK, toJSON(u))
	})
}

// statusRequest is the body of PUT /v1/users/{id}/status.
type statusRequest struct {
	Status string `json:"status"`
}

// Valid implements web.Validator.
func (r statusRequest) Valid() []web.FieldError {
	if !events.ValidStatus(r.Status) {
		return []web.FieldError{{Field: "status", Message: fmt.Sprintf("must be %q or %q", events.StatusActive, events.StatusDisabled)}}
	}
	return nil
}

// handleSetStatus activates or disables a user: 200 with the user at its new version.
func handleSetStatus(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req statusRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		u, err := store.SetStatus(r.Context(), id, req.Status)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, _ := auth.UserFrom(r.Context())
		log.InfoContext(r.Context(), "status changed", "user_id", u.ID, "status", u.Status, "version", u.Version, "by", me.ID)
		web.Encode(w, http.StatusOK, toJSON(u))
	})
}
