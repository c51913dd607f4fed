package server

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The discovery document holds the issuer and the JWKS URL under the public URL, and nothing
// else: no member that would claim an endpoint, a grant or ID tokens account does not have, whatever
// the request says about its host.
func TestOpenIDConfiguration(t *testing.T) {
	t.Parallel()
	h := handleOpenIDConfiguration("https://id.example.com", "https://id.example.com/account")
	r := httptest.NewRequest("GET", "/.well-known/openid-configuration", nil)
	r.Host = "evil.example"
	r.Header.Set("X-Forwarded-Host", "evil.example")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)

	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q; want 200 application/json", w.Code, w.Header().Get("Content-Type"))
	}
	if got := w.Header().Get("Cache-Control"); got != jwksMaxAge {
		t.Errorf("Cache-Control = %q, want %q", got, jwksMaxAge)
	}
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	want := map[string]any{
		"issuer":   "https://id.example.com",
		"jwks_uri": "https://id.example.com/account/.well-known/jwks.json",
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("openid-configuration (-want +got):\n%s", diff)
	}
}
