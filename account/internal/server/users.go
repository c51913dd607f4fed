package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/authmesh/account/internal/account"
	"github.com/authmesh/account/internal/password"
	"github.com/authmesh/account/internal/postgres"
	"github.com/authmesh/events"
	"github.com/authmesh/events/web"
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
		me, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
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
		id, err := web.PathID(r, "user")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !account.CanSeeUser(me, id) {
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

// handleListUsers lists users oldest first, a page at a time.
func handleListUsers(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, err := parsePage(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var after account.Cursor // the zero Cursor starts from the first user
		if page.After != nil {
			after = *page.After
		}
		// One user more than the page tells whether another page follows.
		list, err := store.ListUsers(r.Context(), after, page.Limit+1)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var next *web.Cursor
		if len(list) > page.Limit {
			list = list[:page.Limit]
			last := list[len(list)-1]
			next = &web.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
		}
		web.Encode(w, http.StatusOK, web.NewList(list, next, toJSON))
	})
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
// version, 409 last_admin when it would take the role from the last active admin.
func handleSetRoles(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := web.PathID(r, "user")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, err := user(r)
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

// handleSetStatus activates or disables a user: 200 with the user at its new version, 409
// last_admin when it would disable the last active admin.
func handleSetStatus(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := web.PathID(r, "user")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me, err := user(r)
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
		log.InfoContext(r.Context(), "status changed", "user_id", u.ID, "status", u.Status, "version", u.Version, "by", me.ID)
		web.Encode(w, http.StatusOK, toJSON(u))
	})
}
