package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/authmesh/events/migrate"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/shop/internal/shop"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	return New(migrated(t), nil)
}

// migrated returns a pool on a fresh database with the shop's tables.
func migrated(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := Migrate(context.Background(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	// A second run must be a no-op.
	if err := Migrate(context.Background(), pool); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	return pool
}

// counterValue returns the value of the counter name gathered from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s registered", name)
	return 0
}

func mustProduct(t *testing.T, s *Store, name string, price, stock int64) shop.Product {
	t.Helper()
	p, err := s.CreateProduct(context.Background(), shop.NewProduct{Name: name, PriceCents: price, Stock: stock})
	if err != nil {
		t.Fatalf("CreateProduct(%q): %v", name, err)
	}
	return p
}

func stockOf(t *testing.T, s *Store, id uuid.UUID) int64 {
	t.Helper()
	p, err := s.Product(context.Background(), id)
	if err != nil {
		t.Fatalf("Product(%s): %v", id, err)
	}
	return p.Stock
}

func countRows(t *testing.T, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func order(user uuid.UUID, items ...shop.Item) shop.NewOrder {
	return shop.NewOrder{UserID: user, Items: items}
}

func item(p shop.Product, qty int64) shop.Item { return shop.Item{ProductID: p.ID, Quantity: qty} }

func TestProducts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	p := mustProduct(t, s, "Widget", 1250, 7)
	if p.ID == uuid.Nil || p.CreatedAt.IsZero() || !p.CreatedAt.Equal(p.UpdatedAt) || p.CreatedAt.Location() != time.UTC {
		t.Errorf("CreateProduct = %+v, want an id and equal UTC timestamps", p)
	}
	got, err := s.Product(ctx, p.ID)
	if err != nil {
		t.Fatalf("Product: %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Product differs from what CreateProduct returned (-want +got):\n%s", diff)
	}
	if _, err := s.Product(ctx, uuid.New()); !errors.Is(err, shop.ErrNotFound) {
		t.Errorf("Product(unknown) = %v, want ErrNotFound", err)
	}

	name, stock := "Gadget", int64(0)
	up, err := s.UpdateProduct(ctx, p.ID, shop.ProductPatch{Name: &name, Stock: &stock})
	if err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	if up.Name != "Gadget" || up.Stock != 0 || up.PriceCents != 1250 || up.UpdatedAt.Before(p.UpdatedAt) {
		t.Errorf("UpdateProduct = %+v, want name Gadget, stock 0, price unchanged", up)
	}
	same, err := s.UpdateProduct(ctx, p.ID, shop.ProductPatch{})
	if err != nil || !same.UpdatedAt.Equal(up.UpdatedAt) {
		t.Errorf("UpdateProduct(empty) = %+v, %v; want the product unchanged", same, err)
	}
	if _, err := s.UpdateProduct(ctx, uuid.New(), shop.ProductPatch{Name: &name}); !errors.Is(err, shop.ErrNotFound) {
		t.Errorf("UpdateProduct(unknown) = %v, want ErrNotFound", err)
	}
	neg := int64(-1)
	if _, err := s.UpdateProduct(ctx, p.ID, shop.ProductPatch{Stock: &neg}); err == nil {
		t.Errorf("UpdateProduct(stock -1) succeeded; the CHECK must refuse it")
	}
}

func TestProductsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var want []uuid.UUID
	for i := range 5 {
		want = append(want, mustProduct(t, s, fmt.Sprintf("p%d", i), 100, 1).ID)
	}
	var got []uuid.UUID
	page := shop.Page{Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more pages than expected")
		}
		ps, next, err := s.Products(ctx, page)
		if err != nil {
			t.Fatalf("Products(%+v): %v", page, err)
		}
		for _, p := range ps {
			got = append(got, p.ID)
		}
		if next == nil {
			break
		}
		page.After = next
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("products over all pages, oldest first (-want +got):\n%s", diff)
	}
	ps, next, err := s.Products(ctx, shop.Page{Limit: 5})
	if err != nil || len(ps) != 5 || next != nil {
		t.Errorf("Products(limit 5) = %d items, next %v, %v; want 5 and no next page", len(ps), next, err)
	}
}

func TestPlaceOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	a := mustProduct(t, s, "A", 300, 10)
	b := mustProduct(t, s, "B", 1000, 5)
	user := uuid.New()

	placed, replayed, err := s.PlaceOrder(ctx, order(user, item(b, 2), item(a, 3)))
	if err != nil || replayed {
		t.Fatalf("PlaceOrder = %v, replayed %v", err, replayed)
	}
	if placed.ID == uuid.Nil || placed.CreatedAt.IsZero() || placed.CreatedAt.Location() != time.UTC {
		t.Errorf("placed order %+v, want an id and a UTC created_at", placed)
	}
	want := shop.Order{
		ID:     placed.ID,
		UserID: user,
		Items: []shop.Item{
			{ProductID: b.ID, Quantity: 2, PriceCents: 1000},
			{ProductID: a.ID, Quantity: 3, PriceCents: 300},
		},
		TotalCents: 2900,
		Status:     shop.OrderPlaced,
		CreatedAt:  placed.CreatedAt,
	}
	if diff := cmp.Diff(want, placed); diff != "" {
		t.Errorf("placed order (-want +got):\n%s", diff)
	}
	if got := stockOf(t, s, a.ID); got != 7 {
		t.Errorf("stock of A = %d, want 7", got)
	}
	if got := stockOf(t, s, b.ID); got != 3 {
		t.Errorf("stock of B = %d, want 3", got)
	}

	// The order keeps the prices it was placed at.
	price := int64(999)
	if _, err := s.UpdateProduct(ctx, a.ID, shop.ProductPatch{PriceCents: &price}); err != nil {
		t.Fatal(err)
	}
	stored, err := s.Order(ctx, placed.ID)
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored order (-want +got):\n%s", diff)
	}
	if _, err := s.Order(ctx, uuid.New()); !errors.Is(err, shop.ErrNotFound) {
		t.Errorf("Order(unknown) = %v, want ErrNotFound", err)
	}
}

func TestPlaceOrderAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	a := mustProduct(t, s, "A", 100, 10)
	b := mustProduct(t, s, "B", 100, 1)
	user := uuid.New()

	_, _, err := s.PlaceOrder(ctx, order(user, item(a, 5), item(b, 2)))
	oos, ok := errors.AsType[*shop.OutOfStockError](err)
	if !ok {
		t.Fatalf("PlaceOrder(too many B) = %v, want *OutOfStockError", err)
	}
	wantOOS := &shop.OutOfStockError{ProductID: b.ID, Name: "B", Requested: 2, Available: 1}
	if diff := cmp.Diff(wantOOS, oos); diff != "" {
		t.Errorf("OutOfStockError (-want +got):\n%s", diff)
	}

	unknown := uuid.New()
	_, _, err = s.PlaceOrder(ctx, order(user, item(a, 1), shop.Item{ProductID: unknown, Quantity: 1}))
	up, ok := errors.AsType[*shop.UnknownProductsError](err)
	if !ok || len(up.IDs) != 1 || up.IDs[0] != unknown {
		t.Fatalf("PlaceOrder(unknown product) = %v, want *UnknownProductsError naming %s", err, unknown)
	}

	if got := stockOf(t, s, a.ID); got != 10 {
		t.Errorf("stock of A = %d after failed orders, want 10 (nothing reserved)", got)
	}
	if n := countRows(t, s, "orders"); n != 0 {
		t.Errorf("%d orders after failed orders, want 0", n)
	}
}

