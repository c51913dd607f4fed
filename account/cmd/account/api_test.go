package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/outbox"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

var userFields = []string{"created_at", "display_name", "email", "id", "roles", "status", "updated_at", "version"}

func TestRegisterLoginMe(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	const pw = "pässwörd-🔑-long-enough"

	r := a.do(t, "POST", "/v1/users", "", map[string]string{"email": "Ann@Example.com", "password": pw, "display_name": "  Ann  "})
	want(t, "register", r, http.StatusCreated, "")
	u := r.json(t)
	if diff := cmp.Diff(userFields, keysOf(u)); diff != "" {
		t.Errorf("user JSON fields (-want +got):\n%s", diff)
	}
	id, _ := u["id"].(string)
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	if u["email"] != "Ann@Example.com" || u["display_name"] != "Ann" || u["status"] != "active" || u["version"] != 1.0 {
		t.Errorf("registered user = %s", r.Body)
	}
	if diff := cmp.Diff([]any{"user"}, u["roles"]); diff != "" {
		t.Errorf("roles (-want +got):\n%s", diff)
	}
	for _, f := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339, u[f].(string)); err != nil {
			t.Errorf("%s %v is not RFC 3339: %v", f, u[f], err)
		}
	}
	if loc := r.Header.Get("Location"); loc != "/v1/users/"+id {
		t.Errorf("Location = %q, want /v1/users/%s", loc, id)
	}

	// The email is unique case-insensitively.
	r = a.do(t, "POST", "/v1/users", "", map[string]string{"email": "ann@EXAMPLE.com", "password": "another-pw", "display_name": "Ann 2"})
	want(t, "register again", r, http.StatusConflict, "email_taken")

	// Login with another case of the email.
	r = a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "ANN@example.com", "password": pw})
	want(t, "login", r, http.StatusOK, "")
	tr := r.json(t)
	if tr["token_type"] != "Bearer" || tr["expires_in"] != 900.0 {
		t.Errorf("token response = %s, want token_type Bearer and expires_in 900", r.Body)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("token response Cache-Control = %q, want no-store", cc)
	}
	tok := tr["access_token"].(string)

	h := segment(t, tok, 0)
	if h["alg"] != "EdDSA" || h["typ"] != "at+jwt" || h["kid"] == "" || h["kid"] == nil {
		t.Errorf("token header = %v", h)
	}
	c := segment(t, tok, 1)
	if diff := cmp.Diff([]string{"aud", "exp", "iat", "iss", "jti", "nbf", "roles", "sub", "ver"}, keysOf(c)); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if c["iss"] != "account" || c["sub"] != id || c["ver"] != 1.0 || c["exp"].(float64)-c["iat"].(float64) != 900 || c["nbf"] != c["iat"] {
		t.Errorf("claims = %v", c)
	}
	if diff := cmp.Diff([]any{"blog", "shop"}, c["aud"]); diff != "" {
		t.Errorf("aud (-want +got):\n%s", diff)
	}

	// blog and shop accept it with the published keys alone.
	jwks := a.do(t, "GET", "/.well-known/jwks.json", "", nil)
	want(t, "jwks", jwks, http.StatusOK, "")
	set, err := auth.NewKeySet(jwks.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, aud := range []string{"blog", "shop"} {
		if _, err := (&auth.Verifier{Keys: set, Issuer: "account", Audience: aud}).Verify(tok); err != nil {
			t.Errorf("a verifier for %s refuses the token: %v", aud, err)
		}
	}

	r = a.do(t, "GET", "/v1/users/me", tok, nil)
	want(t, "me", r, http.StatusOK, "")
	if diff := cmp.Diff(u, r.json(t)); diff != "" {
		t.Errorf("me (-registered +got):\n%s", diff)
	}
	r = a.do(t, "GET", "/v1/users/"+id, tok, nil)
	want(t, "get self", r, http.StatusOK, "")

	// Someone else's id, an unknown one and a malformed one look alike.
	other := a.register(t, "bob@example.com", "bob-password", "Bob")
	for _, path := range []string{"/v1/users/" + other["id"].(string), "/v1/users/" + uuid.NewString(), "/v1/users/not-a-uuid",
		"/v1/users/" + strings.ReplaceAll(other["id"].(string), "-", "")} {
		want(t, "GET "+path, a.do(t, "GET", path, tok, nil), http.StatusNotFound, "not_found")
	}

	// Without a token, or with a bad one.
	r = a.do(t, "GET", "/v1/users/me", "", nil)
	want(t, "me without token", r, http.StatusUnauthorized, "unauthenticated")
	if wa := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
		t.Errorf("WWW-Authenticate = %q, want Bearer", wa)
	}
	want(t, "me with a bad token", a.do(t, "GET", "/v1/users/me", tok+"x", nil), http.StatusUnauthorized, "unauthenticated")

	// Admin endpoints refuse a user.
	want(t, "list as user", a.do(t, "GET", "/v1/users", tok, nil), http.StatusForbidden, "forbidden")
	want(t, "roles as user", a.do(t, "PUT", "/v1/users/"+id+"/roles", tok, map[string]any{"roles": []string{"admin"}}), http.StatusForbidden, "forbidden")
	want(t, "status as user", a.do(t, "PUT", "/v1/users/"+other["id"].(string)+"/status", tok, map[string]any{"status": "disabled"}), http.StatusForbidden, "forbidden")

	if strings.Contains(a.Logs(), pw) || strings.Contains(a.Logs(), adminPassword) {
		t.Errorf("a password appears in the log")
	}
}

