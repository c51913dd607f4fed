package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/reliability/checker"
	"github.com/google/uuid"
)

// Member is a user a check registered itself and logged in, so that it can act as that user
// (orders, posts) and see what each service allows it.
type Member struct {
	ID    uuid.UUID
	Email string
	Token string
}

// Member registers a user and logs it in. The registration is logged like every other (the user
// joins those the changes pick from); the login is counted like any answer. It fails when either
// is not answered with success.
func (w *Workload) Member(ctx context.Context) (Member, error) {
	email := fmt.Sprintf("rel-%s-m%d@example.com", w.runID, w.seq.Add(1))
	a := checker.Attempt{Op: checker.OpRegister, Email: email}
	body := map[string]any{"email": email, "password": Password, "display_name": "Member"}
	a.Outcome, a.User, a.Version = w.send(ctx, "account", http.MethodPost, w.sys.URL["account"]+"/v1/users", "", body)
	w.log(a)
	if a.Outcome != checker.Acked {
		return Member{}, fmt.Errorf("register %s: %s", email, a.Outcome)
	}
	status, answer := w.do(ctx, "account", http.MethodPost, w.sys.URL["account"]+"/v1/tokens", "",
		map[string]any{"email": email, "password": Password})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if status != http.StatusOK || json.Unmarshal(answer, &tok) != nil || tok.AccessToken == "" {
		return Member{}, fmt.Errorf("log in as %s: status %d: %.200s", email, status, answer)
	}
	return Member{ID: a.User, Email: email, Token: tok.AccessToken}, nil
}

// Members registers and logs in n users, failing on the first that could not be.
func (w *Workload) Members(ctx context.Context, n int) ([]Member, error) {
	ms := make([]Member, 0, n)
	for range n {
		m, err := w.Member(ctx)
		if err != nil {
			return ms, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// AdminChanges makes n role and status changes of the users registered so far (none when there
// are none), with workers concurrent clients: the cheap changes, with no password to hash, that
// build a backlog fast. It returns when all n were attempted, or ctx ends.
func (w *Workload) AdminChanges(ctx context.Context, n, workers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				w.mu.Lock()
				known := len(w.users)
				var user uuid.UUID
				if known > 0 {
					user = w.users[rand.IntN(known)]
				}
				w.mu.Unlock()
				if known == 0 {
					return
				}
				if rand.IntN(2) == 0 {
					roles := []string{"user"}
					if rand.IntN(2) == 0 {
						roles = append(roles, "moderator")
					}
					w.change(ctx, checker.OpRoles, user, "/roles", map[string]any{"roles": roles})
					continue
				}
				status := "active"
				if rand.IntN(2) == 0 {
					status = "disabled"
				}
				w.change(ctx, checker.OpStatus, user, "/status", map[string]any{"status": status})
			}
		})
	}
	wg.Wait()
}

// Traffic sends posts (to blog and its instances) and orders of one unit of product (to shop and
// its instances) as members, with workers clients, each request to a target picked at random,
// until stop is called; stop returns how many it sent. A target is a service or instance name
// that begins with blog or shop; one that is not running gets nothing, as from a load balancer
// that sees it down. Every answer is counted like the rest: a member the changes
// disabled is refused (403), which is no fault.
func (w *Workload) Traffic(ctx context.Context, members []Member, product string, targets []string, workers int) (stop func() int) {
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

// Product creates a product in shop as the admin, with stock units, and returns its id. It retries
// until shop answers 201: its replica may not hold the admin yet.
func (s *System) Product(stock int) string {
	s.t.Helper()
	return apitest.Eventually(s.t, http.StatusCreated, "create a product", func() apitest.Response {
		return apitest.Call(s.t, http.MethodPost, s.URL["shop"]+"/v1/products", s.Admin,
			map[string]any{"name": "reliability", "price_cents": 100, "stock": stock})
	}).Str("id")
}
