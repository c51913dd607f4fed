package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestOpenAPIServed: GET /openapi.json answers openapi.json of this directory, as JSON, an OpenAPI
// 3.1 document. (e2e/apivalidate holds the document to the running service.)
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := New(log, nil, anyone{})

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %q, want 200 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	want, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatal("GET /openapi.json differs from openapi.json")
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") || doc.Paths["/openapi.json"] == nil {
		t.Errorf("openapi.json: openapi %q, want 3.1.x, documenting /openapi.json", doc.OpenAPI)
	}
}

// anyone is an Authenticator that lets every request through: the document needs none.
type anyone struct{}

func (anyone) Require(h http.Handler) http.Handler { return h }