func TestRegisterValidation(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	tests := []struct {
		name   string
		body   map[string]any
		fields []string
	}{
		{"all missing", map[string]any{}, []string{"email", "password", "display_name"}},
		{"display name form", map[string]any{"email": "Ann <ann@example.com>", "password": "password1", "display_name": "Ann"}, []string{"email"}},
		{"no at", map[string]any{"email": "ann.example.com", "password": "password1", "display_name": "Ann"}, []string{"email"}},
		{"short password", map[string]any{"email": "ann@example.com", "password": "1234567", "display_name": "Ann"}, []string{"password"}},
		{"long password", map[string]any{"email": "ann@example.com", "password": strings.Repeat("p", 129), "display_name": "Ann"}, []string{"password"}},
		{"blank name", map[string]any{"email": "ann@example.com", "password": "password1", "display_name": "   "}, []string{"display_name"}},
		{"long name", map[string]any{"email": "ann@example.com", "password": "password1", "display_name": strings.Repeat("n", 101)}, []string{"display_name"}},
		{"NUL in name", map[string]any{"email": "ann@example.com", "password": "password1", "display_name": "a\x00b"}, []string{"display_name"}},
	}
	for _, tt := range tests {
		r := a.do(t, "POST", "/v1/users", "", tt.body)
		want(t, tt.name, r, http.StatusUnprocessableEntity, "validation_failed")
		var p struct {
			Errors []struct{ Field, Message string }
		}
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range p.Errors {
			got = append(got, e.Field)
		}
		if diff := cmp.Diff(tt.fields, got); diff != "" {
			t.Errorf("%s: error fields (-want +got):\n%s", tt.name, diff)
		}
	}
	// 128 characters of 2 bytes each are allowed: length is counted in characters.
	a.register(t, "max@example.com", strings.Repeat("é", 128), strings.Repeat("名", 100))
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	huge := `{"email":"a@example.com","password":"` + strings.Repeat("x", 1<<20) + `","display_name":"A"}`
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
	}{
		{"malformed JSON", "application/json", `{"email":`, 400, "bad_request"},
		{"not an object", "application/json", `[1,2]`, 400, "bad_request"},
		{"unknown field", "application/json", `{"email":"a@example.com","password":"password1","display_name":"A","roles":["admin"]}`, 400, "bad_request"},
		{"field in other case", "application/json", `{"EMAIL":"a@example.com","password":"password1","display_name":"A"}`, 400, "bad_request"},
		{"duplicate field", "application/json", `{"email":"a@example.com","email":"b@example.com","password":"password1","display_name":"A"}`, 400, "bad_request"},
		{"trailing data", "application/json", `{"email":"a@example.com","password":"password1","display_name":"A"} {}`, 400, "bad_request"},
		{"wrong type", "application/json", `{"email":1,"password":"password1","display_name":"A"}`, 400, "bad_request"},
		{"empty body", "application/json", ``, 400, "bad_request"},
		{"text/plain", "text/plain", `{"email":"a@example.com","password":"password1","display_name":"A"}`, 415, "unsupported_media_type"},
		{"form", "application/x-www-form-urlencoded", `email=a@example.com`, 415, "unsupported_media_type"},
		{"huge body", "application/json", huge, 413, "payload_too_large"},
	}
	for _, path := range []string{"/v1/users", "/v1/tokens"} {
		for _, tt := range tests {
			r := a.request(t, "POST", path, "", tt.contentType, tt.body)
			want(t, path+" "+tt.name, r, tt.status, tt.code)
		}
	}
	target := a.register(t, "target@example.com", "password1", "Target")["id"].(string)
	for _, path := range []string{"/v1/users/" + target + "/roles", "/v1/users/" + target + "/status"} {
		want(t, path+" malformed", a.request(t, "PUT", path, admin, "application/json", `{`), 400, "bad_request")
		want(t, path+" unknown field", a.request(t, "PUT", path, admin, "application/json", `{"version":9}`), 400, "bad_request")
		want(t, path+" text/plain", a.request(t, "PUT", path, admin, "text/plain", `{}`), 415, "unsupported_media_type")
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "cursor=garbage!", "cursor=" + "Zm9vYmFy"} {
		want(t, "list "+q, a.do(t, "GET", "/v1/users?"+q, admin, nil), 400, "bad_request")
	}
	r := a.do(t, "DELETE", "/v1/users/me", admin, nil)
	want(t, "DELETE /v1/users/me", r, http.StatusMethodNotAllowed, "method_not_allowed")
	want(t, "unknown path", a.do(t, "GET", "/v1/nothing", "", nil), http.StatusNotFound, "not_found")
}

func TestInvalidCredentialsIdentical(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	a.register(t, "known@example.com", "right-password", "Known")
	disabled := a.register(t, "disabled@example.com", "right-password", "Disabled")
	want(t, "disable", a.do(t, "PUT", "/v1/users/"+disabled["id"].(string)+"/status", admin, map[string]string{"status": "disabled"}), 200, "")

	attempts := map[string]map[string]string{
		"unknown email":         {"email": "nobody@example.com", "password": "right-password"},
		"wrong password":        {"email": "known@example.com", "password": "wrong-password"},
		"disabled user":         {"email": "disabled@example.com", "password": "right-password"},
		"impossible email":      {"email": "not an email", "password": "right-password"},
		"NUL in email":          {"email": "known\x00@example.com", "password": "right-password"},
		"empty":                 {"email": "", "password": ""},
		"password of other one": {"email": adminEmail, "password": "right-password"},
		"password too long":     {"email": "known@example.com", "password": strings.Repeat("p", 129)},
	}
	var (
		first     response
		firstName string
	)
	for name, body := range attempts {
		r := a.do(t, "POST", "/v1/tokens", "", body)
		want(t, name, r, http.StatusUnauthorized, "invalid_credentials")
		r.Header.Del("Date")
		r.Header.Del("X-Request-Id")
		if first.Status == 0 {
			first, firstName = r, name
			continue
		}
		if !bytes.Equal(first.Body, r.Body) {
			t.Errorf("bodies differ:\n%s: %s\n%s: %s", firstName, first.Body, name, r.Body)
		}
		if diff := cmp.Diff(first.Header, r.Header); diff != "" {
			t.Errorf("headers differ between %s and %s (-first +this):\n%s", firstName, name, diff)
		}
	}
	if wa := first.Header.Get("WWW-Authenticate"); wa != "Bearer" {
		t.Errorf("WWW-Authenticate = %q, want Bearer", wa)
	}
}

