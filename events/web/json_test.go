package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type testReq struct {
	Email string           `json:"email"`
	Qty   int              `json:"qty"`
	Items []map[string]int `json:"items"`
}

func (r testReq) Valid() []FieldError {
	if r.Qty < 0 {
		return []FieldError{{Field: "qty", Message: "must be at least 0"}}
	}
	return nil
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int // 0: decoded
		wantCode    string
	}{
		{name: "ok", contentType: "application/json", body: `{"email":"a@b.c","qty":2}`},
		{name: "ok with charset", contentType: "application/json; charset=utf-8", body: `{"qty":1}`},
		{name: "ok without content type", body: `{"qty":1}`},
		{name: "text plain", contentType: "text/plain", body: `{"qty":1}`, wantStatus: 415, wantCode: CodeUnsupportedMediaType},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: `qty=1`, wantStatus: 415, wantCode: CodeUnsupportedMediaType},
		{name: "malformed", contentType: "application/json", body: `{"qty":`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "empty", contentType: "application/json", body: ``, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "unknown field", body: `{"qty":1,"isAdmin":true}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "case variant of a field", body: `{"QTY":1}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "duplicate key", body: `{"qty":1,"qty":1000}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "array of objects", body: `{"qty":1,"items":[{"a":1},{"a":2}]}`, wantStatus: 0},
		{name: "many objects in an array", body: `{"qty":1,"items":[` + strings.Repeat(`{"a":1},`, 100) + `{"a":1}]}`, wantStatus: 0},
		{name: "duplicate key in an array item", body: `{"qty":1,"items":[{"a":1},{"a":2,"a":3}]}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "nested duplicate key", body: `{"email":"x","qty":1,"x":{"a":1,"a":2}}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "trailing value", body: `{"qty":1}{"qty":2}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "trailing garbage", body: `{"qty":1} garbage`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "wrong type", body: `{"qty":"1"}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "overflow", body: `{"qty":1e20}`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "array", body: `[1,2]`, wantStatus: 400, wantCode: CodeBadRequest},
		{name: "deep nesting", body: strings.Repeat("[", 10000) + strings.Repeat("]", 10000), wantStatus: 400, wantCode: CodeBadRequest},
		{name: "invalid utf-8", body: "{\"email\":\"\xff\xfe\"}", wantStatus: 400, wantCode: CodeBadRequest},
		{name: "too large", body: `{"email":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, wantStatus: 413, wantCode: CodePayloadTooLarge},
		{name: "invalid field", body: `{"qty":-1}`, wantStatus: 422, wantCode: CodeValidationFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			w := httptest.NewRecorder()
			var req testReq
			err := Decode(w, r, &req)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Decode(%q) = %v, want nil", tt.body, err)
				}
				return
			}
			p, ok := err.(*Problem)
			if !ok {
				t.Fatalf("Decode(%q) = %v, want a *Problem", tt.body, err)
			}
			if p.Status != tt.wantStatus || p.Code != tt.wantCode {
				t.Fatalf("Decode(%q) = %d %s, want %d %s", tt.body, p.Status, p.Code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestProblemWrite(t *testing.T) {
	p := Invalid([]FieldError{{Field: "email", Message: "is not an email address"}})
	p.RetryAfter = 1500e6 // 1.5 s rounds up to 2
	w := httptest.NewRecorder()
	p.Write(w)
	if got := w.Header().Get("Content-Type"); got != ProblemContentType {
		t.Errorf("Content-Type = %q, want %q", got, ProblemContentType)
	}
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2", got)
	}
	var body map[string]any
	if err := json.NewDecoder(w.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"type": "about:blank", "title": "Unprocessable Entity", "status": 422.0, "code": CodeValidationFailed} {
		if body[k] != want {
			t.Errorf("body[%q] = %v, want %v", k, body[k], want)
		}
	}
	errs, _ := body["errors"].([]any)
	if len(errs) != 1 {
		t.Errorf("errors = %v, want one field error", body["errors"])
	}
}

func TestHandlerUnroutedAndPanic(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		Encode(w, 200, map[string]string{"id": r.PathValue("id")})
	})
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	h := Handler(mux, discardLogger(), newRegistry())
	tests := []struct {
		method, path string
		wantStatus   int
		wantCode     string
		wantAllow    string
	}{
		{"GET", "/things/1", 200, "", ""},
		{"GET", "/things/abc", 200, "", ""},
		{"GET", "/nothing", 404, CodeNotFound, ""},
		{"DELETE", "/things/1", 405, CodeMethodNotAllowed, "GET, HEAD"},
		{"GET", "/boom", 500, CodeInternal, ""},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
		if w.Code != tt.wantStatus {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, w.Code, tt.wantStatus)
			continue
		}
		if w.Header().Get("X-Request-Id") == "" {
			t.Errorf("%s %s: no X-Request-Id", tt.method, tt.path)
		}
		if tt.wantCode == "" {
			if want := `"id":"` + strings.TrimPrefix(tt.path, "/things/") + `"`; !strings.Contains(w.Body.String(), want) {
				t.Errorf("%s %s body = %s, want the path value (%s)", tt.method, tt.path, w.Body, want)
			}
			continue
		}
		var p Problem
		body, _ := io.ReadAll(w.Body)
		if err := json.Unmarshal(body, &p); err != nil || p.Code != tt.wantCode {
			t.Errorf("%s %s body = %s, want code %s", tt.method, tt.path, body, tt.wantCode)
		}
		if strings.Contains(string(body), "boom") {
			t.Errorf("%s %s leaks the panic: %s", tt.method, tt.path, body)
		}
		if got := w.Header().Get("Allow"); got != tt.wantAllow {
			t.Errorf("%s %s Allow = %q, want %q", tt.method, tt.path, got, tt.wantAllow)
		}
	}
}

func TestCheckStructure(t *testing.T) {
	t.Parallel()
	many := `{"items":[` + strings.Repeat(`{"a":1,"b":{"c":[]}},`, 60) + `{}]}`
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"flat", `{"a":1,"b":"x"}`, true},
		{"empty object", `{}`, true},
		{"empty array", `[]`, true},
		{"objects in an array", `{"items":[{"a":1},{"a":2}]}`, true},
		{"many objects in an array", many, true},
		{"nested objects", `{"a":{"b":{"c":1}},"b":{"a":{}}}`, true},
		{"same key in sibling objects", `[{"a":1},{"a":1}]`, true},
		{"duplicate at top", `{"a":1,"a":2}`, false},
		{"duplicate in an item", `{"items":[{"a":1},{"a":1,"a":2}]}`, false},
		{"duplicate after a nested object", `{"a":{"x":1},"a":2}`, false},
		{"32 levels", strings.Repeat("[", 32) + strings.Repeat("]", 32), true},
		{"33 levels", strings.Repeat("[", 33) + strings.Repeat("]", 33), false},
		{"malformed", `{"a":}`, false},
		{"unterminated", `{"a":[1,2`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkStructure([]byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("checkStructure(%s) = %v, want ok %v", tt.body, err, tt.ok)
			}
		})
	}
}
