package blackbox

import (
	"net/http"
	"sync"
	"testing"

	"github.com/authmesh/e2e/apitest"
)

// TestStockContention: 30 buyers order the last 7 items at the same moment. Exactly 7 orders are
// placed, the other 23 get 409 out_of_stock, and the stock ends at 0, never below.
func TestStockContention(t *testing.T) {
	t.Parallel()
	const buyers, items = 30, 7
	product := newProduct(t, 999, items).Str("id")

	users := make([]user, buyers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // registration hashes passwords: a few at a time
	for i := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			users[i] = newUser(t, "Buyer")
			caughtUp(t, users[i]) // so that the race below is about stock, not replicas
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	answers := make([]apitest.Response, buyers)
	start := make(chan struct{})
	for i := range users {
		wg.Go(func() {
			<-start
			answers[i] = apitest.Call(t, "POST", system.shop+"/v1/orders", users[i].Token, order(product, 1))
		})
	}
	close(start)
	wg.Wait()

	placed, out := 0, 0
	for i, r := range answers {
		switch r.Status {
		case http.StatusCreated:
			placed++
		case http.StatusConflict:
			if ok, why := r.IsProblem(); !ok || r.Str("code") != "out_of_stock" {
				t.Errorf("buyer %d: 409 %s %s, want out_of_stock", i, why, r.Raw)
			}
			out++
		default:
			t.Errorf("buyer %d: status %d, want 201 or 409; body %s", i, r.Status, r.Raw)
		}
	}
	if placed != items || out != buyers-items {
		t.Errorf("%d orders placed and %d out of stock, want %d and %d", placed, out, items, buyers-items)
	}
	wantStock(t, product, 0)
}