func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	a.register(t, "victim@example.com", "right-password", "Victim")
	a.register(t, "neighbour@example.com", "right-password", "Neighbour")

	// Successful logins never count.
	for range 12 {
		a.login(t, "neighbour@example.com", "right-password")
	}
	for i := range 10 {
		// The account is keyed case-insensitively.
		email := "victim@example.com"
		if i%2 == 1 {
			email = "VICTIM@example.com"
		}
		r := a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": email, "password": "wrong-password"})
		want(t, fmt.Sprintf("failure %d", i+1), r, http.StatusUnauthorized, "invalid_credentials")
	}
	// Now even the right password is refused, until the window frees.
	r := a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "victim@example.com", "password": "right-password"})
	want(t, "login after 10 failures", r, http.StatusTooManyRequests, "rate_limited")
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 15*60 {
		t.Errorf("Retry-After = %q, want whole seconds in [1, 900]", r.Header.Get("Retry-After"))
	}
	// Other accounts behind the same address are not locked out.
	a.login(t, "neighbour@example.com", "right-password")
	// An unknown email is throttled like a known one, so throttling tells nothing.
	for i := range 10 {
		r := a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "ghost@example.com", "password": "x"})
		want(t, fmt.Sprintf("ghost failure %d", i+1), r, http.StatusUnauthorized, "invalid_credentials")
	}
	want(t, "ghost after 10 failures", a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "ghost@example.com", "password": "x"}),
		http.StatusTooManyRequests, "rate_limited")
}

// statusCounts counts the answers of a burst by status, and fails the test on a 5xx.
func statusCounts(t *testing.T, rs []response) map[int]int {
	t.Helper()
	n := map[int]int{}
	for _, r := range rs {
		n[r.Status]++
		if r.Status >= 500 {
			t.Errorf("status %d: %s", r.Status, r.Body)
		}
		if r.Status == http.StatusTooManyRequests {
			if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
				t.Errorf("429 with Retry-After %q, want whole seconds >= 1", r.Header.Get("Retry-After"))
			}
		}
	}
	return n
}

func TestLoginThrottledBurst(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	a.register(t, "victim@example.com", "right-password", "Victim")

	// 60 wrong passwords at once: the limit's 10 are answered, the others refused unhashed.
	rs := burst(t, 60, func(i int) request {
		email := "victim@example.com"
		if i%2 == 1 {
			email = "Victim@Example.com"
		}
		return request{"POST", "/v1/tokens", "", `{"email":"` + email + `","password":"wrong-password"}`, nil}
	}, a.URL)
	got := statusCounts(t, rs)
	if diff := cmp.Diff(map[int]int{http.StatusUnauthorized: 10, http.StatusTooManyRequests: 50}, got); diff != "" {
		t.Errorf("answers to a burst of 60 wrong passwords by status (-want +got):\n%s", diff)
	}
	want(t, "right password after the burst", a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "victim@example.com", "password": "right-password"}),
		http.StatusTooManyRequests, "rate_limited")
}

func TestLoginSuccessDoesNotCount(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	a.register(t, "ann@example.com", "right-password", "Ann")
	fail := func(what string, status int, code string) {
		t.Helper()
		want(t, what, a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "ann@example.com", "password": "wrong-password"}), status, code)
	}
	for i := range 9 {
		fail(fmt.Sprintf("failure %d", i+1), http.StatusUnauthorized, "invalid_credentials")
	}
	// Below the limit the right password still works, and counts nothing.
	for range 3 {
		a.login(t, "ann@example.com", "right-password")
	}
	fail("failure 10", http.StatusUnauthorized, "invalid_credentials")
	fail("failure 11", http.StatusTooManyRequests, "rate_limited")
}

// loginFrom is a login request sent through a proxy: X-Forwarded-For is xff.
func loginFrom(email, password, xff string) request {
	return request{"POST", "/v1/tokens", "", `{"email":"` + email + `","password":"` + password + `"}`,
		http.Header{"X-Forwarded-For": {xff}}}
}

func TestLoginThrottledPerAddress(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	env["TRUSTED_PROXIES"] = "127.0.0.1/32,::1/128" // the test is the proxy
	a := startApp(t, env)
	a.register(t, "ann@example.com", "right-password", "Ann")
	long := strings.Repeat("p", 129) // refused unhashed, so the first 90 failures cost little
	const client = "198.51.100.7"

	// 90 failures for 90 accounts from one client, then 30 more at once: 10 are answered, the
	// others refused, whatever the emails.
	got := statusCounts(t, burst(t, 90, func(i int) request {
		return loginFrom(fmt.Sprintf("u%d@example.com", i), long, client)
	}, a.URL))
	if diff := cmp.Diff(map[int]int{http.StatusUnauthorized: 90}, got); diff != "" {
		t.Fatalf("answers to 90 failures from one client (-want +got):\n%s", diff)
	}
	got = statusCounts(t, burst(t, 30, func(i int) request {
		return loginFrom(fmt.Sprintf("v%d@example.com", i), "wrong-password", client)
	}, a.URL))
	if diff := cmp.Diff(map[int]int{http.StatusUnauthorized: 10, http.StatusTooManyRequests: 20}, got); diff != "" {
		t.Errorf("answers to a burst of 30 more (-want +got):\n%s", diff)
	}
	// The client is refused even with a right password, and with a made-up address in front.
	for _, xff := range []string{client, "203.0.113.1, " + client} {
		r := burst(t, 1, func(int) request { return loginFrom("ann@example.com", "right-password", xff) }, a.URL)[0]
		want(t, "X-Forwarded-For "+xff, r, http.StatusTooManyRequests, "rate_limited")
	}
	// Another client behind the same proxy is not.
	r := burst(t, 1, func(int) request { return loginFrom("ann@example.com", "right-password", "198.51.100.8") }, a.URL)[0]
	want(t, "another client", r, http.StatusOK, "")
}

