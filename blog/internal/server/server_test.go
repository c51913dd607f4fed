package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/blog/internal/blogtest"
	"github.com/authmesh/blog/internal/server"
	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/servicetest"
	"github.com/authmesh/events/web"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// fixture is the blog's API over a real store and a real replica, behind the real authenticator
// and the middleware every service wraps its mux with.
type fixture struct {
	env *blogtest.Env
	iss *authtest.Issuer
	url string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := blogtest.New(t)
	iss := authtest.NewIssuer(t)
	keys, err := auth.NewKeySet(iss.JWKS(t))
	if err != nil {
		t.Fatalf("key set: %v", err)
	}
	log := blogtest.Discard()
	authn := auth.New(&auth.Verifier{Keys: keys, Issuer: iss.Issuer, Audience: "blog"}, env.Replica, log)
	mux := server.New(log, env.Store, authn)
	srv := httptest.NewServer(web.Handler(mux, log, prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return &fixture{env: env, iss: iss, url: srv.URL}
}

// user returns a new user with roles, in the replica, and a token of theirs.
func (f *fixture) user(t *testing.T, roles ...string) (events.User, string) {
	t.Helper()
	u := f.env.NewUser(t, roles...)
	return u, f.iss.Token(t, u)
}

func (f *fixture) do(t *testing.T, method, path, token, body string) servicetest.Response {
	t.Helper()
	return servicetest.Do(t, method, f.url+path, token, body)
}

type postJSON struct {
	ID         uuid.UUID `json:"id"`
	AuthorID   uuid.UUID `json:"author_id"`
	AuthorName string    `json:"author_name"`
	Title      string    `json:"title"`
	Body       string    `json:"body"`
	CreatedAt  string    `json:"created_at"`
	UpdatedAt  string    `json:"updated_at"`
}

type problem struct {
	Type   string           `json:"type"`
	Title  string           `json:"title"`
	Status int              `json:"status"`
	Code   string           `json:"code"`
	Errors []web.FieldError `json:"errors"`
}

// wantPost checks r is a JSON post with status and returns it; the body must have exactly the
// contract's fields.
func wantPost(t *testing.T, r servicetest.Response, status int) postJSON {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var fields map[string]any
	if err := json.Unmarshal(r.Body, &fields); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range fields {
			if !yield(k) {
				return
			}
		}
	})
	want := []string{"author_id", "author_name", "body", "created_at", "id", "title", "updated_at"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("post fields mismatch (-want +got):\n%s", diff)
	}
	var p postJSON
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	for _, ts := range []string{p.CreatedAt, p.UpdatedAt} {
		if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.HasSuffix(ts, "Z") || tm.IsZero() {
			t.Errorf("timestamp %q is not RFC 3339 UTC", ts)
		}
	}
	return p
}

// wantProblem checks r is a problem with status and code and returns it.
func wantProblem(t *testing.T, r servicetest.Response, status int, code string) problem {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != web.ProblemContentType {
		t.Errorf("Content-Type = %q, want %s", ct, web.ProblemContentType)
	}
	var p problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("problem %s: %v", r.Body, err)
	}
	if p.Code != code || p.Status != status || p.Type != "about:blank" || p.Title == "" {
		t.Errorf("problem = %+v, want status %d code %s", p, status, code)
	}
	return p
}

func fieldsOf(p problem) []string {
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

func TestCreateAndGet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u, token := f.user(t)

	r := f.do(t, "POST", "/v1/posts", token, `{"title":"Hello","body":"First post."}`)
	p := wantPost(t, r, http.StatusCreated)
	if loc := r.Header.Get("Location"); loc != "/v1/posts/"+p.ID.String() {
		t.Errorf("Location = %q, want /v1/posts/%s", loc, p.ID)
	}
	want := postJSON{ID: p.ID, AuthorID: u.ID, AuthorName: u.DisplayName, Title: "Hello",
		Body: "First post.", CreatedAt: p.CreatedAt, UpdatedAt: p.CreatedAt}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("created post mismatch (-want +got):\n%s", diff)
	}

	got := wantPost(t, f.do(t, "GET", "/v1/posts/"+p.ID.String(), "", ""), http.StatusOK)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET post mismatch (-want +got):\n%s", diff)
	}

	for _, path := range []string{"/v1/posts/" + uuid.NewString(), "/v1/posts/not-a-uuid", "/v1/posts/123"} {
		wantProblem(t, f.do(t, "GET", path, "", ""), http.StatusNotFound, web.CodeNotFound)
	}
}

func TestCreateRefuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, token := f.user(t)

	tests := []struct {
		name       string
		body       string
		status     int
		code       string
		wantFields []string
	}{
		{"empty title", `{"title":"","body":"b"}`, 422, web.CodeValidationFailed, []string{"title"}},
		{"blank title", `{"title":" \t ","body":"b"}`, 422, web.CodeValidationFailed, []string{"title"}},
		{"title too long", fmt.Sprintf(`{"title":%q,"body":"b"}`, strings.Repeat("é", 201)), 422, web.CodeValidationFailed, []string{"title"}},
		{"title with a newline", `{"title":"a\nb","body":"b"}`, 422, web.CodeValidationFailed, []string{"title"}},
		{"missing body", `{"title":"t"}`, 422, web.CodeValidationFailed, []string{"body"}},
		{"blank body", `{"title":"t","body":"\n\n"}`, 422, web.CodeValidationFailed, []string{"body"}},
		{"body too long", fmt.Sprintf(`{"title":"t","body":%q}`, strings.Repeat("x", 100_001)), 422, web.CodeValidationFailed, []string{"body"}},
		{"NUL in body", `{"title":"t","body":"a\u0000b"}`, 422, web.CodeValidationFailed, []string{"body"}},
		{"both missing", `{}`, 422, web.CodeValidationFailed, []string{"title", "body"}},
		{"unknown field", `{"title":"t","body":"b","author_id":"x"}`, 400, web.CodeBadRequest, nil},
		{"wrong type", `{"title":1,"body":"b"}`, 400, web.CodeBadRequest, nil},
		{"malformed JSON", `{"title":`, 400, web.CodeBadRequest, nil},
		{"not an object", `[]`, 400, web.CodeBadRequest, nil},
		{"too large", fmt.Sprintf(`{"title":"t","body":%q}`, strings.Repeat("x", web.MaxBodyBytes)), 413, web.CodePayloadTooLarge, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wantProblem(t, f.do(t, "POST", "/v1/posts", token, tt.body), tt.status, tt.code)
			if diff := cmp.Diff(tt.wantFields, fieldsOf(p)); diff != "" {
				t.Errorf("invalid fields mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("not JSON", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", f.url+"/v1/posts", strings.NewReader("title=t"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("status = %d, want 415", resp.StatusCode)
		}
	})
	t.Run("no token", func(t *testing.T) {
		r := f.do(t, "POST", "/v1/posts", "", `{"title":"t","body":"b"}`)
		wantProblem(t, r, http.StatusUnauthorized, web.CodeUnauthenticated)
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	})
	t.Run("limits are inclusive and count characters", func(t *testing.T) {
		body := fmt.Sprintf(`{"title":%q,"body":%q}`, strings.Repeat("é", 200), strings.Repeat("ü", 100_000))
		p := wantPost(t, f.do(t, "POST", "/v1/posts", token, body), http.StatusCreated)
		if n := len([]rune(p.Body)); n != 100_000 {
			t.Errorf("stored body has %d characters, want 100000", n)
		}
	})
	t.Run("disabled user", func(t *testing.T) {
		u, token := f.user(t)
		u.Status, u.Version = events.StatusDisabled, u.Version+1
		f.env.Publish(t, events.UserStatusChanged, u)
		wantProblem(t, f.do(t, "POST", "/v1/posts", token, `{"title":"t","body":"b"}`), http.StatusForbidden, web.CodeUserDisabled)
	})
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	author, token := f.user(t)
	_, other := f.user(t)
	_, moderator := f.user(t, events.RoleModerator)
	_, admin := f.user(t, events.RoleAdmin)
	p := wantPost(t, f.do(t, "POST", "/v1/posts", token, `{"title":"Old","body":"Body"}`), http.StatusCreated)
	path := "/v1/posts/" + p.ID.String()

	got := wantPost(t, f.do(t, "PATCH", path, token, `{"title":"New"}`), http.StatusOK)
	if got.Title != "New" || got.Body != "Body" || got.AuthorName != author.DisplayName || got.CreatedAt != p.CreatedAt {
		t.Errorf("PATCH title = %+v, want the title changed and the rest kept", got)
	}
	got = wantPost(t, f.do(t, "PATCH", path, token, `{"body":"Changed","title":null}`), http.StatusOK)
	if got.Title != "New" || got.Body != "Changed" {
		t.Errorf("PATCH body = %+v, want the body changed and the title kept", got)
	}

	tests := []struct {
		name       string
		path       string
		token      string
		body       string
		status     int
		code       string
		wantFields []string
	}{
		{"another user", path, other, `{"title":"Mine"}`, 403, web.CodeForbidden, nil},
		{"a moderator", path, moderator, `{"title":"Mine"}`, 403, web.CodeForbidden, nil},
		{"an admin", path, admin, `{"title":"Mine"}`, 403, web.CodeForbidden, nil},
		{"another user, invalid patch", path, other, `{"title":""}`, 403, web.CodeForbidden, nil},
		{"unknown post", "/v1/posts/" + uuid.NewString(), token, `{"title":"x"}`, 404, web.CodeNotFound, nil},
		{"malformed id", "/v1/posts/nope", token, `{"title":"x"}`, 404, web.CodeNotFound, nil},
		{"empty patch", path, token, `{}`, 422, web.CodeValidationFailed, []string{"title", "body"}},
		{"blank title", path, token, `{"title":"  "}`, 422, web.CodeValidationFailed, []string{"title"}},
		{"both invalid", path, token, fmt.Sprintf(`{"title":"","body":%q}`, strings.Repeat("b", 100_001)), 422, web.CodeValidationFailed, []string{"title", "body"}},
		{"unknown field", path, token, `{"author_id":"` + uuid.NewString() + `"}`, 400, web.CodeBadRequest, nil},
		{"no token", path, "", `{"title":"x"}`, 401, web.CodeUnauthenticated, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prob := wantProblem(t, f.do(t, "PATCH", tt.path, tt.token, tt.body), tt.status, tt.code)
			if diff := cmp.Diff(tt.wantFields, fieldsOf(prob)); diff != "" {
				t.Errorf("invalid fields mismatch (-want +got):\n%s", diff)
			}
		})
	}

	after := wantPost(t, f.do(t, "GET", path, "", ""), http.StatusOK)
	if after.Title != "New" || after.Body != "Changed" {
		t.Errorf("post after refused patches = %+v, want it unchanged", after)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, author := f.user(t)
	_, other := f.user(t)
	_, moderator := f.user(t, events.RoleModerator)
	_, admin := f.user(t, events.RoleAdmin)
	newPost := func() string {
		p := wantPost(t, f.do(t, "POST", "/v1/posts", author, `{"title":"t","body":"b"}`), http.StatusCreated)
		return "/v1/posts/" + p.ID.String()
	}

	path := newPost()
	wantProblem(t, f.do(t, "DELETE", path, other, ""), http.StatusForbidden, web.CodeForbidden)
	wantProblem(t, f.do(t, "DELETE", path, "", ""), http.StatusUnauthorized, web.CodeUnauthenticated)
	wantPost(t, f.do(t, "GET", path, "", ""), http.StatusOK)

	for name, token := range map[string]string{"author": author, "moderator": moderator, "admin": admin} {
		path := newPost()
		if r := f.do(t, "DELETE", path, token, ""); r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Errorf("DELETE by the %s = %d %s, want 204 and no body", name, r.Status, r.Body)
		}
		wantProblem(t, f.do(t, "GET", path, "", ""), http.StatusNotFound, web.CodeNotFound)
		wantProblem(t, f.do(t, "DELETE", path, token, ""), http.StatusNotFound, web.CodeNotFound)
	}
	wantProblem(t, f.do(t, "DELETE", "/v1/posts/"+uuid.NewString(), admin, ""), http.StatusNotFound, web.CodeNotFound)
	wantProblem(t, f.do(t, "DELETE", "/v1/posts/x", admin, ""), http.StatusNotFound, web.CodeNotFound)
}

