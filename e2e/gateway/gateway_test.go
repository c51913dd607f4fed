package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/google/uuid"
)

// TestGateway runs the gateway in front of one system. Each subtest is a client of its own
// (a loopback address of its own), so that nginx's limits and account's throttle of one do not
// reach another.
func TestGateway(t *testing.T) {
	s := newStack(t)
	g := startGateway(t, s)
	register, login := g.Limits["/account/v1/users"], g.Limits["/account/v1/tokens"]
	if register.PerSecond == 0 || login.PerSecond == 0 {
		t.Fatalf("%s: no rate limits on registration and login: %v", confFile, g.Limits)
	}

	t.Run("routes", func(t *testing.T) {
		c := newClient(t, g, "127.0.0.2")
		c.send(t, "GET", "/healthz", nil, nil).Want(t, http.StatusOK, "the gateway's own /healthz")

		// Each prefix reaches its service, without the prefix.
		disc := c.call(t, "GET", "/account/.well-known/openid-configuration", "", nil).Want(t, http.StatusOK, "account's discovery document")
		if disc.Str("issuer") != "account" {
			t.Fatalf("discovery document through the gateway: %s", disc.Raw)
		}
		email := "gw-" + uuid.NewString() + "@example.com"
		user := c.call(t, "POST", "/account/v1/users", "", map[string]any{
			"email": email, "password": apitest.Password, "display_name": "Gateway",
		}).Want(t, http.StatusCreated, "register through the gateway")
		token := c.call(t, "POST", "/account/v1/tokens", "", map[string]any{
			"email": email, "password": apitest.Password,
		}).Want(t, http.StatusOK, "log in through the gateway").Str("access_token")
		if me := c.call(t, "GET", "/account/v1/users/me", token, nil).Want(t, http.StatusOK, "me"); me.Str("id") != user.Str("id") {
			t.Fatalf("me = %s, want user %s", me.Raw, user.Str("id"))
		}

		title := "through the gateway " + uuid.NewString()
		post := apitest.Eventually(t, http.StatusCreated, "post on blog through the gateway", func() apitest.Response {
			return c.call(t, "POST", "/blog/v1/posts", token, map[string]any{"title": title, "body": "hello"})
		})
		c.call(t, "GET", "/blog/v1/posts/"+post.Str("id"), "", nil).Want(t, http.StatusOK, "read the post")
		// The query string passes too.
		list := c.call(t, "GET", "/blog/v1/posts?author_id="+user.Str("id")+"&limit=5", "", nil).Want(t, http.StatusOK, "list the author's posts")
		if items := list.Items(); len(items) != 1 || items[0]["title"] != title {
			t.Fatalf("the author's posts: %s, want the one post %q", list.Raw, title)
		}

		admin := c.call(t, "POST", "/account/v1/tokens", "", map[string]any{
			"email": s.AdminEmail, "password": s.AdminPassword,
		}).Want(t, http.StatusOK, "log in as the admin").Str("access_token")
		product := apitest.Eventually(t, http.StatusCreated, "add a product through the gateway", func() apitest.Response {
			return c.call(t, "POST", "/shop/v1/products", admin, map[string]any{"name": "gateway tea", "price_cents": 250, "stock": 3})
		})
		c.call(t, "GET", "/shop/v1/products/"+product.Str("id"), "", nil).Want(t, http.StatusOK, "read the product")
		if items := c.call(t, "GET", "/shop/v1/products?limit=100", "", nil).Want(t, http.StatusOK, "list products").Items(); len(items) == 0 {
			t.Fatal("the product list is empty")
		}

		// The client's request id reaches the service, which answers with it; without one, the
		// service takes the gateway's (32 hex digits; its own would be a UUID).
		id := "gateway-test-" + uuid.NewString()
		if got := c.send(t, "GET", "/blog/v1/posts?limit=1", http.Header{"X-Request-Id": {id}}, nil).Header.Get("X-Request-Id"); got != id {
			t.Errorf("X-Request-Id %q sent, %q answered", id, got)
		}
		if got := c.send(t, "GET", "/shop/v1/products?limit=1", nil, nil).Header.Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got) {
			t.Errorf("X-Request-Id %q answered to a request without one, want the gateway's $request_id", got)
		}

		// Anything else is the gateway's 404, a problem like the services'.
		for _, path := range []string{"/", "/nowhere", "/v1/users", "/accounts/v1/users", "/ACCOUNT/v1/users"} {
			r := c.send(t, "GET", path, nil, nil).WantProblem(t, http.StatusNotFound, "not_found", "GET "+path)
			if !fromGateway(r) {
				t.Errorf("GET %s: %s, want the gateway's 404", path, r.Raw)
			}
		}
	})

	t.Run("body limit", func(t *testing.T) {
		c := newClient(t, g, "127.0.0.3")
		const mib = 1 << 20
		// A body of exactly 1 MiB reaches account (which finds no email in it); one byte more is
		// refused by the gateway, with a length given or chunked.
		h := http.Header{"Content-Type": {"application/json"}}
		r := c.send(t, "POST", "/account/v1/users", h, bytes.NewReader(jsonOfSize(mib)))
		if r.Status != http.StatusUnprocessableEntity || fromGateway(r) {
			t.Fatalf("a body of 1 MiB: %d %s, want account's 422", r.Status, r.Raw)
		}
		for _, tc := range []struct {
			name string
			body io.Reader
		}{
			{"1 MiB + 1", bytes.NewReader(jsonOfSize(mib + 1))},
			{"2 MiB", bytes.NewReader(jsonOfSize(2 * mib))},
			{"2 MiB chunked", io.MultiReader(bytes.NewReader(jsonOfSize(2 * mib)))},
		} {
			r := c.send(t, "POST", "/account/v1/users", h, tc.body).WantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", tc.name)
			if !fromGateway(r) {
				t.Errorf("%s: %s, want the gateway's 413", tc.name, r.Raw)
			}
		}
		r = c.send(t, "POST", "/blog/v1/posts", h, bytes.NewReader(jsonOfSize(2*mib))).WantProblem(t, http.StatusRequestEntityTooLarge, "payload_too_large", "2 MiB to blog")
		if !fromGateway(r) {
			t.Errorf("2 MiB to blog: %s, want the gateway's 413", r.Raw)
		}
	})

	t.Run("registration burst", func(t *testing.T) {
		c := newClient(t, g, "127.0.0.4")
		// Registrations that account refuses at once (the password is too short): nginx counts
		// every POST, and no hashing slows the burst down.
		n := register.Burst + 1 + 10
		answers, elapsed := c.burst(t, n, func(i int) (string, string, http.Header, []byte) {
			b, _ := json.Marshal(map[string]any{"email": fmt.Sprintf("burst-%d-%s@example.com", i, uuid.NewString()), "password": "short", "display_name": "B"})
			return "POST", "/account/v1/users", http.Header{"Content-Type": {"application/json"}}, b
		})
		passed := countLimited(t, answers, http.StatusUnprocessableEntity, "registration burst")
		checkBurst(t, "registration", register, n, passed, elapsed)

		// The limit is per client: another address registers at once.
		other := newClient(t, g, "127.0.0.5")
		other.call(t, "POST", "/account/v1/users", "", map[string]any{
			"email": "gw-" + uuid.NewString() + "@example.com", "password": apitest.Password, "display_name": "Other",
		}).Want(t, http.StatusCreated, "register from another address during the burst")
		// And on POST only: the admins' list is not limited (nor open: account answers 401).
		c.call(t, "GET", "/account/v1/users", "", nil).WantProblem(t, http.StatusUnauthorized, "unauthenticated", "list users from the limited address")
	})

	t.Run("login burst", func(t *testing.T) {
		c := newClient(t, g, "127.0.0.6")
		// Failed logins that account answers without hashing (a password longer than any account
		// can have), for emails of no account: 401 each, and far below account's own limits. As
		// many more as the rate frees in 3 s, so that a slow machine still sends some too many.
		// Spelled in every way that names the route (nginx matches locations on the decoded,
		// normalised path), all count against the one limit, and reach the route.
		spellings := []string{"/account/v1/tokens", "/account//v1/tokens", "/account/v1/./tokens", "/account/v1/%74okens", "/account/v1%2Ftokens", "/account/x/../v1/tokens"}
		n := login.Burst + 1 + max(10, 3*login.PerSecond)
		answers, elapsed := c.burst(t, n, func(i int) (string, string, http.Header, []byte) {
			method, _, h, body := loginRequest(fmt.Sprintf("nobody-%d-%s@example.com", i, uuid.NewString()))
			return method, spellings[i%len(spellings)], h, body
		})
		passed := countLimited(t, answers, http.StatusUnauthorized, "login burst")
		checkBurst(t, "login", login, n, passed, elapsed)
	})

	t.Run("client address", func(t *testing.T) {
		// A client at the proxy's own address, which account trusts, as a client inside
		// TRUSTED_PROXIES would be (a whole subnet trusted): every failed login carries a
		// different forged X-Forwarded-For. nginx overwrites the header with the client's
		// address, so account counts them all for that one address, and refuses the 101st login
		// (docs/contract.md: 100 failures per address per minute). Were the header passed on or
		// appended to, each forged address would count alone and nothing would be refused.
		c := newClient(t, g, proxyAddr)
		const limit = 100
		deadline := time.Now().Add(40 * time.Second) // well inside account's one-minute window
		failures := 0
		var last apitest.Response
		for i := range limit + 1 {
			method, path, h, body := loginRequest(fmt.Sprintf("forger-%d-%s@example.com", i, uuid.NewString()))
			h.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d, 198.51.100.%d", i%250+1, i%250+1))
			if last = c.paced(t, method, path, h, body, login, deadline); last.Status != http.StatusUnauthorized {
				break
			}
			failures++
		}
		if failures != limit {
			t.Fatalf("account answered %d logins with forged X-Forwarded-For as failures before refusing, want %d (then 429): it did not count them all for the client's one address; last answer %d %s",
				failures, limit, last.Status, last.Raw)
		}
		last.WantProblem(t, http.StatusTooManyRequests, "rate_limited", "the login after 100 failures")
		if fromGateway(last) || last.Header.Get("Retry-After") == "" {
			t.Fatalf("the login after 100 failures: %s (Retry-After %q), want account's 429 with Retry-After", last.Raw, last.Header.Get("Retry-After"))
		}
		if !throttledLogged(s.Log("account"), proxyAddr) {
			t.Errorf("account's log has no \"logins throttled\" for address %s:\n%s", proxyAddr, stack.Tail(s.Log("account"), 20))
		}

		// Another client, claiming to be the throttled one, is itself: its login is checked.
		other := newClient(t, g, "127.0.0.7")
		method, path, h, body := loginRequest("other-" + uuid.NewString() + "@example.com")
		h.Set("X-Forwarded-For", proxyAddr)
		other.send(t, method, path, h, bytes.NewReader(body)).WantProblem(t, http.StatusUnauthorized, "invalid_credentials",
			"a failed login from another address (account keying every client on the gateway's address would answer 429)")
	})

	t.Run("service down", func(t *testing.T) {
		c := newClient(t, g, "127.0.0.8")
		if err := s.Stop("shop"); err != nil {
			t.Fatal(err)
		}
		r := c.send(t, "GET", "/shop/v1/products", nil, nil).WantProblem(t, http.StatusServiceUnavailable, "unavailable", "shop stopped")
		if !fromGateway(r) || r.Header.Get("Retry-After") == "" {
			t.Errorf("shop stopped: %s (Retry-After %q), want the gateway's 503 with Retry-After", r.Raw, r.Header.Get("Retry-After"))
		}
		c.send(t, "GET", "/account/healthz", nil, nil).Want(t, http.StatusOK, "account while shop is down")
	})
}

