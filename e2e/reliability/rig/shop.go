package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Customer is a user a check registered, with a token of it once logged in.
type Customer struct {
	ID    uuid.UUID
	Email string
	Token string
}

// RegisterMany registers n users with workers concurrent clients, each registration logged like
// every other of the workload, and fails the test unless account acknowledged every one.
func (w *Workload) RegisterMany(ctx context.Context, n, workers int) []Customer {
	w.sys.t.Helper()
	out := make([]Customer, n)
	var (
		mu   sync.Mutex
		errs []string
	)
	w.parallel(n, workers, func(i int) {
		email, id, ok := w.register(ctx)
		if !ok {
			mu.Lock()
			errs = append(errs, email)
			mu.Unlock()
			return
		}
		out[i] = Customer{ID: id, Email: email}
	})
	if len(errs) > 0 {
		w.sys.t.Fatalf("register %d users: %d not acknowledged, e.g. %s", n, len(errs), errs[0])
	}
	return out
}

// Customers registers n users and logs each in, with workers concurrent clients (a login costs an
// argon2id hash: a few workers keep account's hashing slots busy), and waits until both replicas
// hold them, so that blog and shop take their tokens. It fails the test if any of it fails.
func (w *Workload) Customers(ctx context.Context, n, workers int) []Customer {
	w.sys.t.Helper()
	cs := w.RegisterMany(ctx, n, workers)
	var (
		mu   sync.Mutex
		errs []string
	)
	w.parallel(n, workers, func(i int) {
		tok, err := w.Login(ctx, cs[i].Email, "")
		if err != nil {
			mu.Lock()
			errs = append(errs, err.Error())
			mu.Unlock()
			return
		}
		cs[i].Token = tok
	})
	if len(errs) > 0 {
		w.sys.t.Fatalf("log %d users in: %d failed, e.g. %s", n, len(errs), errs[0])
	}
	if _, err := w.sys.Settle(time.Now(), time.Minute); err != nil {
		w.sys.t.Fatal(err)
	}
	return cs
}

// Login logs a user with Password in, from the client address from (X-Forwarded-For, which
// account heeds only from a trusted proxy; none when empty), and returns the token.
func (w *Workload) Login(ctx context.Context, email, from string) (string, error) {
	req := Request{Service: "account", Method: http.MethodPost, Path: "/v1/tokens",
		Body: map[string]string{"email": email, "password": Password}}
	if from != "" {
		req.Header = http.Header{"X-Forwarded-For": {from}}
	}
	a := w.Exchange(ctx, req)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &tok) != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("log in as %s: %d %v %.200s", email, a.Status, a.Err, a.Body)
	}
	return tok.AccessToken, nil
}

// parallel runs f(0) ... f(n-1) on workers goroutines and returns when all have returned.
func (w *Workload) parallel(n, workers int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// NewProduct has the admin create a product with the given stock and price, and returns its id;
// it fails the test if shop does not answer 201.
func (w *Workload) NewProduct(ctx context.Context, name string, priceCents, stock int64) uuid.UUID {
	w.sys.t.Helper()
	a := w.Exchange(ctx, Request{Service: "shop", Method: http.MethodPost, Path: "/v1/products", Token: w.sys.Admin,
		Body: map[string]any{"name": name, "price_cents": priceCents, "stock": stock}})
	var p struct {
		ID uuid.UUID `json:"id"`
	}
	if a.Status != http.StatusCreated || json.Unmarshal(a.Body, &p) != nil || p.ID == uuid.Nil {
		w.sys.t.Fatalf("create product %q: %d %v %.300s", name, a.Status, a.Err, a.Body)
	}
	return p.ID
}

// Stock returns a product's stock as GET /v1/products/{id} shows it.
func (w *Workload) Stock(ctx context.Context, id uuid.UUID) (int64, error) {
	a := w.Exchange(ctx, Request{Service: "shop", Method: http.MethodGet, Path: "/v1/products/" + id.String()})
	var p struct {
		Stock *int64 `json:"stock"`
	}
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &p) != nil || p.Stock == nil {
		return 0, fmt.Errorf("get product %s: %d %v %.200s", id, a.Status, a.Err, a.Body)
	}
	return *p.Stock, nil
}

// Metric returns the value of an unlabelled counter or gauge of service's /metrics (0 when the
// service does not show it yet).
func (w *Workload) Metric(ctx context.Context, service, name string) (float64, error) {
	a := w.Exchange(ctx, Request{Service: service, Method: http.MethodGet, Path: "/metrics"})
	if a.Status != http.StatusOK {
		return 0, fmt.Errorf("%s /metrics: %d %v", service, a.Status, a.Err)
	}
	for line := range strings.SplitSeq(string(a.Body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s /metrics: %s: %w", service, name, err)
			}
			return f, nil
		}
	}
	return 0, nil
}

// Stock of a product in shop's database, and the quantity its orders took.
type Stock struct {
	Stock, Sold int64
}

// ShopStock reads a product's stock and the quantity its orders hold in shop's database.
func (s *System) ShopStock(ctx context.Context, product uuid.UUID) (Stock, error) {
	const q = `SELECT p.stock, coalesce((SELECT sum(quantity) FROM order_items WHERE product_id = p.id), 0)
		FROM products p WHERE p.id = $1`
	var st Stock
	if err := s.Pool("shop").QueryRow(ctx, q, product).Scan(&st.Stock, &st.Sold); err != nil {
		return Stock{}, fmt.Errorf("stock of %s in shop's database: %w", product, err)
	}
	return st, nil
}

// Deadlocks returns pg_stat_database.deadlocks of service's database: the deadlocks Postgres has
// detected in it since the statistics were reset.
//
// Postgres counts a deadlock in the statistics of the session it aborted, and a session publishes
// its statistics at most once a second while busy, within 10 s once idle, and when it ends: read
// the count after StopSessions to be sure it holds the last transactions of a run.
func (s *System) Deadlocks(ctx context.Context, service string) (int64, error) {
	var n int64
	err := s.Pool(service).QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("deadlocks of %s's database: %w", service, err)
	}
	return n, nil
}

// StopSessions stops service (SIGTERM, a clean stop) and waits, at most 10 s, until every session
// it had on its database has ended, and with it published its statistics (see Deadlocks). Only
// the rig's own pool is then left on the database.
func (s *System) StopSessions(service string) error {
	if err := s.Stop(service); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool := s.Pool(service)
	const q = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`
	for {
		var n int32
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("sessions on %s's database: %w", service, err)
		}
		// Every session left is one of the rig's pool once the service's have gone.
		if n <= pool.Stat().TotalConns() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d sessions still on %s's database 10 s after it stopped", n, service)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// QuantilesOf returns the 50th and 99th percentiles and the maximum of ds (which it sorts).
func QuantilesOf(ds []time.Duration) Quantiles { return quantiles(ds) }
