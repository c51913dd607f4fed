package server

import (
	"log/slog"
	"net/http"

	"github.com/authmesh/blog/internal/blog"
	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events/web"
)

// createPostRequest is the body of POST /v1/posts.
type createPostRequest struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

func (req createPostRequest) draft() blog.Draft { return blog.Draft{Title: req.Title, Body: req.Body} }

// Valid implements web.Validator.
func (req createPostRequest) Valid() []web.FieldError { return validErrors(req.draft().Validate()) }

func handleCreatePost(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req createPostRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.Create(r.Context(), u.ID, req.draft())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.Header().Set("Location", "/v1/posts/"+p.ID.String())
		web.Encode(w, http.StatusCreated, toJSON(p))
	})
}

func handleListPosts(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := parsePage(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page, err := store.List(r.Context(), q)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, web.NewList(page.Posts, (*web.Cursor)(page.Next), toJSON))
	})
}

func handleGetPost(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := web.PathID(r, "post")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.Post(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toJSON(p))
	})
}

// updatePostRequest is the body of PATCH /v1/posts/{id}; a field left out (or null) is kept.
// It is validated only once the post is found and the user may edit it, so that 404 and 403 come
// before 422. An empty patch {} is a 422 (see blog.Patch.Validate).
type updatePostRequest struct {
	Title *string `json:"title"`
	Body  *string `json:"body"`
}

func handleUpdatePost(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		id, err := web.PathID(r, "post")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req updatePostRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.Post(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !blog.CanEdit(u, p) {
			writeError(w, r, log, blog.ErrForbidden)
			return
		}
		patch := blog.Patch{Title: req.Title, Body: req.Body}
		if err := patch.Validate(); err != nil {
			writeError(w, r, log, err)
			return
		}
		// The author of a post never changes, so the check above still holds; a post deleted
		// meanwhile gives a 404.
		p, err = store.Update(r.Context(), id, patch)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toJSON(p))
	})
}

func handleDeletePost(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		id, err := web.PathID(r, "post")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.Post(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !blog.CanDelete(u, p) {
			writeError(w, r, log, blog.ErrForbidden)
			return
		}
		if err := store.Delete(r.Context(), id); err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
