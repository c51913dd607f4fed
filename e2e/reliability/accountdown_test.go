package reliability

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/rig"
	"github.com/google/uuid"
)

// F15: account is down for the whole run. blog and shop authorize with the public keys they hold
// (from the key bucket) and their replicas of the users, so every valid request still succeeds,
// and neither ever calls account: a listener put on account's address counts who does.
func TestAccountDown(t *testing.T) {
	run := time.Duration(size(3, 30)) * time.Second
	const workers = 8
	users := size(4, 10)
	row := newRow(t, "F15", "account down for the whole run",
		fmt.Sprintf("%d users registered and logged in; account SIGKILLed and a listener counting connections put on its address; "+
			"then %s of posts (create, list, read) and orders (place, list, read) and product reads by %d clients with the tokens",
			users, run, workers),
		"every valid request answered 2xx (100 %); 0 connections to account's address; replicas equal to account's database")
	sys := newSystem(t, rig.Options{})
	w := sys.NewWorkload()
	ctx := t.Context()
	cs := w.Customers(ctx, users, 2)
	product := w.NewProduct(ctx, "F15 plenty", 500, 1_000_000)

	addr := strings.TrimPrefix(sys.URL["account"], "http://")
	sys.Kill("account")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on account's address %s: %v", addr, err)
	}
	var calls atomic.Int64
	var accepting sync.WaitGroup
	accepting.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			calls.Add(1)
			c.Close()
		}
	})

	var (
		mu       sync.Mutex
		requests int
		failed   []string
		byKind   = map[string]int{}
	)
	deadline := time.Now().Add(run)
	var clients sync.WaitGroup
	for k := range workers {
		clients.Go(func() {
			c := cs[k%len(cs)]
			var post, placed uuid.UUID
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				kind, req := nextRequest(i+k, c, product, post, placed)
				a := w.Exchange(ctx, req)
				if a.Status == http.StatusCreated {
					var made struct {
						ID uuid.UUID `json:"id"`
					}
					if json.Unmarshal(a.Body, &made) == nil {
						if req.Service == "blog" {
							post = made.ID
						} else {
							placed = made.ID
						}
					}
				}
				mu.Lock()
				requests++
				byKind[kind]++
				if a.Status < 200 || a.Status > 299 {
					failed = append(failed, kind+": "+describe(a))
				}
				mu.Unlock()
			}
		})
	}
	clients.Wait()
	end := time.Now()
	ln.Close()
	accepting.Wait()

	ok := requests - len(failed)
	row.Add("requests", requests)
	row.Add("by kind", kindList(byKind))
	row.Add("success rate", fmt.Sprintf("%.2f %% (%d/%d)", 100*float64(ok)/float64(max(requests, 1)), ok, requests))
	row.Add("calls to account", calls.Load())
	if requests == 0 || len(failed) > 0 {
		t.Errorf("%d of %d valid requests not answered 2xx, e.g.:\n%s", len(failed), requests, strings.Join(first(failed, 5), "\n"))
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d connections to account's address while it was down, want 0", n)
	}
	sys.Judge(w, row, end, time.Minute)
}

// nextRequest is the i-th request of a client of F15, as customer c: a post or an order made, the
// lists, or a read of the post, the order (the last the client made, once it made one) or the
// product.
func nextRequest(i int, c rig.Customer, product, post, placed uuid.UUID) (kind string, req rig.Request) {
	switch i % 7 {
	case 0:
		return "create post", rig.Request{Service: "blog", Method: http.MethodPost, Path: "/v1/posts", Token: c.Token,
			Body: map[string]string{"title": fmt.Sprintf("F15 %d", i), "body": "written while account is down"}}
	case 1:
		return "list posts", rig.Request{Service: "blog", Method: http.MethodGet, Path: "/v1/posts?author_id=" + c.ID.String()}
	case 2:
		if post != uuid.Nil {
			return "read post", rig.Request{Service: "blog", Method: http.MethodGet, Path: "/v1/posts/" + post.String()}
		}
		fallthrough
	case 3:
		return "place order", rig.Request{Service: "shop", Method: http.MethodPost, Path: "/v1/orders", Token: c.Token, Body: order(product)}
	case 4:
		return "list orders", rig.Request{Service: "shop", Method: http.MethodGet, Path: "/v1/orders", Token: c.Token}
	case 5:
		if placed != uuid.Nil {
			return "read order", rig.Request{Service: "shop", Method: http.MethodGet, Path: "/v1/orders/" + placed.String(), Token: c.Token}
		}
		fallthrough
	default:
		return "read product", rig.Request{Service: "shop", Method: http.MethodGet, Path: "/v1/products/" + product.String()}
	}
}

// kindList prints counts by kind of request, in a fixed order.
func kindList(m map[string]int) string {
	var parts []string
	for _, k := range []string{"create post", "list posts", "read post", "place order", "list orders", "read order", "read product"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}
