package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/servicetest"
	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/server"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeAuth stands in for auth.Authenticator: the bearer token is a key of the map, and the user
// it names is put in the context as Require would.
type fakeAuth map[string]events.User

func (f fakeAuth) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		u, ok := f[tok]
		if !ok {
			web.WriteProblem(w, http.StatusUnauthorized, web.CodeUnauthenticated, "no token")
			return
		}
		h.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), u)))
	})
}

// Tokens of the fake authenticator.
const (
	adminTok = "admin"
	aliceTok = "alice"
	bobTok   = "bob"
	noTok    = ""
)

type env struct {
	t     *testing.T
	url   string
	users fakeAuth
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(context.Background(), pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	users := fakeAuth{
		adminTok: authtest.NewUser(events.RoleAdmin),
		aliceTok: authtest.NewUser(),
		bobTok:   authtest.NewUser(events.RoleModerator),
	}
	mux := server.New(log, postgres.New(pool, nil), users)
	srv := httptest.NewServer(web.Handler(mux, log, prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, users: users}
}

// response is an HTTP answer, read whole.
type response struct {
	servicetest.Response
}

// problem decodes a problem response, checking its media type.
func (r response) problem(t *testing.T) web.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != web.ProblemContentType {
		t.Errorf("Content-Type = %q, want %q (body %s)", ct, web.ProblemContentType, r.Body)
	}
	var p web.Problem
	r.Decode(t, &p)
	return p
}

// do sends a request; headers are name, value pairs.
func (e *env) do(method, path, token, body string, headers ...string) response {
	e.t.Helper()
	return response{servicetest.Do(e.t, method, e.url+path, token, body, headers...)}
}

type product struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

type orderItem struct {
	ProductID  string `json:"product_id"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

type order struct {
	ID         string      `json:"id"`
	UserID     string      `json:"user_id"`
	Items      []orderItem `json:"items"`
	TotalCents int64       `json:"total_cents"`
	Status     string      `json:"status"`
	CreatedAt  string      `json:"created_at"`
}

func (e *env) createProduct(body string) product {
	e.t.Helper()
	res := e.do("POST", "/v1/products", adminTok, body)
	if res.Status != http.StatusCreated {
		e.t.Fatalf("POST /v1/products %s = %d %s, want 201", body, res.Status, res.Body)
	}
	var p product
	res.Decode(e.t, &p)
	return p
}

func TestProducts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	res := e.do("GET", "/v1/products", noTok, "")
	if res.Status != http.StatusOK || strings.TrimSpace(string(res.Body)) != `{"items":[]}` {
		t.Errorf("GET /v1/products (empty) = %d %s, want 200 {\"items\":[]}", res.Status, res.Body)
	}

	res = e.do("POST", "/v1/products", adminTok, `{"name":"Widget","price_cents":1250,"stock":3}`)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/products = %d %s, want 201", res.Status, res.Body)
	}
	var p product
	res.Decode(t, &p)
	if got, want := res.Header.Get("Location"), "/v1/products/"+p.ID; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	if p.Name != "Widget" || p.PriceCents != 1250 || p.Stock != 3 || !strings.HasSuffix(p.CreatedAt, "Z") || p.CreatedAt != p.UpdatedAt {
		t.Errorf("created product = %+v", p)
	}

	res = e.do("GET", "/v1/products/"+p.ID, noTok, "")
	var got product
	res.Decode(t, &got)
	if res.Status != http.StatusOK || got != p {
		t.Errorf("GET product = %d %+v, want 200 %+v", res.Status, got, p)
	}

	res = e.do("PATCH", "/v1/products/"+p.ID, adminTok, `{"stock":10,"name":null}`)
	res.Decode(t, &got)
	if res.Status != http.StatusOK || got.Stock != 10 || got.Name != "Widget" {
		t.Errorf("PATCH stock = %d %+v, want 200 with stock 10, name kept", res.Status, got)
	}

	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"create by a user", "POST", "/v1/products", aliceTok, `{"name":"x","price_cents":1,"stock":1}`, 403, web.CodeForbidden},
		{"create by a moderator", "POST", "/v1/products", bobTok, `{"name":"x","price_cents":1,"stock":1}`, 403, web.CodeForbidden},
		{"create without token", "POST", "/v1/products", noTok, `{"name":"x","price_cents":1,"stock":1}`, 401, web.CodeUnauthenticated},
		{"patch by a user", "PATCH", "/v1/products/" + p.ID, aliceTok, `{"stock":0}`, 403, web.CodeForbidden},
		{"unknown product", "GET", "/v1/products/0193a8c5-0000-7000-8000-000000000000", noTok, "", 404, web.CodeNotFound},
		{"malformed id", "GET", "/v1/products/not-a-uuid", noTok, "", 404, web.CodeNotFound},
		{"patch unknown", "PATCH", "/v1/products/0193a8c5-0000-7000-8000-000000000000", adminTok, `{"stock":1}`, 404, web.CodeNotFound},
		{"patch malformed id", "PATCH", "/v1/products/nope", adminTok, `{"stock":1}`, 404, web.CodeNotFound},
		{"patch negative stock", "PATCH", "/v1/products/" + p.ID, adminTok, `{"stock":-1}`, 422, web.CodeValidationFailed},
		{"patch blank name", "PATCH", "/v1/products/" + p.ID, adminTok, `{"name":"  "}`, 422, web.CodeValidationFailed},
		{"patch unknown field", "PATCH", "/v1/products/" + p.ID, adminTok, `{"sku":"x"}`, 400, web.CodeBadRequest},
		{"price as string", "POST", "/v1/products", adminTok, `{"name":"x","price_cents":"1","stock":1}`, 400, web.CodeBadRequest},
		{"price overflows", "POST", "/v1/products", adminTok, `{"name":"x","price_cents":100000000000000000000,"stock":1}`, 400, web.CodeBadRequest},
		{"fractional stock", "POST", "/v1/products", adminTok, `{"name":"x","price_cents":1,"stock":1.5}`, 400, web.CodeBadRequest},
		{"limit 0", "GET", "/v1/products?limit=0", noTok, "", 400, web.CodeBadRequest},
		{"limit 101", "GET", "/v1/products?limit=101", noTok, "", 400, web.CodeBadRequest},
		{"limit not a number", "GET", "/v1/products?limit=ten", noTok, "", 400, web.CodeBadRequest},
		{"bad cursor", "GET", "/v1/products?cursor=!!!", noTok, "", 400, web.CodeBadRequest},
		{"forged cursor", "GET", "/v1/products?cursor=aGVsbG8", noTok, "", 400, web.CodeBadRequest},
		{"delete", "DELETE", "/v1/products/" + p.ID, adminTok, "", 405, web.CodeMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do(tt.method, tt.path, tt.token, tt.body)
			if res.Status != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, res.Status, res.Body, tt.status)
			}
			if p := res.problem(t); p.Code != tt.code || p.Status != tt.status {
				t.Errorf("problem = %+v, want code %s", p, tt.code)
			}
		})
	}
}

func TestCreateProductValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, body string
		fields     []string
	}{
		{"empty object", `{}`, []string{"name", "price_cents", "stock"}},
		{"zero price", `{"name":"x","price_cents":0,"stock":1}`, []string{"price_cents"}},
		{"negative price", `{"name":"x","price_cents":-5,"stock":1}`, []string{"price_cents"}},
		{"huge price", `{"name":"x","price_cents":10000000001,"stock":1}`, []string{"price_cents"}},
		{"negative stock", `{"name":"x","price_cents":1,"stock":-1}`, []string{"stock"}},
		{"huge stock", `{"name":"x","price_cents":1,"stock":1000000001}`, []string{"stock"}},
		{"empty name", `{"name":"","price_cents":1,"stock":1}`, []string{"name"}},
		{"long name", `{"name":"` + strings.Repeat("é", 201) + `","price_cents":1,"stock":1}`, []string{"name"}},
		{"NUL in name", `{"name":"a\u0000b","price_cents":1,"stock":1}`, []string{"name"}},
		{"null fields", `{"name":null,"price_cents":null,"stock":null}`, []string{"name", "price_cents", "stock"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("POST", "/v1/products", adminTok, tt.body)
			if res.Status != http.StatusUnprocessableEntity {
				t.Fatalf("POST %s = %d %s, want 422", tt.body, res.Status, res.Body)
			}
			var fields []string
			for _, fe := range res.problem(t).Errors {
				fields = append(fields, fe.Field)
			}
			slices.Sort(fields)
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("invalid fields (-want +got):\n%s", diff)
			}
		})
	}
	// 200 characters is allowed, whatever their encoding.
	e.createProduct(`{"name":"` + strings.Repeat("é", 200) + `","price_cents":10000000000,"stock":0}`)
}

func TestProductPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var want []string
	for range 5 {
		want = append(want, e.createProduct(`{"name":"p","price_cents":1,"stock":1}`).ID)
	}
	var got []string
	path := "/v1/products?limit=2"
	for range 5 {
		res := e.do("GET", path, noTok, "")
		if res.Status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, res.Status, res.Body)
		}
		var page struct {
			Items      []product `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		res.Decode(t, &page)
		for _, p := range page.Items {
			got = append(got, p.ID)
		}
		if page.NextCursor == "" {
			break
		}
		path = "/v1/products?limit=2&cursor=" + page.NextCursor
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("products over all pages (-want +got):\n%s", diff)
	}
}

