package server

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/authmesh/account/internal/token"
	"github.com/authmesh/events/servicetest"
)

// TestOpenAPIServed: GET /openapi.json answers openapi.json of this directory, as JSON, an OpenAPI
// 3.1 document. (e2e/apivalidate holds the document to the running service.)
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := token.NewKeys(nil, nil, time.Minute, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := New(Config{Log: log, Keys: keys, Signer: &token.Signer{Keys: keys, Issuer: "account", TTL: time.Minute}})

	servicetest.CheckOpenAPIServed(t, mux, "openapi.json")
}