func TestForwardedForIgnoredWithoutTrustedProxies(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	long := strings.Repeat("p", 129)
	// Each request claims another address: without TRUSTED_PROXIES all come from the connection's.
	got := statusCounts(t, burst(t, 110, func(i int) request {
		return loginFrom(fmt.Sprintf("u%d@example.com", i), long, fmt.Sprintf("198.51.100.%d", i))
	}, a.URL))
	if diff := cmp.Diff(map[int]int{http.StatusUnauthorized: 100, http.StatusTooManyRequests: 10}, got); diff != "" {
		t.Errorf("answers to 110 failures claiming 110 addresses (-want +got):\n%s", diff)
	}
}

// metric reads the value of a counter or gauge without labels from /metrics.
func (a *app) metric(t *testing.T, name string) float64 {
	t.Helper()
	r := a.do(t, "GET", "/metrics", "", nil)
	for line := range strings.Lines(string(r.Body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s in /metrics", name)
	return 0
}

func TestLoginPasswordTooLong(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	a.register(t, "ann@example.com", strings.Repeat("é", 128), "Ann")
	login := func(pw string) response {
		t.Helper()
		r := a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "ann@example.com", "password": pw})
		r.Header.Del("Date")
		r.Header.Del("X-Request-Id")
		return r
	}
	const hashes = "account_password_hashes_total"

	before := a.metric(t, hashes)
	wrong := login("wrong-password")
	want(t, "wrong password", wrong, http.StatusUnauthorized, "invalid_credentials")
	if got := a.metric(t, hashes); got != before+1 {
		t.Fatalf("%s went from %v to %v for a wrong password, want +1", hashes, before, got)
	}
	// 129 characters: longer than any account's password, refused without a hash, with the very
	// answer of a wrong password, and counted as a failure.
	before = a.metric(t, hashes)
	for i := range 9 {
		long := login(strings.Repeat("é", 129))
		want(t, fmt.Sprintf("long password %d", i+1), long, http.StatusUnauthorized, "invalid_credentials")
		if !bytes.Equal(wrong.Body, long.Body) {
			t.Errorf("bodies differ: wrong password %s, long one %s", wrong.Body, long.Body)
		}
		if diff := cmp.Diff(wrong.Header, long.Header); diff != "" {
			t.Errorf("headers differ (-wrong password +long one):\n%s", diff)
		}
	}
	if got := a.metric(t, hashes); got != before {
		t.Errorf("%s went from %v to %v for long passwords, want no hash", hashes, before, got)
	}
	// 1 wrong and 9 long: the account is at its limit.
	want(t, "right password after 10 failures", login(strings.Repeat("é", 128)), http.StatusTooManyRequests, "rate_limited")
}

func TestAdministration(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	u := a.register(t, "user@example.com", "user-password", "User")
	id := u["id"].(string)
	userTok := a.login(t, "user@example.com", "user-password")

	// Admin reads anyone.
	want(t, "admin gets user", a.do(t, "GET", "/v1/users/"+id, admin, nil), 200, "")

	// Roles: unknown role refused, user always kept, version +1 each time.
	r := a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{"roles": []string{"superuser"}})
	want(t, "unknown role", r, http.StatusUnprocessableEntity, "validation_failed")
	want(t, "missing roles", a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{}), http.StatusUnprocessableEntity, "validation_failed")
	r = a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{"roles": []string{"moderator"}})
	want(t, "set roles", r, 200, "")
	got := r.json(t)
	if diff := cmp.Diff([]any{"user", "moderator"}, got["roles"]); diff != "" || got["version"] != 2.0 {
		t.Errorf("after set roles: version %v, roles (-want +got):\n%s", got["version"], diff)
	}
	r = a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{"roles": []string{}})
	want(t, "clear roles", r, 200, "")
	if got := r.json(t); got["version"] != 3.0 || !cmp.Equal([]any{"user"}, got["roles"]) {
		t.Errorf("after clearing roles: %s", r.Body)
	}

	// Status.
	want(t, "bad status", a.do(t, "PUT", "/v1/users/"+id+"/status", admin, map[string]any{"status": "banned"}), http.StatusUnprocessableEntity, "validation_failed")
	want(t, "me before disabling", a.do(t, "GET", "/v1/users/me", userTok, nil), 200, "")
	r = a.do(t, "PUT", "/v1/users/"+id+"/status", admin, map[string]any{"status": "disabled"})
	want(t, "disable", r, 200, "")
	if got := r.json(t); got["status"] != "disabled" || got["version"] != 4.0 {
		t.Errorf("after disabling: %s", r.Body)
	}
	// The token issued before is refused at once; the login too.
	want(t, "me after disabling", a.do(t, "GET", "/v1/users/me", userTok, nil), http.StatusForbidden, "user_disabled")
	want(t, "login after disabling", a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "user@example.com", "password": "user-password"}),
		http.StatusUnauthorized, "invalid_credentials")
	r = a.do(t, "PUT", "/v1/users/"+id+"/status", admin, map[string]any{"status": "active"})
	want(t, "enable", r, 200, "")
	want(t, "me after enabling", a.do(t, "GET", "/v1/users/me", userTok, nil), 200, "")

	// Unknown and malformed ids.
	for _, path := range []string{"/v1/users/" + uuid.NewString(), "/v1/users/nope"} {
		want(t, "roles of "+path, a.do(t, "PUT", path+"/roles", admin, map[string]any{"roles": []string{"admin"}}), 404, "not_found")
		want(t, "status of "+path, a.do(t, "PUT", path+"/status", admin, map[string]any{"status": "active"}), 404, "not_found")
		want(t, "get "+path, a.do(t, "GET", path, admin, nil), 404, "not_found")
	}

	// Promoted to admin, the user administers at once (account reads its own database).
	want(t, "promote", a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{"roles": []string{"admin"}}), 200, "")
	want(t, "list as promoted user", a.do(t, "GET", "/v1/users", userTok, nil), 200, "")
}