// TestConcurrentOrdersNeverOversell races 300 orders of one unit for a stock of 100.
func TestConcurrentOrdersNeverOversell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "Scarce", 100, 100)

	const clients = 300
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		placed, short int
		others        []error
	)
	for range clients {
		wg.Go(func() {
			_, _, err := s.PlaceOrder(ctx, order(uuid.New(), item(p, 1)))
			mu.Lock()
			defer mu.Unlock()
			_, oos := errors.AsType[*shop.OutOfStockError](err)
			switch {
			case err == nil:
				placed++
			case oos:
				short++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("%d orders failed otherwise than out of stock, first: %v", len(others), others[0])
	}
	if placed != 100 || short != clients-100 {
		t.Errorf("placed %d, out of stock %d; want 100 and %d", placed, short, clients-100)
	}
	if got := stockOf(t, s, p.ID); got != 0 {
		t.Errorf("stock = %d, want 0", got)
	}
	var sold int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(quantity), 0) FROM order_items`).Scan(&sold); err != nil {
		t.Fatal(err)
	}
	if sold != 100 {
		t.Errorf("units sold = %d, want 100", sold)
	}
}

// TestConcurrentCrossOrders races orders of {A,B} against orders of {B,A}: locking in product id
// order means no transaction is ever a deadlock victim, so none is retried.
func TestConcurrentCrossOrders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s := New(migrated(t), reg)
	a := mustProduct(t, s, "A", 100, 1000)
	b := mustProduct(t, s, "B", 100, 1000)

	const clients = 200
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range clients {
		items := []shop.Item{item(a, 1), item(b, 2)}
		if i%2 == 1 {
			items = []shop.Item{item(b, 2), item(a, 1)}
		}
		wg.Go(func() {
			if _, _, err := s.PlaceOrder(ctx, order(uuid.New(), items...)); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d orders failed, first: %v", len(errs), errs[0])
	}
	if got := stockOf(t, s, a.ID); got != 1000-clients {
		t.Errorf("stock of A = %d, want %d", got, 1000-clients)
	}
	if got := stockOf(t, s, b.ID); got != 1000-2*clients {
		t.Errorf("stock of B = %d, want %d", got, 1000-2*clients)
	}
	if n := counterValue(t, reg, "shop_transaction_retries_total"); n != 0 {
		t.Errorf("%v transactions retried after a deadlock or serialization failure, want 0", n)
	}
}

func TestIdempotentReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "P", 100, 10)
	q := mustProduct(t, s, "Q", 100, 10)
	user, other := uuid.New(), uuid.New()
	withKey := func(o shop.NewOrder, key, hash string) shop.NewOrder {
		o.Idempotency = &shop.Idempotency{Key: key, RequestHash: hash}
		return o
	}

	first, replayed, err := s.PlaceOrder(ctx, withKey(order(user, item(p, 2)), "k1", "h1"))
	if err != nil || replayed {
		t.Fatalf("first PlaceOrder = %v, replayed %v", err, replayed)
	}
	again, replayed, err := s.PlaceOrder(ctx, withKey(order(user, item(p, 2)), "k1", "h1"))
	if err != nil || !replayed {
		t.Fatalf("retry PlaceOrder = %v, replayed %v; want the order placed first", err, replayed)
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("replayed order differs (-first +replay):\n%s", diff)
	}
	if got := stockOf(t, s, p.ID); got != 8 {
		t.Errorf("stock = %d after a replay, want 8 (one order)", got)
	}

	_, _, err = s.PlaceOrder(ctx, withKey(order(user, item(q, 1)), "k1", "h2"))
	if !errors.Is(err, shop.ErrIdempotencyKeyReused) {
		t.Errorf("PlaceOrder(same key, other request) = %v, want ErrIdempotencyKeyReused", err)
	}
	if got := stockOf(t, s, q.ID); got != 10 {
		t.Errorf("stock of Q = %d after a reused key, want 10", got)
	}

	// Keys are per user.
	theirs, replayed, err := s.PlaceOrder(ctx, withKey(order(other, item(p, 2)), "k1", "h1"))
	if err != nil || replayed || theirs.ID == first.ID {
		t.Errorf("other user's PlaceOrder(same key) = %v, replayed %v, order %s; want a new order", err, replayed, theirs.ID)
	}
	if n := countRows(t, s, "orders"); n != 2 {
		t.Errorf("%d orders, want 2", n)
	}
}

func TestIdempotencyKeyFreeAfterFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "P", 100, 1)
	o := order(uuid.New(), item(p, 3))
	o.Idempotency = &shop.Idempotency{Key: "k", RequestHash: "h"}

	if _, _, err := s.PlaceOrder(ctx, o); err == nil {
		t.Fatalf("PlaceOrder(3 of 1) succeeded")
	}
	stock := int64(5)
	if _, err := s.UpdateProduct(ctx, p.ID, shop.ProductPatch{Stock: &stock}); err != nil {
		t.Fatal(err)
	}
	_, replayed, err := s.PlaceOrder(ctx, o)
	if err != nil || replayed {
		t.Errorf("retry after restock = %v, replayed %v; want a new order (a failure stores nothing)", err, replayed)
	}
}

// TestIdempotentConcurrent sends one key 50 times at once: one order, the same order for all.
func TestIdempotentConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "P", 100, 100)
	o := order(uuid.New(), item(p, 1))
	o.Idempotency = &shop.Idempotency{Key: "same", RequestHash: "h"}

	const clients = 50
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		placed   []shop.Order
		replays  int
		failures []error
	)
	for range clients {
		wg.Go(func() {
			got, replayed, err := s.PlaceOrder(ctx, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			placed = append(placed, got)
			if replayed {
				replays++
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(failures), failures[0])
	}
	if replays != clients-1 {
		t.Errorf("%d replays, want %d", replays, clients-1)
	}
	for _, got := range placed[1:] {
		if diff := cmp.Diff(placed[0], got); diff != "" {
			t.Fatalf("orders returned differ (-one +another):\n%s", diff)
		}
	}
	if n := countRows(t, s, "orders"); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	if got := stockOf(t, s, p.ID); got != 99 {
		t.Errorf("stock = %d, want 99", got)
	}
}

func TestOrdersPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "P", 100, 100)
	alice, bob := uuid.New(), uuid.New()
	var mine, all []uuid.UUID // newest first
	for i := range 5 {
		user := alice
		if i%2 == 1 {
			user = bob
		}
		placed, _, err := s.PlaceOrder(ctx, order(user, item(p, 1)))
		if err != nil {
			t.Fatal(err)
		}
		all = append([]uuid.UUID{placed.ID}, all...)
		if user == alice {
			mine = append([]uuid.UUID{placed.ID}, mine...)
		}
	}
	collect := func(user uuid.UUID, limit int) []uuid.UUID {
		var ids []uuid.UUID
		page := shop.Page{Limit: limit}
		for range 10 {
			os, next, err := s.Orders(ctx, user, page)
			if err != nil {
				t.Fatalf("Orders(%s, %+v): %v", user, page, err)
			}
			for _, o := range os {
				if len(o.Items) != 1 {
					t.Errorf("order %s has %d items, want 1", o.ID, len(o.Items))
				}
				ids = append(ids, o.ID)
			}
			if next == nil {
				return ids
			}
			page.After = next
		}
		t.Fatalf("too many pages")
		return nil
	}
	if diff := cmp.Diff(all, collect(uuid.Nil, 2)); diff != "" {
		t.Errorf("all orders, newest first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(mine, collect(alice, 1)); diff != "" {
		t.Errorf("alice's orders, newest first (-want +got):\n%s", diff)
	}
	if got := collect(uuid.New(), 20); len(got) != 0 {
		t.Errorf("orders of a user with none = %v, want none", got)
	}
}

func TestPruneIdempotencyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	p := mustProduct(t, s, "P", 100, 100)
	user := uuid.New()
	for _, key := range []string{"old1", "old2", "new"} {
		o := order(user, item(p, 1))
		o.Idempotency = &shop.Idempotency{Key: key, RequestHash: "h"}
		if _, _, err := s.PlaceOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '49 hours' WHERE key LIKE 'old%'`); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneIdempotencyKeys(ctx, 48*time.Hour, 1)
	if err != nil || n != 1 {
		t.Errorf("PruneIdempotencyKeys(limit 1) = %d, %v; want 1", n, err)
	}
	n, err = s.PruneIdempotencyKeys(ctx, 48*time.Hour, 100)
	if err != nil || n != 1 {
		t.Errorf("PruneIdempotencyKeys = %d, %v; want 1", n, err)
	}
	var keys []string
	rows, err := s.pool.Query(ctx, `SELECT key FROM idempotency_keys`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if diff := cmp.Diff([]string{"new"}, keys); diff != "" {
		t.Errorf("keys left (-want +got):\n%s", diff)
	}
}

// TestMigrateIdempotencyKeys upgrades a database whose keys stored the HTTP response (migration
// 001 alone) and checks that each key still replays the order it placed: one with its order_id
// set, as the old code left every key, and one whose order only the stored body names. A key that
// names no order cannot be replayed and is dropped.
func TestMigrateIdempotencyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	first, err := fs.ReadFile(migrations, "migrations/0001_shop.sql")
	if err != nil {
		t.Fatal(err)
	}
	// Recorded under its name of before the renumbering, as an older database has it: the upgrade
	// knows it by its number and applies only 0002.
	old := fstest.MapFS{"001_shop.sql": {Data: first}}
	if err := migrate.Apply(ctx, pool, "shop", old, "."); err != nil {
		t.Fatalf("apply 001: %v", err)
	}
	user, product, stored, bodyOnly := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	body := func(id uuid.UUID) []byte {
		return fmt.Appendf(nil, `{"id":"%s","user_id":"%s","items":[{"product_id":"%s","quantity":1,"price_cents":100}],"total_cents":100,"status":"placed","created_at":"2026-12-01T10:00:00Z"}`+"\n", id, user, product)
	}
	seed := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO products (id, name, price_cents, stock) VALUES ($1, 'P', 100, 10)`, []any{product}},
		{`INSERT INTO orders (id, user_id, total_cents) VALUES ($1, $3, 100), ($2, $3, 100)`, []any{stored, bodyOnly, user}},
		{`INSERT INTO order_items (order_id, position, product_id, quantity, price_cents) VALUES ($1, 0, $3, 1, 100), ($2, 0, $3, 1, 100)`, []any{stored, bodyOnly, product}},
		{`INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response_body, order_id) VALUES
			($1, 'stored', 'h', 201, $2, $3), ($1, 'body-only', 'h', 201, $4, NULL), ($1, 'no-order', 'h', NULL, NULL, NULL)`,
			[]any{user, body(stored), stored, body(bodyOnly)}},
	}
	for _, st := range seed {
		if _, err := pool.Exec(ctx, st.sql, st.args...); err != nil {
			t.Fatalf("%s: %v", st.sql, err)
		}
	}

	if err := Migrate(ctx, pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s := New(pool, nil)
	for _, tt := range []struct {
		key      string
		replayed bool
		order    uuid.UUID // when replayed
	}{
		{"stored", true, stored},
		{"body-only", true, bodyOnly},
		{"no-order", false, uuid.Nil},
	} {
		o := order(user, shop.Item{ProductID: product, Quantity: 1})
		o.Idempotency = &shop.Idempotency{Key: tt.key, RequestHash: "h"}
		got, replayed, err := s.PlaceOrder(ctx, o)
		if err != nil || replayed != tt.replayed || (tt.replayed && got.ID != tt.order) {
			t.Errorf("PlaceOrder(key %s) = order %s, replayed %v, %v; want replayed %v of %s", tt.key, got.ID, replayed, err, tt.replayed, tt.order)
		}
	}
	var left int
	const q = `SELECT count(*) FROM information_schema.columns
		WHERE table_name = 'idempotency_keys' AND column_name IN ('status_code', 'response_body')`
	if err := pool.QueryRow(ctx, q).Scan(&left); err != nil || left != 0 {
		t.Errorf("response columns left after the migration: %d, %v; want 0", left, err)
	}
}

// TestRetries checks that a transaction aborted as a serialization failure or a deadlock victim
// runs again, each retry counted, and that one aborted every time ends as shop.ErrUnavailable.
func TestRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s := New(migrated(t), reg)
	abortFirst := func(n int, code string) func(pgx.Tx) error {
		calls := 0
		return func(pgx.Tx) error {
			if calls++; calls <= n {
				return fmt.Errorf("update: %w", &pgconn.PgError{Code: code})
			}
			return nil
		}
	}
	const retries = "shop_transaction_retries_total"
	if err := s.inTx(ctx, abortFirst(1, "40001")); err != nil {
		t.Errorf("inTx(serialization failure once) = %v, want nil", err)
	}
	if err := s.inTx(ctx, abortFirst(2, "40P01")); err != nil {
		t.Errorf("inTx(deadlock twice) = %v, want nil", err)
	}
	if got := counterValue(t, reg, retries); got != 3 {
		t.Errorf("%s = %v, want 3", retries, got)
	}
	if err := s.inTx(ctx, abortFirst(maxAttempts, "40001")); !errors.Is(err, shop.ErrUnavailable) {
		t.Errorf("inTx(aborted every time) = %v, want ErrUnavailable", err)
	}
	if got := counterValue(t, reg, retries); got != 3+maxAttempts-1 {
		t.Errorf("%s = %v, want %d", retries, got, 3+maxAttempts-1)
	}
	// A deadline that passes while an aborted transaction waits to run again ends it as any query
	// it cut short would: ErrUnavailable.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := s.inTx(short, func(pgx.Tx) error {
		<-short.Done()
		return &pgconn.PgError{Code: "40001"}
	})
	if !errors.Is(err, shop.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("inTx(deadline during the pause) = %v, want ErrUnavailable wrapping the deadline", err)
	}
	retried := counterValue(t, reg, retries)
	// Another store on the same registry counts into the same counter.
	if err := New(s.pool, reg).inTx(ctx, abortFirst(1, "40001")); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, reg, retries); got != retried+1 {
		t.Errorf("%s = %v after a second store retried, want %v", retries, got, retried+1)
	}
}

// TestUnavailable holds locks on the shop's tables from another session while each method of the
// store runs on a pool whose sessions give up on a statement (or a lock wait) after 100 ms. Every
// method must report shop.ErrUnavailable (the server's 503), whichever of its statements times out.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := Migrate(ctx, admin); err != nil {
		t.Fatal(err)
	}
	seed := New(admin, nil)
	p := mustProduct(t, seed, "P", 100, 100)
	user := uuid.New()
	placed, _, err := seed.PlaceOrder(ctx, order(user, item(p, 1)))
	if err != nil {
		t.Fatal(err)
	}
	withKey := order(user, item(p, 1))
	withKey.Idempotency = &shop.Idempotency{Key: "k", RequestHash: "h"}
	stock := int64(5)

	const all = "products, orders, order_items, idempotency_keys"
	calls := []struct {
		name, locked string
		call         func(s *Store) error
	}{
		{"CreateProduct", all, func(s *Store) error {
			_, err := s.CreateProduct(ctx, shop.NewProduct{Name: "Q", PriceCents: 1, Stock: 1})
			return err
		}},
		{"Product", all, func(s *Store) error { _, err := s.Product(ctx, p.ID); return err }},
		{"UpdateProduct", all, func(s *Store) error {
			_, err := s.UpdateProduct(ctx, p.ID, shop.ProductPatch{Stock: &stock})
			return err
		}},
		{"Products", all, func(s *Store) error { _, _, err := s.Products(ctx, shop.Page{Limit: 10}); return err }},
		{"Order", all, func(s *Store) error { _, err := s.Order(ctx, placed.ID); return err }},
		{"Order, reading its items", "order_items", func(s *Store) error { _, err := s.Order(ctx, placed.ID); return err }},
		{"Orders", all, func(s *Store) error { _, _, err := s.Orders(ctx, uuid.Nil, shop.Page{Limit: 10}); return err }},
		{"Orders of a user, reading their items", "order_items", func(s *Store) error {
			_, _, err := s.Orders(ctx, user, shop.Page{Limit: 10})
			return err
		}},
		{"PlaceOrder, checking products", "products", func(s *Store) error {
			_, _, err := s.PlaceOrder(ctx, order(user, item(p, 1)))
			return err
		}},
		{"PlaceOrder, inserting the order", "orders", func(s *Store) error {
			_, _, err := s.PlaceOrder(ctx, order(user, item(p, 1)))
			return err
		}},
		{"PlaceOrder, claiming the key", "idempotency_keys", func(s *Store) error {
			_, _, err := s.PlaceOrder(ctx, withKey)
			return err
		}},
		{"PruneIdempotencyKeys", all, func(s *Store) error {
			_, err := s.PruneIdempotencyKeys(ctx, time.Hour, 10)
			return err
		}},
	}
	for _, limit := range []string{"statement_timeout", "lock_timeout"} {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.RuntimeParams[limit] = "100ms"
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		s := New(pool, nil)
		for _, c := range calls {
			lock, err := admin.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lock.Exec(ctx, "LOCK TABLE "+c.locked+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			err = c.call(s)
			if err := lock.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if !errors.Is(err, shop.ErrUnavailable) {
				t.Errorf("%s with %s 100ms and %s locked = %v, want ErrUnavailable", c.name, limit, c.locked, err)
			}
		}
	}
}
