package blackbox

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// badRequest is a request that must get a 4xx problem.
type badRequest struct {
	name        string
	method, url string
	token       string
	contentType string // "" sends none
	body        []byte
	status      int    // the status the contract fixes; 0: any 4xx
	code        string // the code the contract fixes; "" when status is 0
}

// TestBadInput sends malformed, oversized, mistyped and misdirected requests to every service.
// Each gets a 4xx problem+json (the status and code the contract fixes, where it does), never a
// 5xx.
func TestBadInput(t *testing.T) {
	t.Parallel()
	u := newUser(t, "Mallory")
	adm := admin(t)
	post := apitest.Call(t, "POST", system.blog+"/v1/posts", u.Token, map[string]any{"title": "t", "body": "b"}).
		Want(t, http.StatusCreated, "post").Str("id")
	product := newProduct(t, 100, 10).Str("id")

	// Every JSON endpoint, with a token that passes its authorization and a valid body.
	endpoints := []struct {
		name, method, url, token string
		valid                    string
	}{
		{"account register", "POST", system.account + "/v1/users", "", `{"email":"e2e-` + uuid.NewString() + `@example.com","password":"long enough","display_name":"M"}`},
		{"account login", "POST", system.account + "/v1/tokens", "", `{"email":"nobody@example.com","password":"x"}`},
		{"account roles", "PUT", system.account + "/v1/users/" + u.ID + "/roles", adm, `{"roles":["user"]}`},
		{"account status", "PUT", system.account + "/v1/users/" + u.ID + "/status", adm, `{"status":"active"}`},
		{"blog create", "POST", system.blog + "/v1/posts", u.Token, `{"title":"t","body":"b"}`},
		{"blog edit", "PATCH", system.blog + "/v1/posts/" + post, u.Token, `{"title":"t"}`},
		{"shop product", "POST", system.shop + "/v1/products", adm, `{"name":"n","price_cents":1,"stock":1}`},
		{"shop edit product", "PATCH", system.shop + "/v1/products/" + product, adm, `{"stock":10}`},
		{"shop order", "POST", system.shop + "/v1/orders", u.Token, `{"items":[{"product_id":"` + product + `","quantity":1}]}`},
	}
	huge := []byte(`{"title":"` + strings.Repeat("x", 2<<20) + `"}`)
	var cases []badRequest
	for _, e := range endpoints {
		add := func(name, ct, body string, status int, code string) {
			cases = append(cases, badRequest{e.name + ": " + name, e.method, e.url, e.token, ct, []byte(body), status, code})
		}
		add("malformed JSON", "application/json", `{"title":`, 400, "bad_request")
		add("trailing data", "application/json", e.valid+`{}`, 400, "bad_request")
		add("unknown field", "application/json", strings.Replace(e.valid, "{", `{"is_admin":true,`, 1), 400, "bad_request")
		add("array", "application/json", `[`+e.valid+`]`, 400, "bad_request")
		add("wrong type", "application/json", `{"title":5,"email":5,"roles":"admin","status":1,"price_cents":"1","items":{}}`, 400, "bad_request")
		add("empty body", "application/json", ``, 400, "bad_request")
		add("content type text/plain", "text/plain", e.valid, 415, "unsupported_media_type")
		add("form content type", "application/x-www-form-urlencoded", "title=t&body=b", 415, "unsupported_media_type")
		add("deep nesting", "application/json", strings.Repeat("[", 10000)+strings.Repeat("]", 10000), 400, "bad_request")
		cases = append(cases, badRequest{e.name + ": 2 MiB body", e.method, e.url, e.token, "application/json", huge, 413, "payload_too_large"})
	}

	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	get := func(name, url, token string, status int, code string) {
		cases = append(cases, badRequest{name, "GET", url, token, "", nil, status, code})
	}
	for _, bad := range []string{"not-a-uuid", "123", uuid.NewString() + "x", "%00", strings.Repeat("a", 2000), "..%2F..%2Fetc%2Fpasswd"} {
		get("account user id "+bad[:min(len(bad), 20)], system.account+"/v1/users/"+bad, adm, 404, "not_found")
		get("blog post id "+bad[:min(len(bad), 20)], system.blog+"/v1/posts/"+bad, "", 404, "not_found")
		get("shop product id "+bad[:min(len(bad), 20)], system.shop+"/v1/products/"+bad, "", 404, "not_found")
		get("shop order id "+bad[:min(len(bad), 20)], system.shop+"/v1/orders/"+bad, u.Token, 404, "not_found")
	}
	cases = append(cases,
		badRequest{"blog delete bad id", "DELETE", system.blog + "/v1/posts/nope", u.Token, "", nil, 404, "not_found"},
		badRequest{"blog edit bad id", "PATCH", system.blog + "/v1/posts/nope", u.Token, "application/json", []byte(`{"title":"t"}`), 404, "not_found"},
		badRequest{"shop edit bad id", "PATCH", system.shop + "/v1/products/nope", adm, "application/json", []byte(`{"stock":1}`), 404, "not_found"},
		badRequest{"account roles bad id", "PUT", system.account + "/v1/users/nope/roles", adm, "application/json", []byte(`{"roles":["user"]}`), 404, "not_found"},
		badRequest{"account roles unknown id", "PUT", system.account + "/v1/users/" + uuid.NewString() + "/roles", adm, "application/json", []byte(`{"roles":["user"]}`), 404, "not_found"},
		badRequest{"unknown path", "GET", system.blog + "/v1/nothing", "", "", nil, 404, "not_found"},
		badRequest{"wrong method", "PUT", system.shop + "/v1/products", adm, "application/json", []byte(`{}`), 405, "method_not_allowed"},
	)
	lists := []struct{ name, url, token string }{
		{"account users", system.account + "/v1/users", adm},
		{"blog posts", system.blog + "/v1/posts", ""},
		{"shop products", system.shop + "/v1/products", ""},
		{"shop orders", system.shop + "/v1/orders", u.Token},
	}
	for _, l := range lists {
		for _, q := range []string{"limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5", "limit=99999999999999999999",
			"cursor=garbage!", "cursor=" + cursor("garbage"), "cursor=" + cursor("2026-01-01T00:00:00Z|not-a-uuid"), "cursor=" + strings.Repeat("A", 5000)} {
			get(l.name+" ?"+q[:min(len(q), 30)], l.url+"?"+q, l.token, 400, "bad_request")
		}
	}
	get("blog posts ?author_id=bad", system.blog+"/v1/posts?author_id=bad", "", 400, "bad_request")
	get("shop orders ?user_id=bad", system.shop+"/v1/orders?user_id=bad", adm, 400, "bad_request")

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.contentType != "" {
				h.Set("Content-Type", c.contentType)
			}
			if c.token != "" {
				h.Set("Authorization", "Bearer "+c.token)
			}
			r := apitest.Send(t, c.method, c.url, h, c.body)
			if c.status != 0 {
				r.WantProblem(t, c.status, c.code, c.name)
				return
			}
			if r.Status < 400 || r.Status > 499 {
				t.Fatalf("status %d, want a 4xx; body %s", r.Status, r.Raw)
			}
			if ok, why := r.IsProblem(); !ok {
				t.Fatal(why)
			}
		})
	}
}