func TestLastAdmin(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	root := a.login(t, adminEmail, adminPassword)
	rootID := a.do(t, "GET", "/v1/users/me", root, nil).json(t)["id"].(string)

	// The bootstrap admin is the only one: they can neither step down nor disable themself.
	want(t, "demote the last admin", a.do(t, "PUT", "/v1/users/"+rootID+"/roles", root, map[string]any{"roles": []string{"moderator"}}),
		http.StatusConflict, "last_admin")
	want(t, "disable the last admin", a.do(t, "PUT", "/v1/users/"+rootID+"/status", root, map[string]any{"status": "disabled"}),
		http.StatusConflict, "last_admin")
	r := a.do(t, "PUT", "/v1/users/"+rootID+"/roles", root, map[string]any{"roles": []string{"moderator", "admin"}})
	want(t, "keep the admin role", r, http.StatusOK, "")
	if got := r.json(t); got["version"] != 2.0 {
		t.Errorf("after keeping the role: version %v, want 2 (the refused changes changed nothing)", got["version"])
	}

	// Two admins take each other's role at once: one succeeds, the other is refused (409, or 403
	// when its request is authenticated after it lost the role).
	other := a.register(t, "other@example.com", "other-password", "Other")["id"].(string)
	want(t, "promote", a.do(t, "PUT", "/v1/users/"+other+"/roles", root, map[string]any{"roles": []string{"admin"}}), http.StatusOK, "")
	otherTok := a.login(t, "other@example.com", "other-password")
	got := burst(t, 2, func(i int) request {
		tok, target := root, other
		if i == 1 {
			tok, target = otherTok, rootID
		}
		return request{"PUT", "/v1/users/" + target + "/status", tok, `{"status":"disabled"}`, nil}
	}, a.URL)
	statuses := []int{got[0].Status, got[1].Status}
	slices.Sort(statuses)
	if statuses[0] != http.StatusOK || (statuses[1] != http.StatusForbidden && statuses[1] != http.StatusConflict) {
		t.Fatalf("concurrent disabling: statuses %v (%s, %s), want one 200 and one 403 or 409", statuses, got[0].Body, got[1].Body)
	}
	var active int
	for _, tok := range []string{root, otherTok} {
		if a.do(t, "GET", "/v1/users", tok, nil).Status == http.StatusOK {
			active++
		}
	}
	if active != 1 {
		t.Errorf("%d admins can still administer users, want 1", active)
	}
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	ids := []string{a.do(t, "GET", "/v1/users/me", admin, nil).json(t)["id"].(string)}
	for i := range 4 {
		ids = append(ids, a.register(t, fmt.Sprintf("u%d@example.com", i), "password1", "U")["id"].(string))
	}

	r := a.do(t, "GET", "/v1/users", admin, nil)
	want(t, "list", r, 200, "")
	var page struct {
		Items      []map[string]any `json:"items"`
		NextCursor *string          `json:"next_cursor"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 5 || (page.NextCursor != nil && *page.NextCursor != "") {
		t.Errorf("default page: %d items, next_cursor %v; want 5 and none", len(page.Items), page.NextCursor)
	}
	if diff := cmp.Diff(userFields, keysOf(page.Items[0])); diff != "" {
		t.Errorf("item fields (-want +got):\n%s", diff)
	}

	var got []string
	path := "/v1/users?limit=2"
	for range 5 {
		r := a.do(t, "GET", path, admin, nil)
		want(t, "GET "+path, r, 200, "")
		page.Items, page.NextCursor = nil, nil
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			got = append(got, it["id"].(string))
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			break
		}
		path = "/v1/users?limit=2&cursor=" + *page.NextCursor
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("ids across pages (-want +got):\n%s", diff)
	}
}

func TestWellKnown(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	env["TOKEN_ISSUER"] = "https://id.example.com"
	env["TOKEN_TTL"] = "5m"
	a := startApp(t, env)

	r := a.do(t, "GET", "/.well-known/jwks.json", "", nil)
	want(t, "jwks", r, 200, "")
	if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") {
		t.Errorf("jwks Cache-Control = %q, want a max-age", cc)
	}
	var doc auth.JWKS
	if err := json.Unmarshal(r.Body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 1 {
		t.Fatalf("jwks has %d keys, want 1: %s", len(doc.Keys), r.Body)
	}
	k := doc.Keys[0]
	if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" || k.Kid == "" || k.X == "" {
		t.Errorf("jwk = %+v", k)
	}
	if strings.Contains(string(r.Body), `"d"`) {
		t.Errorf("the JWKS holds a private key: %s", r.Body)
	}

	// The key bucket holds the same document.
	kv := keyBucket(t, ns)
	e, err := kv.Get(t.Context(), events.KeysKey)
	if err != nil {
		t.Fatalf("get %s: %v", events.KeysKey, err)
	}
	if !bytes.Equal(bytes.TrimSpace(e.Value()), bytes.TrimSpace(r.Body)) {
		t.Errorf("bucket jwks %s differs from HTTP %s", e.Value(), r.Body)
	}

	r = a.do(t, "GET", "/.well-known/openid-configuration", "", nil)
	want(t, "openid-configuration", r, 200, "")
	oc := r.json(t)
	if diff := cmp.Diff(map[string]any{"issuer": "https://id.example.com", "jwks_uri": a.URL + "/.well-known/jwks.json"}, oc); diff != "" {
		t.Errorf("openid-configuration (-want +got):\n%s", diff)
	}

	// The issuer and TTL of the configuration are those of the tokens.
	tok := a.login(t, adminEmail, adminPassword)
	c := segment(t, tok, 1)
	if c["iss"] != "https://id.example.com" || c["exp"].(float64)-c["iat"].(float64) != 300 {
		t.Errorf("claims = %v, want the configured issuer and a 5m lifetime", c)
	}
	if segment(t, tok, 0)["kid"] != k.Kid {
		t.Errorf("token kid %v is not the published key %s", segment(t, tok, 0)["kid"], k.Kid)
	}
}

// request is one request of a burst.
type request struct {
	method, path, token, body string
	header                    http.Header
}

// burst sends n requests at once, request i as made by req(i), and returns their answers in
// order. It waits for every answer; a request that fails to get one fails the test.
func burst(t *testing.T, n int, req func(i int) request, baseURL string) []response {
	t.Helper()
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		out   = make([]response, n)
		errs  = make([]error, n)
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range n {
		rq := req(i)
		wg.Go(func() {
			hr, err := http.NewRequestWithContext(t.Context(), rq.method, baseURL+rq.path, strings.NewReader(rq.body))
			if err != nil {
				errs[i] = err
				return
			}
			maps.Copy(hr.Header, rq.header)
			hr.Header.Set("Content-Type", "application/json")
			if rq.token != "" {
				hr.Header.Set("Authorization", "Bearer "+rq.token)
			}
			<-start
			resp, err := client.Do(hr)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			out[i] = response{servicetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d of the burst: %v", i, err)
		}
	}
	return out
}

func TestOpenIDConfigurationPublicURL(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	env["PUBLIC_URL"] = "https://id.example.com/account/"
	a := startApp(t, env)

	// A client, or a cache in between, cannot make the document point elsewhere.
	req, err := http.NewRequestWithContext(t.Context(), "GET", a.URL+"/.well-known/openid-configuration", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "evil.example"
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "http")
	req.Header.Set("Forwarded", "host=evil.example;proto=http")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("openid-configuration: status %d, %v", resp.StatusCode, err)
	}
	if want := "https://id.example.com/account/.well-known/jwks.json"; doc["jwks_uri"] != want {
		t.Errorf("jwks_uri = %v, want %s", doc["jwks_uri"], want)
	}
}

func keyBucket(t *testing.T, ns *natstest.Server) jetstream.KeyValue {
	t.Helper()
	js := ns.JetStream(t, natstest.Blog)
	kv, err := js.KeyValue(t.Context(), events.KeysBucket)
	if err != nil {
		t.Fatalf("key bucket: %v", err)
	}
	return kv
}

// streamEvent is a message of the USERS stream.
type streamEvent struct {
	subject string
	msgID   string
	data    []byte
}

// waitForEvents reads the USERS stream from the start until it holds n messages, or fails.
func waitForEvents(t *testing.T, js jetstream.JetStream, n int) []streamEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		s, err := js.Stream(ctx, events.StreamName)
		if err == nil {
			info, err := s.Info(ctx)
			if err == nil && info.State.Msgs >= uint64(n) {
				var out []streamEvent
				for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
					m, err := s.GetMsg(ctx, seq)
					if err != nil {
						t.Fatalf("get message %d: %v", seq, err)
					}
					out = append(out, streamEvent{subject: m.Subject, msgID: m.Header.Get("Nats-Msg-Id"), data: m.Data})
				}
				return out
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the USERS stream did not reach %d messages within 20s", n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestEventsReachStream(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	a := startApp(t, env)
	admin := a.login(t, adminEmail, adminPassword)
	u := a.register(t, "evt@example.com", "password1", "Evt")
	id := u["id"].(string)
	want(t, "roles", a.do(t, "PUT", "/v1/users/"+id+"/roles", admin, map[string]any{"roles": []string{"moderator"}}), 200, "")
	want(t, "status", a.do(t, "PUT", "/v1/users/"+id+"/status", admin, map[string]any{"status": "disabled"}), 200, "")

	js := ns.JetStream(t, natstest.Blog)
	msgs := waitForEvents(t, js, 4) // the bootstrap admin's creation, then three of this user
	var mine []streamEvent
	for _, m := range msgs {
		if strings.HasSuffix(m.subject, "."+id) {
			mine = append(mine, m)
		}
	}
	wantSubjects := []string{"users.created." + id, "users.role_changed." + id, "users.status_changed." + id}
	var subjects []string
	for _, m := range mine {
		subjects = append(subjects, m.subject)
	}
	if diff := cmp.Diff(wantSubjects, subjects); diff != "" {
		t.Fatalf("subjects of the user's events (-want +got):\n%s", diff)
	}
	wantUsers := []map[string]any{
		{"id": id, "email": "evt@example.com", "display_name": "Evt", "roles": []any{"user"}, "status": "active", "version": 1.0},
		{"id": id, "email": "evt@example.com", "display_name": "Evt", "roles": []any{"user", "moderator"}, "status": "active", "version": 2.0},
		{"id": id, "email": "evt@example.com", "display_name": "Evt", "roles": []any{"user", "moderator"}, "status": "disabled", "version": 3.0},
	}
	types := []string{"user.created", "user.role_changed", "user.status_changed"}
	for i, m := range mine {
		var e map[string]any
		if err := json.Unmarshal(m.data, &e); err != nil {
			t.Fatalf("event %s: %v", m.subject, err)
		}
		if diff := cmp.Diff([]string{"id", "occurred_at", "type", "user"}, keysOf(e)); diff != "" {
			t.Errorf("event %s fields (-want +got):\n%s", m.subject, diff)
		}
		if e["id"] != m.msgID || m.msgID == "" {
			t.Errorf("event %s: Nats-Msg-Id %q, event id %v; want equal", m.subject, m.msgID, e["id"])
		}
		if eid, err := uuid.Parse(m.msgID); err != nil || eid.Version() != 7 {
			t.Errorf("event id %q is not a UUIDv7", m.msgID)
		}
		if e["type"] != types[i] {
			t.Errorf("event %s type %v, want %s", m.subject, e["type"], types[i])
		}
		if _, err := time.Parse(time.RFC3339Nano, e["occurred_at"].(string)); err != nil {
			t.Errorf("occurred_at %v: %v", e["occurred_at"], err)
		}
		if diff := cmp.Diff(wantUsers[i], e["user"]); diff != "" {
			t.Errorf("event %s user (-want +got):\n%s", m.subject, diff)
		}
		var ev events.Event
		if err := json.Unmarshal(m.data, &ev); err != nil || ev.Validate() != nil {
			t.Errorf("event %s does not validate: %v, %v", m.subject, err, ev.Validate())
		}
	}
}

func TestBootstrapAdminIdempotent(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	first := startApp(t, env)
	tok := first.login(t, adminEmail, adminPassword)
	me := first.do(t, "GET", "/v1/users/me", tok, nil).json(t)
	if !cmp.Equal([]any{"user", "admin"}, me["roles"]) || me["version"] != 1.0 {
		t.Fatalf("bootstrap admin = %v, want roles [user admin] at version 1", me)
	}
	kid := segment(t, tok, 0)["kid"]
	first.Stop()

	second := startApp(t, env)
	tok2 := second.login(t, adminEmail, adminPassword)
	me2 := second.do(t, "GET", "/v1/users/me", tok2, nil).json(t)
	if diff := cmp.Diff(me, me2); diff != "" {
		t.Errorf("bootstrap admin changed across restarts (-first +second):\n%s", diff)
	}
	if k2 := segment(t, tok2, 0)["kid"]; k2 != kid {
		t.Errorf("signing key changed across restarts: %v, then %v", kid, k2)
	}
	// A token of the first run is still good.
	want(t, "first run's token", second.do(t, "GET", "/v1/users/me", tok, nil), 200, "")
	r := second.do(t, "GET", "/v1/users", tok2, nil)
	want(t, "list", r, 200, "")
	if n := len(r.json(t)["items"].([]any)); n != 1 {
		t.Errorf("%d users after two starts, want 1", n)
	}
	// One event in all: the admin's creation.
	pool, err := pgxpool.New(t.Context(), env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st, err := outbox.Status(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending+st.Published != 1 {
		t.Errorf("outbox holds %d events after two starts, want 1", st.Pending+st.Published)
	}
	msgs := waitForEvents(t, ns.JetStream(t, natstest.Blog), 1)
	if len(msgs) != 1 || msgs[0].subject != "users.created."+me["id"].(string) {
		t.Errorf("stream after two starts: %d events, want the admin's creation only", len(msgs))
	}
}

// publishedSets returns the key sets that verifiers see: account's JWKS endpoint and the bucket.
func publishedSets(t *testing.T, a *app, ns *natstest.Server) map[string]*auth.KeySet {
	t.Helper()
	r := a.do(t, "GET", "/.well-known/jwks.json", "", nil)
	want(t, "jwks", r, http.StatusOK, "")
	endpoint, err := auth.NewKeySet(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	e, err := keyBucket(t, ns).Get(t.Context(), events.KeysKey)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := auth.NewKeySet(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*auth.KeySet{"jwks endpoint": endpoint, "bucket": bucket}
}

func TestBootstrapTakesOverSquatter(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	plain := maps.Clone(env)
	delete(plain, "BOOTSTRAP_ADMIN_EMAIL")
	delete(plain, "BOOTSTRAP_ADMIN_PASSWORD")
	first := startApp(t, plain)
	squatter := first.register(t, "ROOT@example.com", "squatter-password", "Mallory")
	squatterToken := first.login(t, "root@example.com", "squatter-password")
	oldKid := segment(t, squatterToken, 0)["kid"].(string)
	first.Stop()

	second := startApp(t, env) // BOOTSTRAP_ADMIN_EMAIL is root@example.com
	r := second.do(t, "POST", "/v1/tokens", "", map[string]string{"email": "root@example.com", "password": "squatter-password"})
	want(t, "the squatter's password", r, http.StatusUnauthorized, "invalid_credentials")
	tok := second.login(t, adminEmail, adminPassword)
	me := second.do(t, "GET", "/v1/users/me", tok, nil)
	want(t, "me", me, http.StatusOK, "")
	u := me.json(t)
	if u["id"] != squatter["id"] || !cmp.Equal([]any{"user", "admin"}, u["roles"]) || u["status"] != "active" || u["version"] != 2.0 {
		t.Errorf("after the bootstrap: %s; want user %v, an active admin at version 2", me.Body, squatter["id"])
	}
	// The squatter's token works nowhere: account refuses it, and no published key verifies it.
	r = second.do(t, "GET", "/v1/users/me", squatterToken, nil)
	want(t, "the squatter's token at account", r, http.StatusUnauthorized, "unauthenticated")
	for where, set := range publishedSets(t, second, ns) {
		if _, ok := set.Key(oldKid); ok {
			t.Errorf("%s still publishes the key %s that signed the squatter's token", where, oldKid)
		}
		if _, err := (&auth.Verifier{Keys: set, Issuer: "account", Audience: "shop"}).Verify(squatterToken); err == nil {
			t.Errorf("the squatter's token verifies with the keys of the %s", where)
		}
		if _, err := (&auth.Verifier{Keys: set, Issuer: "account", Audience: "shop"}).Verify(tok); err != nil {
			t.Errorf("the admin's token does not verify with the keys of the %s: %v", where, err)
		}
	}
	if !strings.Contains(second.Logs(), `"level":"WARN","msg":"bootstrap admin took over`) {
		t.Errorf("the takeover is not logged at warn:\n%s", second.Logs())
	}
	// The change went through the outbox: user.created, then user.role_changed at version 2.
	msgs := waitForEvents(t, ns.JetStream(t, natstest.Blog), 2)
	if len(msgs) != 2 || msgs[1].subject != "users.role_changed."+squatter["id"].(string) {
		t.Fatalf("stream: %d events, want the squatter's creation and the role change", len(msgs))
	}
	var e map[string]any
	if err := json.Unmarshal(msgs[1].data, &e); err != nil {
		t.Fatal(err)
	}
	if ev := e["user"].(map[string]any); ev["version"] != 2.0 || !cmp.Equal([]any{"user", "admin"}, ev["roles"]) || ev["status"] != "active" {
		t.Errorf("role change event user = %v", ev)
	}
	second.Stop()

	// Once more: nothing changes, the key in use stays.
	third := startApp(t, env)
	r = third.do(t, "GET", "/v1/users/me", tok, nil)
	want(t, "the admin's token after another restart", r, http.StatusOK, "")
	if diff := cmp.Diff(u, r.json(t)); diff != "" {
		t.Errorf("the admin changed across an idempotent restart (-before +after):\n%s", diff)
	}
	if kid := segment(t, third.login(t, adminEmail, adminPassword), 0)["kid"]; kid != segment(t, tok, 0)["kid"] {
		t.Errorf("signing key changed across an idempotent restart: %v, then %v", segment(t, tok, 0)["kid"], kid)
	}
	if strings.Contains(third.Logs(), "took over") {
		t.Error("an idempotent restart took the account over again")
	}
}