// loginRequest is a failed login for email: a password longer than any account can have, which
// account refuses without hashing, as a failure.
func loginRequest(email string) (method, path string, header http.Header, body []byte) {
	b, _ := json.Marshal(map[string]any{"email": email, "password": strings.Repeat("x", 200)})
	return "POST", "/account/v1/tokens", http.Header{"Content-Type": {"application/json"}}, b
}

// paced sends a request until the gateway lets it through (its 429 answered, it waits for the
// limit to free a request, 1/rate), and returns the service's answer; it fails the test at
// deadline.
func (c *client) paced(t *testing.T, method, path string, header http.Header, body []byte, limit rate, deadline time.Time) apitest.Response {
	t.Helper()
	for {
		r := c.send(t, method, path, header, bytes.NewReader(body))
		if r.Status != http.StatusTooManyRequests || !fromGateway(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: the gateway still answers 429 at the deadline", method, path)
		}
		time.Sleep(time.Second / time.Duration(limit.PerSecond))
	}
}

// countLimited checks every answer of a burst: the service's status passed, or the gateway's 429
// problem with Retry-After. It returns how many passed.
func countLimited(t *testing.T, answers []apitest.Response, passed int, what string) int {
	t.Helper()
	n := 0
	for i, r := range answers {
		switch {
		case r.Status == passed && !fromGateway(r):
			n++
		case r.Status == http.StatusTooManyRequests && fromGateway(r):
			if ok, msg := r.IsProblem(); !ok || r.Str("code") != "rate_limited" || r.Header.Get("Retry-After") == "" {
				t.Errorf("%s, answer %d: the gateway's 429 is no rate_limited problem with Retry-After (%s): %s", what, i, msg, r.Raw)
			}
		default:
			t.Errorf("%s, answer %d: %d %s, want %d or the gateway's 429", what, i, r.Status, r.Raw, passed)
		}
	}
	return n
}