func TestOrders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.createProduct(`{"name":"A","price_cents":250,"stock":5}`)
	b := e.createProduct(`{"name":"B","price_cents":1000,"stock":1}`)
	alice := e.users[aliceTok]

	body := `{"items":[{"product_id":"` + a.ID + `","quantity":2},{"product_id":"` + b.ID + `","quantity":1}]}`
	res := e.do("POST", "/v1/orders", aliceTok, body)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/orders = %d %s, want 201", res.Status, res.Body)
	}
	var o order
	res.Decode(t, &o)
	if got, want := res.Header.Get("Location"), "/v1/orders/"+o.ID; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	if res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("a first response carries Idempotent-Replayed")
	}
	want := order{
		ID:     o.ID,
		UserID: alice.ID.String(),
		Items: []orderItem{
			{ProductID: a.ID, Quantity: 2, PriceCents: 250},
			{ProductID: b.ID, Quantity: 1, PriceCents: 1000},
		},
		TotalCents: 1500,
		Status:     "placed",
		CreatedAt:  o.CreatedAt,
	}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if !strings.HasSuffix(o.CreatedAt, "Z") {
		t.Errorf("created_at = %q, want UTC", o.CreatedAt)
	}

	// Visible to its owner and admins only.
	for _, tt := range []struct {
		token  string
		status int
	}{{aliceTok, 200}, {adminTok, 200}, {bobTok, 404}} {
		res := e.do("GET", "/v1/orders/"+o.ID, tt.token, "")
		if res.Status != tt.status {
			t.Errorf("GET order as %s = %d %s, want %d", tt.token, res.Status, res.Body, tt.status)
		}
		if tt.status == 404 && res.problem(t).Code != web.CodeNotFound {
			t.Errorf("GET other's order: code %s, want not_found", res.problem(t).Code)
		}
	}

	// Out of stock: 409, nothing reserved.
	res = e.do("POST", "/v1/orders", bobTok, body)
	if res.Status != http.StatusConflict {
		t.Fatalf("POST order beyond stock = %d %s, want 409", res.Status, res.Body)
	}
	if p := res.problem(t); p.Code != web.CodeOutOfStock || !strings.Contains(p.Detail, b.ID) {
		t.Errorf("out of stock problem = %+v, want code out_of_stock naming %s", p, b.ID)
	}
	res = e.do("GET", "/v1/products/"+a.ID, noTok, "")
	var pa product
	res.Decode(t, &pa)
	if pa.Stock != 3 {
		t.Errorf("stock of A = %d after a refused order, want 3", pa.Stock)
	}

	// Bob orders too; lists.
	res = e.do("POST", "/v1/orders", bobTok, `{"items":[{"product_id":"`+a.ID+`","quantity":1}]}`)
	if res.Status != http.StatusCreated {
		t.Fatalf("bob's order = %d %s", res.Status, res.Body)
	}
	var bobs order
	res.Decode(t, &bobs)
	listIDs := func(token, query string) (int, []string) {
		t.Helper()
		res := e.do("GET", "/v1/orders"+query, token, "")
		if res.Status != http.StatusOK {
			return res.Status, nil
		}
		var l struct {
			Items []order `json:"items"`
		}
		res.Decode(t, &l)
		ids := []string{}
		for _, o := range l.Items {
			ids = append(ids, o.ID)
		}
		return res.Status, ids
	}
	for _, tt := range []struct {
		name, token, query string
		status             int
		ids                []string
	}{
		{"own", aliceTok, "", 200, []string{o.ID}},
		{"own by user_id", aliceTok, "?user_id=" + alice.ID.String(), 200, []string{o.ID}},
		{"other's as user", aliceTok, "?user_id=" + bobs.UserID, 403, nil},
		{"all as admin, newest first", adminTok, "", 200, []string{bobs.ID, o.ID}},
		{"one user's as admin", adminTok, "?user_id=" + bobs.UserID, 200, []string{bobs.ID}},
		{"admin's own none", adminTok, "?user_id=" + e.users[adminTok].ID.String(), 200, []string{}},
		{"malformed user_id", adminTok, "?user_id=x", 400, nil},
		{"no token", noTok, "", 401, nil},
	} {
		status, ids := listIDs(tt.token, tt.query)
		if status != tt.status || !slices.Equal(ids, tt.ids) {
			t.Errorf("%s: GET /v1/orders%s = %d %v, want %d %v", tt.name, tt.query, status, ids, tt.status, tt.ids)
		}
	}
}

func TestPlaceOrderValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.createProduct(`{"name":"P","price_cents":100,"stock":100}`)
	q := e.createProduct(`{"name":"Q","price_cents":100,"stock":100}`)
	it := func(id, qty string) string { return `{"product_id":"` + id + `","quantity":` + qty + `}` }
	items := func(its ...string) string { return `{"items":[` + strings.Join(its, ",") + `]}` }
	var many []string
	for range 51 {
		many = append(many, it(p.ID, "1"))
	}

	tests := []struct {
		name, body string
		fields     []string
	}{
		{"no items", `{"items":[]}`, []string{"items"}},
		{"items missing", `{}`, []string{"items"}},
		{"51 items", items(many...), []string{"items"}},
		{"quantity 0", items(it(p.ID, "0")), []string{"items[0].quantity"}},
		{"quantity -1", items(it(p.ID, "-1")), []string{"items[0].quantity"}},
		{"quantity too large", items(it(p.ID, "10001")), []string{"items[0].quantity"}},
		{"malformed product id", items(it(p.ID, "1"), it("nope", "1")), []string{"items[1].product_id"}},
		{"same product twice", items(it(p.ID, "1"), it(q.ID, "1"), it(p.ID, "2")), []string{"items[2].product_id"}},
		{"unknown product", items(it(p.ID, "1"), it("0193a8c5-0000-7000-8000-000000000000", "1")), []string{"items[1].product_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("POST", "/v1/orders", aliceTok, tt.body)
			if res.Status != http.StatusUnprocessableEntity {
				t.Fatalf("POST /v1/orders %s = %d %s, want 422", tt.body, res.Status, res.Body)
			}
			pr := res.problem(t)
			var fields []string
			for _, fe := range pr.Errors {
				fields = append(fields, fe.Field)
			}
			if pr.Code != web.CodeValidationFailed {
				t.Errorf("code = %s, want validation_failed", pr.Code)
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("invalid fields (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct{ name, body string }{
		{"quantity as string", items(`{"product_id":"` + p.ID + `","quantity":"1"}`)},
		{"quantity 2^63", items(it(p.ID, "9223372036854775808"))},
		{"quantity 1e20", items(it(p.ID, "1e20"))},
		{"unknown field", items(`{"product_id":"` + p.ID + `","quantity":1,"price_cents":1}`)},
		{"duplicate key", items(`{"product_id":"` + p.ID + `","quantity":1,"quantity":1000}`)},
		{"trailing data", items(it(p.ID, "1")) + `{}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			res := e.do("POST", "/v1/orders", aliceTok, tt.body)
			if res.Status != http.StatusBadRequest || res.problem(t).Code != web.CodeBadRequest {
				t.Errorf("POST /v1/orders %s = %d %s, want 400 bad_request", tt.body, res.Status, res.Body)
			}
		})
	}

	res := e.do("GET", "/v1/products/"+p.ID, noTok, "")
	var got product
	res.Decode(t, &got)
	if got.Stock != 100 {
		t.Errorf("stock = %d after refused orders, want 100", got.Stock)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.createProduct(`{"name":"P","price_cents":100,"stock":100}`)
	body := `{"items":[{"product_id":"` + p.ID + `","quantity":2}]}`

	first := e.do("POST", "/v1/orders", aliceTok, body, "Idempotency-Key", "order-1")
	if first.Status != http.StatusCreated {
		t.Fatalf("first POST = %d %s", first.Status, first.Body)
	}
	// The same request, spelled differently: an upper-case UUID and other spacing.
	same := "{ \"items\" : [ {\"quantity\":2, \"product_id\":\"" + strings.ToUpper(p.ID) + "\"} ] }"
	again := e.do("POST", "/v1/orders", aliceTok, same, "Idempotency-Key", "order-1")
	if again.Status != http.StatusCreated || string(again.Body) != string(first.Body) {
		t.Errorf("replay = %d %s, want 201 %s", again.Status, again.Body, first.Body)
	}
	if again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay lacks Idempotent-Replayed: true")
	}
	if again.Header.Get("Location") != first.Header.Get("Location") {
		t.Errorf("replay Location = %q, want %q", again.Header.Get("Location"), first.Header.Get("Location"))
	}

	other := e.do("POST", "/v1/orders", aliceTok, `{"items":[{"product_id":"`+p.ID+`","quantity":3}]}`, "Idempotency-Key", "order-1")
	if other.Status != http.StatusUnprocessableEntity || other.problem(t).Code != web.CodeIdempotencyKeyReused {
		t.Errorf("reused key = %d %s, want 422 idempotency_key_reused", other.Status, other.Body)
	}

	// Another user's key of the same name is theirs.
	bobs := e.do("POST", "/v1/orders", bobTok, body, "Idempotency-Key", "order-1")
	if bobs.Status != http.StatusCreated || bobs.Header.Get("Idempotent-Replayed") != "" || string(bobs.Body) == string(first.Body) {
		t.Errorf("bob's POST with alice's key = %d %s, want a new order", bobs.Status, bobs.Body)
	}

	for _, key := range []string{"", strings.Repeat("k", 256)} {
		res := e.do("POST", "/v1/orders", aliceTok, body, "Idempotency-Key", key)
		if res.Status != http.StatusBadRequest || res.problem(t).Code != web.CodeBadRequest {
			t.Errorf("Idempotency-Key of %d bytes = %d %s, want 400", len(key), res.Status, res.Body)
		}
	}
	if res := e.do("POST", "/v1/orders", aliceTok, body, "Idempotency-Key", strings.Repeat("k", 255)); res.Status != http.StatusCreated {
		t.Errorf("Idempotency-Key of 255 bytes = %d %s, want 201", res.Status, res.Body)
	}

	res := e.do("GET", "/v1/products/"+p.ID, noTok, "")
	var got product
	res.Decode(t, &got)
	if got.Stock != 94 {
		t.Errorf("stock = %d, want 94 (three orders of 2)", got.Stock)
	}
}

// TestIdempotencyKeyConcurrent sends one request with one key 50 times at once: one order, and
// every client gets its 201 with the same bytes, all but one marked as replays.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.createProduct(`{"name":"P","price_cents":100,"stock":100}`)
	body := `{"items":[{"product_id":"` + p.ID + `","quantity":1}]}`

	// Requests are sent here rather than with e.do, whose failures end the test goroutine.
	post := func() (status int, replayed string, b []byte, err error) {
		req, err := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/orders", strings.NewReader(body))
		if err != nil {
			return 0, "", nil, err
		}
		req.Header.Set("Authorization", "Bearer "+aliceTok)
		req.Header.Set("Idempotency-Key", "same")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", nil, err
		}
		defer res.Body.Close()
		b, err = io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Idempotent-Replayed"), b, err
	}
	const clients = 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		bodies  [][]byte
		replays int
		errs    []error
	)
	for range clients {
		wg.Go(func() {
			status, replayed, b, err := post()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case status != http.StatusCreated:
				errs = append(errs, fmt.Errorf("status %d %s, want 201", status, b))
			default:
				bodies = append(bodies, b)
				if replayed == "true" {
					replays++
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(errs), clients, errs[0])
	}
	for _, b := range bodies[1:] {
		if !bytes.Equal(b, bodies[0]) {
			t.Fatalf("bodies differ:\n%s\n%s", bodies[0], b)
		}
	}
	if replays != clients-1 {
		t.Errorf("%d replays, want %d", replays, clients-1)
	}
	res := e.do("GET", "/v1/orders", aliceTok, "")
	var l struct {
		Items []order `json:"items"`
	}
	res.Decode(t, &l)
	if len(l.Items) != 1 {
		t.Errorf("alice has %d orders, want 1", len(l.Items))
	}
}
