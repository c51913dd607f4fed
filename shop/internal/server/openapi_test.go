package server

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/authmesh/events/servicetest"
)

// TestOpenAPIServed: GET /openapi.json answers openapi.json of this directory, as JSON, an OpenAPI
// 3.1 document. (e2e/apivalidate holds the document to the running service.)
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := New(log, nil, anyone{})

	servicetest.CheckOpenAPIServed(t, mux, "openapi.json")
}

// anyone is an Authenticator that lets every request through: the document needs none.
type anyone struct{}

func (anyone) Require(h http.Handler) http.Handler { return h }