// TestBootstrapReactivatesAdmin: the bootstrap admin, disabled since, is active again after a
// start, with no key revoked (the password and the role were already right).
func TestBootstrapReactivatesAdmin(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	first := startApp(t, env)
	admin := first.login(t, adminEmail, adminPassword)
	other := first.register(t, "other@example.com", "other-password", "Other")
	// Make another admin, who disables the bootstrap admin.
	r := first.do(t, "PUT", "/v1/users/"+other["id"].(string)+"/roles", admin, map[string]any{"roles": []string{"admin"}})
	want(t, "grant admin", r, http.StatusOK, "")
	otherTok := first.login(t, "other@example.com", "other-password")
	me := first.do(t, "GET", "/v1/users/me", admin, nil).json(t)
	r = first.do(t, "PUT", "/v1/users/"+me["id"].(string)+"/status", otherTok, map[string]any{"status": "disabled"})
	want(t, "disable the bootstrap admin", r, http.StatusOK, "")
	first.Stop()

	second := startApp(t, env)
	tok := second.login(t, adminEmail, adminPassword)
	got := second.do(t, "GET", "/v1/users/me", tok, nil).json(t)
	if got["status"] != "active" || got["version"] != 3.0 {
		t.Errorf("bootstrap admin after restart = %v, want active at version 3", got)
	}
	want(t, "another admin's token from before", second.do(t, "GET", "/v1/users/me", otherTok, nil), http.StatusOK, "")
}

