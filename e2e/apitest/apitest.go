// Package apitest is the client side of the end-to-end tests: it sends HTTP requests to the
// running services and checks their answers against the contract (docs/contract.md), and it
// registers and logs in users. It knows the services only by their URLs.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Password is the password of the users Register creates.
const Password = "correct horse battery"

// requestTimeout bounds every request; Eventually bounds every wait for an event to arrive.
const (
	requestTimeout  = 15 * time.Second
	eventualTimeout = 15 * time.Second
)

var client = &http.Client{Timeout: requestTimeout}

// Exchange is one request that Call or Send made and the answer it got, with both bodies in full.
type Exchange struct {
	Request      *http.Request // as sent; its body is RequestBody
	RequestBody  []byte        // nil: none
	Response     *http.Response
	ResponseBody []byte
}

// observer, when set, sees every exchange (see SetObserver).
var observer atomic.Pointer[func(testing.TB, Exchange)]

// SetObserver makes observe see every exchange of Call and Send once its answer is read, on the
// goroutine of the call, with the test that made it (to fail it: e2e/apivalidate holds every
// exchange to the services' OpenAPI documents); nil removes it. It returns a function restoring
// the previous observer. A package's TestMain sets it before its tests run.
func SetObserver(observe func(testing.TB, Exchange)) (restore func()) {
	var prev *func(testing.TB, Exchange)
	if observe == nil {
		prev = observer.Swap(nil)
	} else {
		prev = observer.Swap(&observe)
	}
	return func() { observer.Store(prev) }
}

// Response is an HTTP answer, with its body decoded into Body when it is a JSON object.
type Response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// Call sends a request with body encoded as JSON (nil: no body) and, unless token is empty, the
// token as a bearer token.
func Call(t testing.TB, method, url, token string, body any) Response {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return Send(t, method, url, h, b)
}

// Send sends a request with exactly the given header and body bytes (nil: no body), for
// requests Call cannot make: a wrong content type, malformed JSON, odd headers.
func Send(t testing.TB, method, url string, header http.Header, body []byte) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	if observe := observer.Load(); observe != nil {
		(*observe)(t, Exchange{Request: req, RequestBody: body, Response: resp, ResponseBody: raw})
	}
	r := Response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// Want fails the test unless r has the given status.
func (r Response) Want(t testing.TB, status int, what string) Response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Raw)
	}
	return r
}

// WantProblem fails the test unless r is an RFC 9457 problem with the given status and code:
// Content-Type application/problem+json and a body whose status and code fields agree.
func (r Response) WantProblem(t testing.TB, status int, code, what string) Response {
	t.Helper()
	r.Want(t, status, what)
	if msg := r.problemError(); msg != "" {
		t.Fatalf("%s: %s", what, msg)
	}
	if got := r.Str("code"); got != code {
		t.Fatalf("%s: code %q, want %q; body %s", what, got, code, r.Raw)
	}
	return r
}

// IsProblem reports whether r is a well-formed problem: Content-Type application/problem+json,
// a JSON object body whose status field equals the HTTP status, and a non-empty code. When it is
// not, the string says why.
func (r Response) IsProblem() (bool, string) {
	msg := r.problemError()
	return msg == "", msg
}

func (r Response) problemError() string {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/problem+json" {
		return "Content-Type " + r.Header.Get("Content-Type") + ", want application/problem+json; body " + r.Raw
	}
	if r.Body == nil {
		return "body is not a JSON object: " + r.Raw
	}
	if s, _ := r.Body["status"].(float64); int(s) != r.Status {
		return "body status " + jsonString(r.Body["status"]) + " differs from the HTTP status; body " + r.Raw
	}
	if r.Str("code") == "" {
		return "problem without a code: " + r.Raw
	}
	return ""
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Str returns a string field of the body ("" when absent or not a string).
func (r Response) Str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// Items returns the items of a list answer.
func (r Response) Items() []map[string]any {
	raw, _ := r.Body["items"].([]any)
	items := make([]map[string]any, 0, len(raw))
	for _, it := range raw {
		if m, ok := it.(map[string]any); ok {
			items = append(items, m)
		}
	}
	return items
}

// Eventually repeats call until it answers status, for at most 15 seconds (events reach blog and
// shop asynchronously), and returns that answer.
func Eventually(t testing.TB, status int, what string, call func() Response) Response {
	t.Helper()
	deadline := time.Now().Add(eventualTimeout)
	for {
		r := call()
		if r.Status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %d after %s, want %d; body %s", what, r.Status, eventualTimeout, status, r.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Propagation calls probe until it reports that a change has taken effect, for at most 15
// seconds, and returns the time from start until the answer that reflected it, and the number
// of requests made. It fails the test if the change never shows.
func Propagation(t testing.TB, what string, start time.Time, probe func() bool) (time.Duration, int) {
	t.Helper()
	deadline := start.Add(eventualTimeout)
	for n := 1; ; n++ {
		if probe() {
			return time.Since(start), n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in effect %s after the change (%d requests)", what, eventualTimeout, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Login logs in and returns the access token, checking the token response's shape.
func Login(t testing.TB, accountURL, email, password string) string {
	t.Helper()
	tok := Call(t, "POST", accountURL+"/v1/tokens", "", map[string]any{
		"email": email, "password": password,
	}).Want(t, http.StatusOK, "log in as "+email)
	if tok.Str("token_type") != "Bearer" || strings.Count(tok.Str("access_token"), ".") != 2 {
		t.Fatalf("log in as %s: body %s, want a Bearer access_token", email, tok.Raw)
	}
	return tok.Str("access_token")
}

// Register creates a user with Password and logs in, returning the user's id and a token.
func Register(t testing.TB, accountURL, email, name string) (id, token string) {
	t.Helper()
	u := Call(t, "POST", accountURL+"/v1/users", "", map[string]any{
		"email": email, "password": Password, "display_name": name,
	}).Want(t, http.StatusCreated, "register "+email)
	return u.Str("id"), Login(t, accountURL, email, Password)
}
