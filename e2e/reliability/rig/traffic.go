package rig

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
)

// Shopping sends what users do besides changing themselves, from one client per customer, until
// stop is called: in turn an order of one unit of product (shop), a post (blog), and a read of its
// own orders. Every answer is counted like the workload's others, so a 500 fails Judge. stop
// returns how many orders were placed (201).
func (w *Workload) Shopping(ctx context.Context, customers []Customer, product uuid.UUID) (stop func() (placed int)) {
	var stopped atomic.Bool
	var orders atomic.Int64
	var wg sync.WaitGroup
	for i, c := range customers {
		wg.Go(func() {
			for n := 0; !stopped.Load() && ctx.Err() == nil; n++ {
				switch n % 3 {
				case 0:
					body := map[string]any{"items": []map[string]any{{"product_id": product, "quantity": 1}}}
					if w.Call(ctx, "shop", http.MethodPost, "/v1/orders", c.Token, body) == http.StatusCreated {
						orders.Add(1)
					}
				case 1:
					body := map[string]any{"title": fmt.Sprintf("post %d of customer %d", n, i), "body": "under load"}
					w.Call(ctx, "blog", http.MethodPost, "/v1/posts", c.Token, body)
				default:
					w.Call(ctx, "shop", http.MethodGet, "/v1/orders", c.Token, nil)
				}
			}
		})
	}
	return func() int {
		stopped.Store(true)
		wg.Wait()
		return int(orders.Load())
	}
}
