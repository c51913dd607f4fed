package e2e

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// register creates a user and logs in, returning the user's id and an access token.
func register(t *testing.T, s *stack, email, name string) (id, token string) {
	t.Helper()
	u := call(t, "POST", s.URL["account"]+"/v1/users", "", map[string]any{
		"email": email, "password": "correct horse battery", "display_name": name,
	}).want(t, http.StatusCreated, "register "+email)
	return u.str("id"), login(t, s, email, "correct horse battery")
}

func login(t *testing.T, s *stack, email, password string) string {
	t.Helper()
	tok := call(t, "POST", s.URL["account"]+"/v1/tokens", "", map[string]any{
		"email": email, "password": password,
	}).want(t, http.StatusOK, "login "+email)
	if tok.str("token_type") != "Bearer" || tok.str("access_token") == "" {
		t.Fatalf("login %s: body %s", email, tok.Raw)
	}
	return tok.str("access_token")
}

// caughtUp returns once blog and shop hold the user's current version. A token issued now carries
// that version, and a service holds a request whose token is newer than its replica until the
// replica catches up; so one authorized request with a fresh token on each service waits for the
// event, with no sleeping or polling here.
func caughtUp(t *testing.T, s *stack, email string) {
	t.Helper()
	fresh := login(t, s, email, "correct horse battery")
	call(t, "PATCH", s.URL["blog"]+"/v1/posts/"+uuid.NewString(), fresh, map[string]any{"title": "x"}).
		want(t, http.StatusNotFound, "blog catches up with "+email)
	call(t, "GET", s.URL["shop"]+"/v1/orders", fresh, nil).want(t, http.StatusOK, "shop catches up with "+email)
}

// TestStory walks the whole system as its users and operators would: register, log in, post,
// order; a role granted and revoked takes effect for a token issued before the change; a
// disabled user is refused everywhere; blog and shop go on authorizing with account stopped; and
// registrations made while NATS is down reach both replicas once it is back.
func TestStory(t *testing.T) {
	s := newStack(t)
	account, blog, shop := s.URL["account"], s.URL["blog"], s.URL["shop"]

	admin := login(t, s, adminEmail, adminPassword)
	aliceID, alice := register(t, s, "alice@example.com", "Alice")
	_, bob := register(t, s, "bob@example.com", "Bob")

	// A fresh user is authorized at once: the service waits for the replica to catch up.
	post := call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "Hello", "body": "First post."}).
		want(t, http.StatusCreated, "alice posts")
	if post.str("author_id") != aliceID || post.str("author_name") != "Alice" {
		t.Fatalf("post = %s, want author %s named Alice", post.Raw, aliceID)
	}
	second := call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "Again", "body": "Second post."}).
		want(t, http.StatusCreated, "alice posts again")

	product := call(t, "POST", shop+"/v1/products", admin, map[string]any{"name": "Mug", "price_cents": 1200, "stock": 5}).
		want(t, http.StatusCreated, "admin creates a product")
	order := call(t, "POST", shop+"/v1/orders", alice, map[string]any{
		"items": []map[string]any{{"product_id": product.str("id"), "quantity": 2}},
	}).want(t, http.StatusCreated, "alice orders")
	if order.Body["total_cents"] != 2400.0 {
		t.Fatalf("order total = %v, want 2400", order.Body["total_cents"])
	}

	// Bob may not delete Alice's post, until he is made a moderator; his old token then suffices.
	call(t, "DELETE", blog+"/v1/posts/"+post.str("id"), bob, nil).want(t, http.StatusForbidden, "bob deletes as a user")
	bobID := call(t, "GET", account+"/v1/users/me", bob, nil).want(t, http.StatusOK, "bob's profile").str("id")
	call(t, "PUT", account+"/v1/users/"+bobID+"/roles", admin, map[string]any{"roles": []string{"user", "moderator"}}).
		want(t, http.StatusOK, "admin grants moderator")
	caughtUp(t, s, "bob@example.com")
	call(t, "DELETE", blog+"/v1/posts/"+post.str("id"), bob, nil).
		want(t, http.StatusNoContent, "bob deletes as a moderator with his old token")

	// Revoked: the same token no longer may.
	call(t, "PUT", account+"/v1/users/"+bobID+"/roles", admin, map[string]any{"roles": []string{"user"}}).
		want(t, http.StatusOK, "admin revokes moderator")
	caughtUp(t, s, "bob@example.com")
	call(t, "DELETE", blog+"/v1/posts/"+second.str("id"), bob, nil).
		want(t, http.StatusForbidden, "bob deletes with his old token after the revocation")

	// Disabled: refused by account at once, by blog and shop once the event arrives.
	call(t, "PUT", account+"/v1/users/"+aliceID+"/status", admin, map[string]any{"status": "disabled"}).
		want(t, http.StatusOK, "admin disables alice")
	if r := call(t, "GET", account+"/v1/users/me", alice, nil); r.Status != http.StatusForbidden || r.str("code") != "user_disabled" {
		t.Fatalf("account /me for a disabled user: %d %s, want 403 user_disabled", r.Status, r.Raw)
	}
	r := eventually(t, http.StatusForbidden, "disabled alice posts", func() response {
		return call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "x", "body": "y"})
	})
	if r.str("code") != "user_disabled" {
		t.Fatalf("blog: code %q, want user_disabled", r.str("code"))
	}
	r = eventually(t, http.StatusForbidden, "disabled alice orders", func() response {
		return call(t, "POST", shop+"/v1/orders", alice, map[string]any{
			"items": []map[string]any{{"product_id": product.str("id"), "quantity": 1}},
		})
	})
	if r.str("code") != "user_disabled" {
		t.Fatalf("shop: code %q, want user_disabled", r.str("code"))
	}

	// Account down: blog and shop authorize from their replicas and the keys they hold.
	s.Stop("account")
	call(t, "POST", blog+"/v1/posts", bob, map[string]any{"title": "Still here", "body": "account is down"}).
		want(t, http.StatusCreated, "bob posts with account stopped")
	call(t, "POST", shop+"/v1/orders", bob, map[string]any{
		"items": []map[string]any{{"product_id": product.str("id"), "quantity": 1}},
	}).want(t, http.StatusCreated, "bob orders with account stopped")
	s.Start("account")

	// NATS down: account still registers (the outbox keeps the events) and logs in.
	s.NATS.Stop()
	_, carol := register(t, s, "carol@example.com", "Carol")
	s.NATS.Start()
	eventually(t, http.StatusCreated, "carol posts once NATS is back", func() response {
		return call(t, "POST", blog+"/v1/posts", carol, map[string]any{"title": "Hi", "body": "I registered while NATS was down."})
	})
	eventually(t, http.StatusCreated, "carol orders once NATS is back", func() response {
		return call(t, "POST", shop+"/v1/orders", carol, map[string]any{
			"items": []map[string]any{{"product_id": product.str("id"), "quantity": 1}},
		})
	})
	stock := call(t, "GET", shop+"/v1/products/"+product.str("id"), "", nil).want(t, http.StatusOK, "product")
	if stock.Body["stock"] != 1.0 {
		t.Fatalf("stock = %v, want 1 (5 - 2 - 1 - 1)", stock.Body["stock"])
	}
}
