package server

import (
	"log/slog"
	"net/http"

	"github.com/authmesh/blog/internal/postgres"
	"github.com/authmesh/events/web"
)

// addRoutes is the whole API of the blog. Reads are public; writes need an active user, whose
// roles come from the replica (Require), never from the token. Require runs before the handler,
// so a request without a valid token gets 401 even for a malformed post id.
func addRoutes(mux *http.ServeMux, log *slog.Logger, store *postgres.Store, authn Authenticator) {
	mux.Handle("POST /v1/posts", authn.Require(handleCreatePost(log, store)))
	mux.Handle("GET /v1/posts", handleListPosts(log, store))
	mux.Handle("GET /v1/posts/{id}", handleGetPost(log, store))
	mux.Handle("PATCH /v1/posts/{id}", authn.Require(handleUpdatePost(log, store)))
	mux.Handle("DELETE /v1/posts/{id}", authn.Require(handleDeletePost(log, store)))
	mux.Handle("GET /openapi.json", web.Document(openAPIDocument))
}