func TestKeysRotate(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	a := startApp(t, env)
	old := a.login(t, adminEmail, adminPassword)
	oldKid := segment(t, old, 0)["kid"].(string)

	var out bytes.Buffer
	env["HTTP_ADDR"] = a.Addr
	if err := run(t.Context(), []string{"keys", "rotate"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatalf("keys rotate: %v", err)
	}
	if !strings.Contains(out.String(), "is current") {
		t.Errorf("keys rotate printed %q", out.String())
	}
	// The bucket holds both keys at once: the new one before anyone signs with it, the old one
	// while its tokens live.
	e, err := keyBucket(t, ns).Get(t.Context(), events.KeysKey)
	if err != nil {
		t.Fatal(err)
	}
	set, err := auth.NewKeySet(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 {
		t.Fatalf("bucket holds %d keys after rotation, want 2", set.Len())
	}
	if _, ok := set.Key(oldKid); !ok {
		t.Errorf("the retired key %s is no longer published", oldKid)
	}
	if _, err := (&auth.Verifier{Keys: set, Issuer: "account", Audience: "blog"}).Verify(old); err != nil {
		t.Errorf("a token of the retired key is refused: %v", err)
	}
	want(t, "old token at account", a.do(t, "GET", "/v1/users/me", old, nil), 200, "")
}

func TestOutboxStatus(t *testing.T) {
	t.Parallel()
	env, ns := testEnv(t)
	a := startApp(t, env)
	waitForEvents(t, ns.JetStream(t, natstest.Blog), 1)
	a.Stop()

	var out bytes.Buffer
	if err := run(t.Context(), []string{"outbox", "status"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatalf("outbox status: %v", err)
	}
	if !strings.Contains(out.String(), "published: 1") {
		t.Errorf("outbox status printed %q, want published: 1", out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"outbox", "republish", "--since", "2000-01-01T00:00:00Z"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatalf("outbox republish: %v", err)
	}
	if !strings.Contains(out.String(), "republished: 1") {
		t.Errorf("outbox republish printed %q, want republished: 1", out.String())
	}
	// Inside the duplicate window, the stream does not store it twice.
	if msgs := waitForEvents(t, ns.JetStream(t, natstest.Blog), 1); len(msgs) != 1 {
		t.Errorf("stream holds %d events after republish, want 1", len(msgs))
	}
}

func TestKeysReseal(t *testing.T) {
	t.Parallel()
	env, _ := testEnv(t)
	a := startApp(t, env)
	tok := a.login(t, adminEmail, adminPassword)
	a.Stop()
	const newSecret = "a-new-secret-of-at-least-32-characters!"
	runCmd := func(secrets string, args ...string) (string, error) {
		e := maps.Clone(env)
		e["SIGNING_KEY_SECRETS"] = secrets
		var out bytes.Buffer
		err := run(t.Context(), args, func(k string) string { return e[k] }, &out, io.Discard)
		return out.String(), err
	}

	// Without the secret that sealed the keys, account does not start, and says why.
	e := maps.Clone(env)
	e["SIGNING_KEY_SECRETS"] = newSecret
	e["HTTP_ADDR"] = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // were it to serve, it would stop
	defer cancel()
	err := run(ctx, nil, func(k string) string { return e[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SIGNING_KEY_SECRETS") {
		t.Fatalf("serve with another secret = %v, want an error naming SIGNING_KEY_SECRETS", err)
	}
	if _, err := runCmd(newSecret, "keys", "reseal"); err == nil {
		t.Error("keys reseal without the old secret succeeded")
	}

	// Rotation: the new secret first, the old one second; reseal; then the new one alone.
	out, err := runCmd(newSecret+","+testSecret, "keys", "reseal")
	if err != nil || !strings.Contains(out, "resealed 1 signing keys") {
		t.Fatalf("keys reseal = %q, %v; want one key resealed", out, err)
	}
	e = maps.Clone(env)
	e["SIGNING_KEY_SECRETS"] = newSecret
	b := startApp(t, e)
	want(t, "a token from before the rotation of secrets", b.do(t, "GET", "/v1/users/me", tok, nil), http.StatusOK, "")
	b.Stop()
	if _, err := runCmd(testSecret, "keys", "reseal"); err == nil {
		t.Error("keys reseal with the removed secret alone succeeded")
	}
}
