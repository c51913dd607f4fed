package web

import "net/http"

// Document serves doc, a JSON document embedded in the service (its OpenAPI description), as it
// is.
func Document(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(doc)
	})
}
