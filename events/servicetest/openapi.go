package servicetest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// CheckOpenAPIServed fails t unless h answers GET /openapi.json with the bytes of file (the
// service's openapi.json, beside its routes) as application/json, and the file is an OpenAPI 3.1
// document that describes /openapi.json too. e2e/apivalidate holds the document to the running
// service; this holds the route to the file.
func CheckOpenAPIServed(t *testing.T, h http.Handler, file string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %q, want 200 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatalf("GET /openapi.json differs from %s", file)
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") || doc.Paths["/openapi.json"] == nil {
		t.Errorf("%s: openapi %q, want 3.1.x, documenting /openapi.json", file, doc.OpenAPI)
	}
}
