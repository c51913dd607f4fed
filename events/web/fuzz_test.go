package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecode: whatever the body, Decode either fills the value with a valid request or answers a
// 4xx problem; it never panics. A body it accepts decodes the same way again (no state is kept).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@b.c","qty":2}`, `{"qty":-1}`, `{"qty":1,"qty":2}`, `{"QTY":1}`, `[1,2]`, ``,
		`{"items":[{"a":1},{"a":2,"a":3}]}`, "{\"email\":\"\xff\"}", strings.Repeat("[", 100),
		`{"qty":1}{"qty":2}`, `{"qty":1e400}`, `{"email":"\u0000"}`, `null`, `{"items":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		decode := func() (testReq, error) {
			var v testReq
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
			return v, Decode(httptest.NewRecorder(), r, &v)
		}
		v, err := decode()
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) || p.Status < 400 || p.Status > 499 {
				t.Fatalf("Decode(%q) = %v, want a 4xx problem", body, err)
			}
			return
		}
		if errs := v.Valid(); len(errs) > 0 {
			t.Fatalf("Decode accepted %q, which is invalid: %v", body, errs)
		}
		again, err := decode()
		if err != nil || again.Email != v.Email || again.Qty != v.Qty || len(again.Items) != len(v.Items) {
			t.Fatalf("Decode(%q) again = %+v, %v; first %+v", body, again, err, v)
		}
	})
}
