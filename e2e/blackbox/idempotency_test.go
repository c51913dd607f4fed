package blackbox

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// placeOrder orders with an Idempotency-Key.
func placeOrder(t *testing.T, u user, key string, body map[string]any) apitest.Response {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + u.Token}, "Idempotency-Key": {key}}
	return apitest.Send(t, "POST", system.shop+"/v1/orders", h, mustJSON(t, body))
}

// TestIdempotentRetries: a retry with the same key and body gets the first answer again, marked
// Idempotent-Replayed, and orders nothing more; the same key with another body is a 422; keys
// belong to their user.
func TestIdempotentRetries(t *testing.T) {
	t.Parallel()
	alice, bob := newUser(t, "Alice"), newUser(t, "Bob")
	product := newProduct(t, 500, 5).Str("id")
	key := uuid.NewString()

	first := placeOrder(t, alice, key, order(product, 2)).Want(t, http.StatusCreated, "first order")
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first answer has Idempotent-Replayed: %q", first.Header.Get("Idempotent-Replayed"))
	}
	for i := range 3 {
		again := placeOrder(t, alice, key, order(product, 2)).Want(t, http.StatusCreated, "retry")
		if again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry %d: Idempotent-Replayed %q, want true", i, again.Header.Get("Idempotent-Replayed"))
		}
		if !reflect.DeepEqual(again.Body, first.Body) {
			t.Errorf("retry %d: body %s, want the first answer %s", i, again.Raw, first.Raw)
		}
	}
	wantStock(t, product, 3)
	mine := apitest.Call(t, "GET", system.shop+"/v1/orders", alice.Token, nil).Want(t, http.StatusOK, "alice's orders")
	if items := mine.Items(); len(items) != 1 || items[0]["id"] != first.Str("id") {
		t.Errorf("alice's orders = %s, want only %s", mine.Raw, first.Str("id"))
	}

	placeOrder(t, alice, key, order(product, 1)).
		WantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused", "same key, other quantity")
	placeOrder(t, alice, key, order(newProduct(t, 500, 5).Str("id"), 2)).
		WantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused", "same key, other product")

	// Bob's key of the same name is his own.
	theirs := placeOrder(t, bob, key, order(product, 2)).Want(t, http.StatusCreated, "bob orders with alice's key")
	if theirs.Str("id") == first.Str("id") || theirs.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("bob's order with the same key = %s (replayed %q), want a new order", theirs.Raw, theirs.Header.Get("Idempotent-Replayed"))
	}
	wantStock(t, product, 1)

	// A bad key is a 400, not a 5xx.
	for name, k := range map[string]string{"empty": "", "too long": strings.Repeat("k", 300), "control": "a\tb"} {
		h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + alice.Token}, "Idempotency-Key": {k}}
		r := apitest.Send(t, "POST", system.shop+"/v1/orders", h, mustJSON(t, order(product, 1)))
		if r.Status < 400 || r.Status > 499 {
			t.Errorf("%s key: status %d, want a 4xx; body %s", name, r.Status, r.Raw)
		}
	}
	wantStock(t, product, 1)
}
