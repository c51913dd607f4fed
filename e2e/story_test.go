package e2e

import (
	"context"
	"net/http"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

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
	post := apitest.Call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "Hello", "body": "First post."}).
		Want(t, http.StatusCreated, "alice posts")
	if post.Str("author_id") != aliceID || post.Str("author_name") != "Alice" {
		t.Fatalf("post = %s, want author %s named Alice", post.Raw, aliceID)
	}
	second := apitest.Call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "Again", "body": "Second post."}).
		Want(t, http.StatusCreated, "alice posts again")

	product := apitest.Call(t, "POST", shop+"/v1/products", admin, map[string]any{"name": "Mug", "price_cents": 1200, "stock": 5}).
		Want(t, http.StatusCreated, "admin creates a product")
	order := apitest.Call(t, "POST", shop+"/v1/orders", alice, map[string]any{
		"items": []map[string]any{{"product_id": product.Str("id"), "quantity": 2}},
	}).Want(t, http.StatusCreated, "alice orders")
	if order.Body["total_cents"] != 2400.0 {
		t.Fatalf("order total = %v, want 2400", order.Body["total_cents"])
	}

	// Bob may not delete Alice's post, until he is made a moderator; his old token then suffices.
	apitest.Call(t, "DELETE", blog+"/v1/posts/"+post.Str("id"), bob, nil).Want(t, http.StatusForbidden, "bob deletes as a user")
	bobID := apitest.Call(t, "GET", account+"/v1/users/me", bob, nil).Want(t, http.StatusOK, "bob's profile").Str("id")
	apitest.Call(t, "PUT", account+"/v1/users/"+bobID+"/roles", admin, map[string]any{"roles": []string{"user", "moderator"}}).
		Want(t, http.StatusOK, "admin grants moderator")
	caughtUp(t, s, "bob@example.com")
	apitest.Call(t, "DELETE", blog+"/v1/posts/"+post.Str("id"), bob, nil).
		Want(t, http.StatusNoContent, "bob deletes as a moderator with his old token")

	// Revoked: the same token no longer may.
	apitest.Call(t, "PUT", account+"/v1/users/"+bobID+"/roles", admin, map[string]any{"roles": []string{"user"}}).
		Want(t, http.StatusOK, "admin revokes moderator")
	caughtUp(t, s, "bob@example.com")
	apitest.Call(t, "DELETE", blog+"/v1/posts/"+second.Str("id"), bob, nil).
		Want(t, http.StatusForbidden, "bob deletes with his old token after the revocation")

	// Disabled: refused by account at once, by blog and shop once the event arrives.
	apitest.Call(t, "PUT", account+"/v1/users/"+aliceID+"/status", admin, map[string]any{"status": "disabled"}).
		Want(t, http.StatusOK, "admin disables alice")
	if r := apitest.Call(t, "GET", account+"/v1/users/me", alice, nil); r.Status != http.StatusForbidden || r.Str("code") != "user_disabled" {
		t.Fatalf("account /me for a disabled user: %d %s, want 403 user_disabled", r.Status, r.Raw)
	}
	// Until the change reaches a replica (milliseconds), alice is still allowed there: wait with
	// requests that change nothing (a PATCH of no post, a list of her orders), then try to write.
	apitest.Eventually(t, http.StatusForbidden, "disabled alice reaches blog", func() apitest.Response {
		return apitest.Call(t, "PATCH", blog+"/v1/posts/"+uuid.NewString(), alice, map[string]any{"title": "x"})
	})
	apitest.Eventually(t, http.StatusForbidden, "disabled alice reaches shop", func() apitest.Response {
		return apitest.Call(t, "GET", shop+"/v1/orders", alice, nil)
	})
	apitest.Call(t, "POST", blog+"/v1/posts", alice, map[string]any{"title": "x", "body": "y"}).
		WantProblem(t, http.StatusForbidden, "user_disabled", "disabled alice posts")
	apitest.Call(t, "POST", shop+"/v1/orders", alice, map[string]any{
		"items": []map[string]any{{"product_id": product.Str("id"), "quantity": 1}},
	}).WantProblem(t, http.StatusForbidden, "user_disabled", "disabled alice orders")

	// Account down: blog and shop authorize from their replicas and the keys they hold.
	must(t, s.Stop("account"))
	apitest.Call(t, "POST", blog+"/v1/posts", bob, map[string]any{"title": "Still here", "body": "account is down"}).
		Want(t, http.StatusCreated, "bob posts with account stopped")
	apitest.Call(t, "POST", shop+"/v1/orders", bob, map[string]any{
		"items": []map[string]any{{"product_id": product.Str("id"), "quantity": 1}},
	}).Want(t, http.StatusCreated, "bob orders with account stopped")
	must(t, s.Start(context.Background(), "account"))

	// NATS down: account still registers (the outbox keeps the events) and logs in.
	s.NATS.Stop()
	_, carol := register(t, s, "carol@example.com", "Carol")
	must(t, s.NATS.Start())
	apitest.Eventually(t, http.StatusCreated, "carol posts once NATS is back", func() apitest.Response {
		return apitest.Call(t, "POST", blog+"/v1/posts", carol, map[string]any{"title": "Hi", "body": "I registered while NATS was down."})
	})
	apitest.Eventually(t, http.StatusCreated, "carol orders once NATS is back", func() apitest.Response {
		return apitest.Call(t, "POST", shop+"/v1/orders", carol, map[string]any{
			"items": []map[string]any{{"product_id": product.Str("id"), "quantity": 1}},
		})
	})
	stock := apitest.Call(t, "GET", shop+"/v1/products/"+product.Str("id"), "", nil).Want(t, http.StatusOK, "product")
	if stock.Body["stock"] != 1.0 {
		t.Fatalf("stock = %v, want 1 (5 - 2 - 1 - 1)", stock.Body["stock"])
	}
}