// checkBurst checks that of n requests sent at once, within elapsed, the gateway let through what
// limit allows: the burst and the first at once, and at most what the rate has freed since.
func checkBurst(t *testing.T, what string, limit rate, n, passed int, elapsed time.Duration) {
	t.Helper()
	least := limit.Burst + 1
	most := least + int(elapsed.Seconds()*float64(limit.PerSecond)) + 1
	t.Logf("%s: %d of %d at once passed, %d got 429 (limit %d/s, burst %d; %s)", what, passed, n, n-passed, limit.PerSecond, limit.Burst, elapsed.Round(time.Millisecond))
	if passed < least || passed > most || passed == n {
		t.Errorf("%s: %d of %d requests sent at once passed the gateway in %s, want %d..%d and some 429",
			what, passed, n, elapsed.Round(time.Millisecond), least, min(most, n-1))
	}
}

// throttledLogged reports whether account's log (JSON lines) says the per-address limit was
// reached for addr.
func throttledLogged(log, addr string) bool {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg   string `json:"msg"`
			Scope string `json:"scope"`
			Key   string `json:"key"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "logins throttled" && line.Scope == "address" && line.Key == addr {
			return true
		}
	}
	return false
}

// jsonOfSize is a registration request of exactly n bytes (n ≥ 64) without an email, which
// account refuses with 422 when it reads it whole.
func jsonOfSize(n int) []byte {
	const head, end = `{"display_name":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(end)) + end)
}
