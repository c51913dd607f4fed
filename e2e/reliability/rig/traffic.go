package rig

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Traffic sends posts (to blog and its instances) and orders of one unit of product (to shop and
// its instances) as members, with workers clients, each request to a target picked at random,
// until stop is called; stop returns how many it sent. A target is a service or instance name
// that begins with blog or shop; one that is not running gets nothing, as from a load balancer
// that sees it down. Every answer is counted like the rest: a member the changes
// disabled is refused (403), which is no fault.
func (w *Workload) Traffic(ctx context.Context, members []Customer, product uuid.UUID, targets []string, workers int) (stop func() int) {
	var stopped atomic.Bool
	var count atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !stopped.Load() && ctx.Err() == nil {
				m := members[rand.IntN(len(members))]
				target := targets[rand.IntN(len(targets))]
				if !w.sys.Running(target) {
					time.Sleep(time.Millisecond)
					continue
				}
				if strings.HasPrefix(target, "shop") {
					w.Call(ctx, target, http.MethodPost, "/v1/orders", m.Token,
						map[string]any{"items": []map[string]any{{"product_id": product, "quantity": 1}}})
				} else {
					w.Call(ctx, target, http.MethodPost, "/v1/posts", m.Token,
						map[string]any{"title": "reliability", "body": "a post written under a fault"})
				}
				count.Add(1)
			}
		})
	}
	return func() int {
		stopped.Store(true)
		wg.Wait()
		return int(count.Load())
	}
}