type listJSON struct {
	Items      []postJSON `json:"items"`
	NextCursor string     `json:"next_cursor"`
}

func TestList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice, aliceToken := f.user(t)
	_, bobToken := f.user(t)

	r := f.do(t, "GET", "/v1/posts", "", "")
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"items":[]`) || strings.Contains(string(r.Body), "next_cursor") {
		t.Errorf("empty list = %d %s, want 200 with items [] and no next_cursor", r.Status, r.Body)
	}

	var want, wantAlice []uuid.UUID // newest first
	for i := range 5 {
		token := bobToken
		if i%2 == 0 {
			token = aliceToken
		}
		p := wantPost(t, f.do(t, "POST", "/v1/posts", token, fmt.Sprintf(`{"title":"post %d","body":"b"}`, i)), http.StatusCreated)
		want = append([]uuid.UUID{p.ID}, want...)
		if token == aliceToken {
			wantAlice = append([]uuid.UUID{p.ID}, wantAlice...)
		}
	}

	readAll := func(t *testing.T, query string) ([]uuid.UUID, []int) {
		t.Helper()
		var ids []uuid.UUID
		var sizes []int
		cursor := ""
		for range 10 {
			path := "/v1/posts?" + query
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := f.do(t, "GET", path, "", "")
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
			}
			var page listJSON
			if err := json.Unmarshal(r.Body, &page); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			sizes = append(sizes, len(page.Items))
			for _, p := range page.Items {
				ids = append(ids, p.ID)
			}
			if page.NextCursor == "" {
				return ids, sizes
			}
			cursor = page.NextCursor
		}
		t.Fatalf("GET /v1/posts?%s never reached the last page", query)
		return nil, nil
	}

	tests := []struct {
		name      string
		query     string
		want      []uuid.UUID
		wantSizes []int
	}{
		{"default limit", "", want, []int{5}},
		{"pages of 2", "limit=2", want, []int{2, 2, 1}},
		{"pages of 5", "limit=5", want, []int{5}},
		{"by author", "limit=2&author_id=" + alice.ID.String(), wantAlice, []int{2, 1}},
		{"author without posts", "author_id=" + uuid.NewString(), nil, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, sizes := readAll(t, tt.query)
			if diff := cmp.Diff(tt.want, ids); diff != "" {
				t.Errorf("ids mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSizes, sizes); diff != "" {
				t.Errorf("page sizes mismatch (-want +got):\n%s", diff)
			}
		})
	}

	for _, query := range []string{
		"limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5",
		"cursor=!!!", "cursor=bm90IGEgY3Vyc29y", "cursor=" + strings.Repeat("A", 200),
		"author_id=nope",
	} {
		t.Run(query, func(t *testing.T) {
			wantProblem(t, f.do(t, "GET", "/v1/posts?"+query, "", ""), http.StatusBadRequest, web.CodeBadRequest)
		})
	}
}

func TestUnroutedAnswersProblems(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	wantProblem(t, f.do(t, "GET", "/v1/nothing", "", ""), http.StatusNotFound, web.CodeNotFound)
	r := f.do(t, "PUT", "/v1/posts/"+uuid.NewString(), "", `{}`)
	wantProblem(t, r, http.StatusMethodNotAllowed, web.CodeMethodNotAllowed)
}
