package web

import (
	"net/http"

	"github.com/google/uuid"
)

// PathID returns the {id} of the request's path: a UUID in its canonical 36-character form. Any
// other text names nothing, so it is the same 404 not_found *Problem ("no such <what>") as an id
// that exists nowhere: a client learns nothing from the difference.
func PathID(r *http.Request, what string) (uuid.UUID, error) {
	s := r.PathValue("id")
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, NotFound("no such " + what)
	}
	return id, nil
}
