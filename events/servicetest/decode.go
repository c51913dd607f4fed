package servicetest

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/authmesh/events/web"
)

// CheckDecode decodes body into v (a pointer to a request type) with web.Decode, as a handler
// does, and fails t unless the outcome is one a client may get: the body decoded and, when v
// validates itself, valid; or a problem with a 4xx status. For the fuzz targets of the services'
// request decoders: whatever the body, never a panic, never a 5xx.
func CheckDecode(t *testing.T, v any, body []byte) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	err := web.Decode(httptest.NewRecorder(), r, v)
	if err == nil {
		if val, ok := v.(web.Validator); ok && len(val.Valid()) > 0 {
			t.Fatalf("Decode accepted %q, which is invalid: %v", body, val.Valid())
		}
		return
	}
	var p *web.Problem
	if !errors.As(err, &p) {
		t.Fatalf("Decode(%q) = %v, not a problem", body, err)
	}
	if p.Status < 400 || p.Status > 499 {
		t.Fatalf("Decode(%q) = %d %s, want a 4xx", body, p.Status, p.Code)
	}
}
