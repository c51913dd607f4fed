package blackbox

import (
	"net/http"
	"testing"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// TestOrders: the admin keeps the catalogue; a user orders, sees its own orders and no one
// else's; an order that cannot be filled reserves nothing.
func TestOrders(t *testing.T) {
	t.Parallel()
	alice, bob := newUser(t, "Alice"), newUser(t, "Bob")
	mug := newProduct(t, 1200, 5)
	pen := newProduct(t, 150, 1)
	if mug.Str("name") == "" || num(mug.Body, "price_cents") != 1200 || num(mug.Body, "stock") != 5 {
		t.Fatalf("product = %s, want price_cents 1200, stock 5", mug.Raw)
	}

	apitest.Call(t, "POST", system.shop+"/v1/products", alice.Token, map[string]any{"name": "Nope", "price_cents": 1, "stock": 1}).
		WantProblem(t, http.StatusForbidden, "forbidden", "a user creates a product")
	apitest.Call(t, "PATCH", system.shop+"/v1/products/"+mug.Str("id"), alice.Token, map[string]any{"stock": 100}).
		WantProblem(t, http.StatusForbidden, "forbidden", "a user restocks")
	r := apitest.Call(t, "POST", system.shop+"/v1/products", admin(t), map[string]any{"name": "Free", "price_cents": 0, "stock": -1}).
		WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "a product with no price and negative stock")
	wantFieldErrors(t, r, "price_cents", "stock")

	o := apitest.Call(t, "POST", system.shop+"/v1/orders", alice.Token, map[string]any{"items": []map[string]any{
		{"product_id": mug.Str("id"), "quantity": 2}, {"product_id": pen.Str("id"), "quantity": 1},
	}}).Want(t, http.StatusCreated, "alice orders")
	if o.Str("user_id") != alice.ID || o.Str("status") != "placed" || num(o.Body, "total_cents") != 2*1200+150 {
		t.Fatalf("order = %s, want alice's, placed, total 2550", o.Raw)
	}
	if items, _ := o.Body["items"].([]any); len(items) != 2 {
		t.Errorf("order items = %v, want 2", o.Body["items"])
	}
	wantStock(t, mug.Str("id"), 3)
	wantStock(t, pen.Str("id"), 0)

	// Pens are out: the whole order fails and no mug is reserved.
	apitest.Call(t, "POST", system.shop+"/v1/orders", bob.Token, map[string]any{"items": []map[string]any{
		{"product_id": mug.Str("id"), "quantity": 1}, {"product_id": pen.Str("id"), "quantity": 1},
	}}).WantProblem(t, http.StatusConflict, "out_of_stock", "bob orders an exhausted pen")
	wantStock(t, mug.Str("id"), 3)

	r = apitest.Call(t, "POST", system.shop+"/v1/orders", bob.Token, map[string]any{"items": []map[string]any{
		{"product_id": uuid.NewString(), "quantity": 1}, {"product_id": mug.Str("id"), "quantity": 0},
	}}).WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "order an unknown product and zero mugs")
	if errs, _ := r.Body["errors"].([]any); len(errs) == 0 {
		t.Errorf("422 without errors: %s", r.Raw)
	}
	apitest.Call(t, "POST", system.shop+"/v1/orders", bob.Token, map[string]any{"items": []map[string]any{}}).
		WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "order nothing")

	id := o.Str("id")
	apitest.Call(t, "GET", system.shop+"/v1/orders/"+id, alice.Token, nil).Want(t, http.StatusOK, "alice reads her order")
	apitest.Call(t, "GET", system.shop+"/v1/orders/"+id, admin(t), nil).Want(t, http.StatusOK, "the admin reads alice's order")
	apitest.Call(t, "GET", system.shop+"/v1/orders/"+id, bob.Token, nil).WantProblem(t, http.StatusNotFound, "not_found", "bob reads alice's order")
	mine := apitest.Call(t, "GET", system.shop+"/v1/orders", alice.Token, nil).Want(t, http.StatusOK, "alice lists her orders")
	if items := mine.Items(); len(items) != 1 || items[0]["id"] != id {
		t.Errorf("alice's orders = %s, want just %s", mine.Raw, id)
	}
	if theirs := apitest.Call(t, "GET", system.shop+"/v1/orders", bob.Token, nil).Want(t, http.StatusOK, "bob lists his orders"); len(theirs.Items()) != 0 {
		t.Errorf("bob's orders = %s, want none", theirs.Raw)
	}
	apitest.Call(t, "GET", system.shop+"/v1/orders?user_id="+alice.ID, bob.Token, nil).
		WantProblem(t, http.StatusForbidden, "forbidden", "bob lists alice's orders")
	byAdmin := apitest.Call(t, "GET", system.shop+"/v1/orders?user_id="+alice.ID, admin(t), nil).Want(t, http.StatusOK, "the admin lists alice's orders")
	if items := byAdmin.Items(); len(items) != 1 || items[0]["id"] != id {
		t.Errorf("alice's orders as the admin sees them = %s, want just %s", byAdmin.Raw, id)
	}

	restocked := apitest.Call(t, "PATCH", system.shop+"/v1/products/"+pen.Str("id"), admin(t), map[string]any{"stock": 10, "price_cents": 175}).
		Want(t, http.StatusOK, "the admin restocks pens")
	if num(restocked.Body, "stock") != 10 || num(restocked.Body, "price_cents") != 175 {
		t.Errorf("restocked = %s", restocked.Raw)
	}
	if products := apitest.Call(t, "GET", system.shop+"/v1/products?limit=100", "", nil).Want(t, http.StatusOK, "list products"); len(products.Items()) == 0 {
		t.Errorf("no products listed")
	}
}

// wantStock checks a product's stock.
func wantStock(t *testing.T, productID string, want int) {
	t.Helper()
	p := apitest.Call(t, "GET", system.shop+"/v1/products/"+productID, "", nil).Want(t, http.StatusOK, "read product")
	if got := num(p.Body, "stock"); got != float64(want) {
		t.Errorf("stock of %s = %v, want %d", productID, got, want)
	}
}
