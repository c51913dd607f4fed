package apivalidate

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// TestServedDocuments: each running service serves, at GET /openapi.json, its document in the
// repository, byte for byte.
func TestServedDocuments(t *testing.T) {
	s := live(t)
	for _, name := range Services {
		served, err := Fetch(context.Background(), s.URL[name])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(served, readDocument(t, name)) {
			t.Errorf("%s serves another document than %s", name, documentPath(name))
		}
	}
}

// TestTraffic sends requests that reach every documented operation of the three services with
// each of its documented statuses (but 500 and 503, which no request can be sure to get), holding
// every request and answer to the documents (a disagreement fails the test, naming the operation
// and what is wrong), and fails if any operation or status was not reached.
func TestTraffic(t *testing.T) {
	s := live(t)
	v, err := ForServices(context.Background(), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer apitest.SetObserver(v.Observe)()
	acc, blog, shop := s.URL["account"], s.URL["blog"], s.URL["shop"]
	adm := apitest.Login(t, acc, s.AdminEmail, s.AdminPassword)
	admin := user{ID: me(t, acc, adm), Token: adm}
	alice, bob, dora := newUser(t, acc, "Alice"), newUser(t, acc, "Bob"), newUser(t, acc, "Dora")
	for _, u := range []user{alice, bob, dora} {
		caughtUp(t, blog, shop, u)
	}
	unknown := uuid.NewString()

	// Every endpoint with a JSON body, once well-formed, then malformed, too large and not JSON.
	post := call(t, "POST", blog+"/v1/posts", alice.Token, `{"title":"t","body":"b"}`, 201).Str("id")
	product := call(t, "POST", shop+"/v1/products", adm, `{"name":"lamp","price_cents":1500,"stock":5}`, 201).Str("id")
	bodies := []struct{ method, url, token, valid string }{
		{"POST", acc + "/v1/users", "", `{"email":"e2e-` + uuid.NewString() + `@example.com","password":"long enough","display_name":"Eve"}`},
		{"POST", acc + "/v1/tokens", "", `{"email":"` + alice.Email + `","password":"` + apitest.Password + `"}`},
		{"PUT", acc + "/v1/users/" + bob.ID + "/roles", adm, `{"roles":["user"]}`},
		{"PUT", acc + "/v1/users/" + bob.ID + "/status", adm, `{"status":"active"}`},
		{"PATCH", blog + "/v1/posts/" + post, alice.Token, `{"title":"t2"}`},
		{"PATCH", shop + "/v1/products/" + product, adm, `{"stock":20}`},
	}
	huge := `{"title":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, b := range bodies {
		want := map[string]int{"POST": 201, "PUT": 200, "PATCH": 200}[b.method]
		if strings.HasSuffix(b.url, "/v1/tokens") {
			want = 200
		}
		call(t, b.method, b.url, b.token, b.valid, want)
		call(t, b.method, b.url, b.token, `{"title":`, 400)
		call(t, b.method, b.url, b.token, huge, 413)
		send(t, b.method, b.url, b.token, "text/plain", b.valid, 415)
	}
	for url, token := range map[string]string{blog + "/v1/posts": alice.Token, shop + "/v1/products": adm, shop + "/v1/orders": alice.Token} {
		call(t, "POST", url, token, `{"title":`, 400)
		call(t, "POST", url, token, huge, 413)
		send(t, "POST", url, token, "text/plain", `{}`, 415)
	}

	// account
	call(t, "POST", acc+"/v1/users", "", `{"email":"`+alice.Email+`","password":"long enough","display_name":"A"}`, 409)
	call(t, "POST", acc+"/v1/users", "", `{"email":"not an email","password":"short","display_name":" "}`, 422)
	call(t, "POST", acc+"/v1/tokens", "", `{"email":"`+alice.Email+`","password":"wrong password"}`, 401)
	thea := newUser(t, acc, "Thea")
	for range 10 {
		call(t, "POST", acc+"/v1/tokens", "", `{"email":"`+thea.Email+`","password":"wrong password"}`, 401)
	}
	call(t, "POST", acc+"/v1/tokens", "", `{"email":"`+thea.Email+`","password":"`+apitest.Password+`"}`, 429)
	call(t, "GET", acc+"/v1/users/me", alice.Token, "", 200)
	call(t, "GET", acc+"/v1/users/me", "", "", 401)
	call(t, "GET", acc+"/v1/users/"+alice.ID, alice.Token, "", 200)
	call(t, "GET", acc+"/v1/users/"+alice.ID, adm, "", 200)
	call(t, "GET", acc+"/v1/users/"+alice.ID, bob.Token, "", 404)
	call(t, "GET", acc+"/v1/users/"+unknown, adm, "", 404)
	call(t, "GET", acc+"/v1/users/not-a-uuid", adm, "", 404)
	call(t, "GET", acc+"/v1/users/"+alice.ID, "not a token", "", 401)
	first := call(t, "GET", acc+"/v1/users?limit=2", adm, "", 200)
	call(t, "GET", acc+"/v1/users?limit=2&cursor="+first.Str("next_cursor"), adm, "", 200)
	call(t, "GET", acc+"/v1/users?limit=0", adm, "", 400)
	call(t, "GET", acc+"/v1/users", alice.Token, "", 403)
	call(t, "GET", acc+"/v1/users", "", "", 401)
	for _, path := range []string{"/roles", "/status"} {
		valid := map[string]string{"/roles": `{"roles":["user"]}`, "/status": `{"status":"active"}`}[path]
		invalid := map[string]string{"/roles": `{"roles":["root"]}`, "/status": `{"status":"gone"}`}[path]
		last := map[string]string{"/roles": `{"roles":["user"]}`, "/status": `{"status":"disabled"}`}[path]
		call(t, "PUT", acc+"/v1/users/"+bob.ID+path, adm, valid, 200)
		call(t, "PUT", acc+"/v1/users/"+bob.ID+path, adm, invalid, 422)
		call(t, "PUT", acc+"/v1/users/"+unknown+path, adm, valid, 404)
		call(t, "PUT", acc+"/v1/users/"+bob.ID+path, alice.Token, valid, 403)
		call(t, "PUT", acc+"/v1/users/"+bob.ID+path, "", valid, 401)
		call(t, "PUT", acc+"/v1/users/"+admin.ID+path, adm, last, 409) // the only active admin
	}
	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration"} {
		call(t, "GET", acc+path, "", "", 200)
	}

	// blog
	mine := call(t, "POST", blog+"/v1/posts", bob.Token, `{"title":"bob's","body":"b"}`, 201).Str("id")
	call(t, "POST", blog+"/v1/posts", bob.Token, `{"title":"","body":"b"}`, 422)
	call(t, "POST", blog+"/v1/posts", "", `{"title":"t","body":"b"}`, 401)
	call(t, "GET", blog+"/v1/posts?limit=1", "", "", 200)
	call(t, "GET", blog+"/v1/posts?author_id="+alice.ID, "", "", 200)
	call(t, "GET", blog+"/v1/posts?limit=101", "", "", 400)
	call(t, "GET", blog+"/v1/posts/"+post, "", "", 200)
	call(t, "GET", blog+"/v1/posts/"+unknown, "", "", 404)
	call(t, "PATCH", blog+"/v1/posts/"+post, alice.Token, `{"body":""}`, 422)
	call(t, "PATCH", blog+"/v1/posts/"+post, bob.Token, `{"title":"mine now"}`, 403)
	call(t, "PATCH", blog+"/v1/posts/"+unknown, alice.Token, `{"title":"t"}`, 404)
	call(t, "PATCH", blog+"/v1/posts/"+post, "", `{"title":"t"}`, 401)
	call(t, "DELETE", blog+"/v1/posts/"+post, bob.Token, "", 403)
	call(t, "DELETE", blog+"/v1/posts/"+post, "", "", 401)
	call(t, "DELETE", blog+"/v1/posts/"+mine, bob.Token, "", 204)
	call(t, "DELETE", blog+"/v1/posts/"+mine, bob.Token, "", 404)

	// shop
	call(t, "POST", shop+"/v1/products", adm, `{"name":"free","price_cents":0,"stock":1}`, 422)
	call(t, "POST", shop+"/v1/products", alice.Token, `{"name":"n","price_cents":1,"stock":1}`, 403)
	call(t, "POST", shop+"/v1/products", "", `{"name":"n","price_cents":1,"stock":1}`, 401)
	call(t, "GET", shop+"/v1/products?limit=1", "", "", 200)
	call(t, "GET", shop+"/v1/products?cursor=garbage!", "", "", 400)
	call(t, "GET", shop+"/v1/products/"+product, "", "", 200)
	call(t, "GET", shop+"/v1/products/"+unknown, "", "", 404)
	call(t, "PATCH", shop+"/v1/products/"+product, adm, `{"stock":-1}`, 422)
	call(t, "PATCH", shop+"/v1/products/"+unknown, adm, `{"stock":1}`, 404)
	call(t, "PATCH", shop+"/v1/products/"+product, alice.Token, `{"stock":1}`, 403)
	call(t, "PATCH", shop+"/v1/products/"+product, "", `{"stock":1}`, 401)
	order := `{"items":[{"product_id":"` + product + `","quantity":2}]}`
	key := http.Header{"Idempotency-Key": {uuid.NewString()}}
	placed := sendHeader(t, "POST", shop+"/v1/orders", alice.Token, key, order, 201).Str("id")
	if r := sendHeader(t, "POST", shop+"/v1/orders", alice.Token, key, order, 201); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("a replay lacks Idempotent-Replayed: true: %v", r.Header)
	}
	sendHeader(t, "POST", shop+"/v1/orders", alice.Token, key, `{"items":[{"product_id":"`+product+`","quantity":1}]}`, 422)
	sendHeader(t, "POST", shop+"/v1/orders", alice.Token, http.Header{"Idempotency-Key": {strings.Repeat("k", 300)}}, order, 400)
	call(t, "POST", shop+"/v1/orders", alice.Token, `{"items":[{"product_id":"`+product+`","quantity":1000}]}`, 409)
	call(t, "POST", shop+"/v1/orders", alice.Token, `{"items":[{"product_id":"`+product+`","quantity":0}]}`, 422)
	call(t, "POST", shop+"/v1/orders", alice.Token, `{"items":[{"product_id":"`+unknown+`","quantity":1}]}`, 422)
	call(t, "POST", shop+"/v1/orders", "", order, 401)
	call(t, "GET", shop+"/v1/orders", alice.Token, "", 200)
	call(t, "GET", shop+"/v1/orders?user_id="+alice.ID, adm, "", 200)
	call(t, "GET", shop+"/v1/orders?user_id="+alice.ID, bob.Token, "", 403)
	call(t, "GET", shop+"/v1/orders?user_id=bad", adm, "", 400)
	call(t, "GET", shop+"/v1/orders", "", "", 401)
	call(t, "GET", shop+"/v1/orders/"+placed, alice.Token, "", 200)
	call(t, "GET", shop+"/v1/orders/"+placed, adm, "", 200)
	call(t, "GET", shop+"/v1/orders/"+placed, bob.Token, "", 404)
	call(t, "GET", shop+"/v1/orders/"+placed, "", "", 401)

	// A disabled user's token, refused by account at once and by blog and shop once the event
	// has reached them.
	call(t, "PUT", acc+"/v1/users/"+dora.ID+"/status", adm, `{"status":"disabled"}`, 200)
	call(t, "GET", acc+"/v1/users/me", dora.Token, "", 403)
	call(t, "GET", acc+"/v1/users/"+dora.ID, dora.Token, "", 403)
	apitest.Eventually(t, 403, "blog refuses dora", func() apitest.Response {
		return apitest.Call(t, "POST", blog+"/v1/posts", dora.Token, map[string]any{"title": "t", "body": "b"})
	})
	apitest.Eventually(t, 403, "shop refuses dora", func() apitest.Response {
		return apitest.Call(t, "GET", shop+"/v1/orders/"+placed, dora.Token, nil)
	})
	call(t, "POST", shop+"/v1/orders", dora.Token, order, 403)
	call(t, "PATCH", blog+"/v1/posts/"+post, dora.Token, `{"title":"t"}`, 403)

	// Operations every service has, and requests that no operation documents.
	for _, base := range []string{acc, blog, shop} {
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
			call(t, "GET", base+path, "", "", 200)
		}
		call(t, "GET", base+"/v1/nothing", "", "", 404)
	}
	call(t, "PUT", shop+"/v1/products", adm, `{}`, 405)
	call(t, "DELETE", acc+"/v1/users/"+alice.ID, adm, "", 405)

	skip := func(op string, status int) bool { return status == 500 || status == 503 }
	ops, statuses := v.Unexercised(skip)
	for _, op := range ops {
		t.Errorf("not exercised: %s", op)
	}
	for _, s := range statuses {
		t.Errorf("documented status not exercised: %s", s)
	}
	t.Log(v.Report())
}

// user is a registered user with a token.
type user struct{ ID, Email, Token string }

// newUser registers a user with a unique email and logs in.
func newUser(t *testing.T, accountURL, name string) user {
	t.Helper()
	u := user{Email: "e2e-" + uuid.NewString() + "@example.com"}
	u.ID, u.Token = apitest.Register(t, accountURL, u.Email, name)
	return u
}

// me returns the id of the token's user.
func me(t *testing.T, accountURL, token string) string {
	t.Helper()
	return apitest.Call(t, "GET", accountURL+"/v1/users/me", token, nil).Want(t, 200, "me").Str("id")
}

// caughtUp returns once blog and shop hold u.
func caughtUp(t *testing.T, blogURL, shopURL string, u user) {
	t.Helper()
	apitest.Eventually(t, 404, "blog holds the user", func() apitest.Response {
		return apitest.Call(t, "PATCH", blogURL+"/v1/posts/"+uuid.NewString(), u.Token, map[string]any{"title": "x"})
	})
	apitest.Eventually(t, 200, "shop holds the user", func() apitest.Response {
		return apitest.Call(t, "GET", shopURL+"/v1/orders", u.Token, nil)
	})
}

// call sends body ("" for none) as JSON with the token (if any) and fails the test unless the
// answer has status want.
func call(t *testing.T, method, url, token, body string, want int) apitest.Response {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return send(t, method, url, token, ct, body, want)
}

// send is call with the given Content-Type ("" for none).
func send(t *testing.T, method, url, token, contentType, body string, want int) apitest.Response {
	t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return sendHeader(t, method, url, token, h, body, want)
}

// sendHeader is call with more headers.
func sendHeader(t *testing.T, method, url, token string, h http.Header, body string, want int) apitest.Response {
	t.Helper()
	h = h.Clone()
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if body != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := apitest.Send(t, method, url, h, b)
	if r.Status != want {
		name := url
		if i := strings.Index(url, "/v1/"); i >= 0 {
			name = url[i:]
		}
		if len(name) > 120 {
			name = name[:120] + "..."
		}
		t.Errorf("%s %s: status %d, want %d; body %.300s", method, name, r.Status, want, r.Raw)
	}
	return r
}
