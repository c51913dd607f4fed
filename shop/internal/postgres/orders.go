package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// PlaceOrder places o in one transaction: it takes every item from stock at its current price,
// all or nothing, records the order and returns it.
//
// With o.Idempotency set, the key is recorded with the order, in the same transaction. When
// o.UserID has used the key already, nothing is created: the order the key placed is read again
// and returned with replayed true when the request hash matches, and
// shop.ErrIdempotencyKeyReused is returned otherwise. A request racing another with the same key
// waits until the first commits (and replays its order) or rolls back (and places the order
// itself). An order that fails records no key, so only a placed order is ever replayed.
//
// It returns *shop.UnknownProductsError when items name products that do not exist,
// *shop.OutOfStockError for the first product (in id order) with too little stock, and
// shop.ErrUnavailable when the database cannot serve or contention outlasts the retries. Stock
// never goes below zero: each product is decremented only where enough remains.
//
// Locks are taken in one order: the idempotency key first, then the products in product id order.
// Requests with the same key therefore queue on the key before touching any stock, and two orders
// of the same products wait for each other instead of deadlocking.
func (s *Store) PlaceOrder(ctx context.Context, o shop.NewOrder) (order shop.Order, replayed bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		replayed = false
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new order id: %w", err)
		}
		if o.Idempotency != nil {
			placed, err := claimKey(ctx, tx, o.UserID, *o.Idempotency, id)
			if err != nil {
				return err
			}
			if placed != id {
				replayed = true
				order, err = readOrder(ctx, tx, placed)
				return err
			}
		}
		order, err = placeOrder(ctx, tx, id, o)
		return err
	})
	if err != nil {
		return shop.Order{}, false, err
	}
	return order, replayed, nil
}

// claimKey records the idempotency key for the order id about to be placed and returns id, or,
// when the user used the key already, returns the id of the order it placed then, or
// shop.ErrIdempotencyKeyReused when the request differs.
func claimKey(ctx context.Context, tx pgx.Tx, userID uuid.UUID, idem shop.Idempotency, id uuid.UUID) (uuid.UUID, error) {
	// A concurrent transaction holding the same key makes this wait until it ends. The order row
	// does not exist yet: the foreign key is checked at commit (migration 002).
	const insert = `INSERT INTO idempotency_keys (user_id, key, request_hash, order_id) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`
	tag, err := tx.Exec(ctx, insert, userID, idem.Key, idem.RequestHash, id)
	if err != nil {
		return uuid.Nil, fmt.Errorf("claim idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return id, nil
	}
	const q = `SELECT request_hash, order_id FROM idempotency_keys WHERE user_id = $1 AND key = $2`
	var (
		hash   string
		placed uuid.UUID
	)
	if err := tx.QueryRow(ctx, q, userID, idem.Key).Scan(&hash, &placed); err != nil {
		return uuid.Nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if hash != idem.RequestHash {
		return uuid.Nil, shop.ErrIdempotencyKeyReused
	}
	return placed, nil
}

// placeOrder takes the items from stock and inserts the order under id.
func placeOrder(ctx context.Context, tx pgx.Tx, id uuid.UUID, o shop.NewOrder) (shop.Order, error) {
	ids := make([]uuid.UUID, len(o.Items))
	for i, it := range o.Items {
		ids[i] = it.ProductID
	}
	if err := checkKnown(ctx, tx, ids); err != nil {
		return shop.Order{}, err
	}

	// Lock and decrement in product id order: two orders of the same products then wait for each
	// other instead of deadlocking. One round trip for all items.
	byID := slices.Clone(o.Items)
	slices.SortFunc(byID, func(a, b shop.Item) int { return bytes.Compare(a.ProductID[:], b.ProductID[:]) })
	const take = `UPDATE products SET stock = stock - $2, updated_at = now()
		WHERE id = $1 AND stock >= $2
		RETURNING price_cents`
	batch := &pgx.Batch{}
	for _, it := range byID {
		batch.Queue(take, it.ProductID, it.Quantity)
	}
	prices := make(map[uuid.UUID]int64, len(byID))
	res := tx.SendBatch(ctx, batch)
	for _, it := range byID {
		var price int64
		err := res.QueryRow().Scan(&price)
		if errors.Is(err, pgx.ErrNoRows) {
			_ = res.Close()
			return shop.Order{}, outOfStock(ctx, tx, it)
		}
		if err != nil {
			_ = res.Close()
			return shop.Order{}, fmt.Errorf("take product %s from stock: %w", it.ProductID, err)
		}
		prices[it.ProductID] = price
	}
	if err := res.Close(); err != nil {
		return shop.Order{}, fmt.Errorf("take from stock: %w", err)
	}

	order := shop.Order{ID: id, UserID: o.UserID, Status: shop.OrderPlaced, Items: make([]shop.Item, len(o.Items))}
	positions := make([]int32, len(o.Items))
	products := make([]uuid.UUID, len(o.Items))
	quantities := make([]int64, len(o.Items))
	itemPrices := make([]int64, len(o.Items))
	for i, it := range o.Items {
		it.PriceCents = prices[it.ProductID]
		order.Items[i] = it
		order.TotalCents += it.Quantity * it.PriceCents
		positions[i], products[i], quantities[i], itemPrices[i] = int32(i), it.ProductID, it.Quantity, it.PriceCents
	}
	const insertOrder = `INSERT INTO orders (id, user_id, total_cents, status) VALUES ($1, $2, $3, $4)
		RETURNING created_at`
	if err := tx.QueryRow(ctx, insertOrder, order.ID, order.UserID, order.TotalCents, order.Status).Scan(&order.CreatedAt); err != nil {
		return shop.Order{}, fmt.Errorf("insert order: %w", err)
	}
	order.CreatedAt = order.CreatedAt.UTC()
	const insertItems = `INSERT INTO order_items (order_id, position, product_id, quantity, price_cents)
		SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::bigint[], $5::bigint[])`
	if _, err := tx.Exec(ctx, insertItems, order.ID, positions, products, quantities, itemPrices); err != nil {
		return shop.Order{}, fmt.Errorf("insert items of order %s: %w", order.ID, err)
	}
	return order, nil
}

// checkKnown returns *shop.UnknownProductsError listing the ids that name no product. Products are
// never deleted, so what exists now still exists at commit.
func checkKnown(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	const q = `SELECT id FROM products WHERE id = ANY($1)`
	rows, err := tx.Query(ctx, q, ids)
	if err != nil {
		return fmt.Errorf("look up products: %w", err)
	}
	known, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return fmt.Errorf("look up products: %w", err)
	}
	var unknown []uuid.UUID
	for _, id := range ids {
		if !slices.Contains(known, id) {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		return &shop.UnknownProductsError{IDs: unknown}
	}
	return nil
}

// outOfStock describes the product that lacked stock for it.
func outOfStock(ctx context.Context, tx pgx.Tx, it shop.Item) error {
	e := &shop.OutOfStockError{ProductID: it.ProductID, Requested: it.Quantity}
	const q = `SELECT name, stock FROM products WHERE id = $1`
	if err := tx.QueryRow(ctx, q, it.ProductID).Scan(&e.Name, &e.Available); err != nil {
		return fmt.Errorf("read product %s: %w", it.ProductID, err)
	}
	return e
}

type orderRow struct {
	ID         uuid.UUID `db:"id"`
	UserID     uuid.UUID `db:"user_id"`
	TotalCents int64     `db:"total_cents"`
	Status     string    `db:"status"`
	CreatedAt  time.Time `db:"created_at"`
}

type itemRow struct {
	OrderID    uuid.UUID `db:"order_id"`
	ProductID  uuid.UUID `db:"product_id"`
	Quantity   int64     `db:"quantity"`
	PriceCents int64     `db:"price_cents"`
}

const orderColumns = `id, user_id, total_cents, status, created_at`

// Order returns the order with the given id, or shop.ErrNotFound.
func (s *Store) Order(ctx context.Context, id uuid.UUID) (shop.Order, error) {
	return readOrder(ctx, s.pool, id)
}

// readOrder reads the order with the given id on db (the pool, or the transaction of a replay), or
// returns shop.ErrNotFound.
func readOrder(ctx context.Context, db querier, id uuid.UUID) (shop.Order, error) {
	const q = `SELECT ` + orderColumns + ` FROM orders WHERE id = $1`
	orders, err := readOrders(ctx, db, q, id)
	if err != nil {
		return shop.Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	if len(orders) == 0 {
		return shop.Order{}, fmt.Errorf("order %s: %w", id, shop.ErrNotFound)
	}
	return orders[0], nil
}

// Orders returns a page of the orders of userID (of every user when userID is uuid.Nil), newest
// first, and the cursor of the next page (nil on the last page).
func (s *Store) Orders(ctx context.Context, userID uuid.UUID, page shop.Page) ([]shop.Order, *shop.Cursor, error) {
	const (
		all = `SELECT ` + orderColumns + ` FROM orders
			WHERE (created_at, id) < ($1, $2)
			ORDER BY created_at DESC, id DESC
			LIMIT $3`
		users = `SELECT ` + orderColumns + ` FROM orders
			WHERE user_id = $4 AND (created_at, id) < ($1, $2)
			ORDER BY created_at DESC, id DESC
			LIMIT $3`
	)
	before, beforeID := position(page.After, pgtype.Infinity, uuid.Max)
	var (
		orders []shop.Order
		err    error
	)
	if userID == uuid.Nil {
		orders, err = readOrders(ctx, s.pool, all, before, beforeID, page.Limit+1)
	} else {
		orders, err = readOrders(ctx, s.pool, users, before, beforeID, page.Limit+1, userID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", err)
	}
	var next *shop.Cursor
	if len(orders) > page.Limit {
		orders = orders[:page.Limit]
		last := orders[len(orders)-1]
		next = &shop.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return orders, next, nil
}

// readOrders runs q on db, where q selects orderColumns, and fills in the items of the orders it
// finds. Orders never change once placed, so the two reads need no transaction of their own.
func readOrders(ctx context.Context, db querier, q string, args ...any) ([]shop.Order, error) {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, dbError(err)
	}
	ors, err := pgx.CollectRows(rows, pgx.RowToStructByName[orderRow])
	if err != nil {
		return nil, dbError(err)
	}
	if len(ors) == 0 {
		return []shop.Order{}, nil
	}
	ids := make([]uuid.UUID, len(ors))
	index := make(map[uuid.UUID]int, len(ors))
	orders := make([]shop.Order, len(ors))
	for i, r := range ors {
		ids[i] = r.ID
		index[r.ID] = i
		orders[i] = shop.Order{ID: r.ID, UserID: r.UserID, TotalCents: r.TotalCents, Status: r.Status, CreatedAt: r.CreatedAt.UTC(), Items: []shop.Item{}}
	}
	const qi = `SELECT order_id, product_id, quantity, price_cents FROM order_items
		WHERE order_id = ANY($1) ORDER BY order_id, position`
	rows, err = db.Query(ctx, qi, ids)
	if err != nil {
		return nil, fmt.Errorf("items: %w", dbError(err))
	}
	irs, err := pgx.CollectRows(rows, pgx.RowToStructByName[itemRow])
	if err != nil {
		return nil, fmt.Errorf("items: %w", dbError(err))
	}
	for _, r := range irs {
		o := &orders[index[r.OrderID]]
		o.Items = append(o.Items, shop.Item{ProductID: r.ProductID, Quantity: r.Quantity, PriceCents: r.PriceCents})
	}
	return orders, nil
}

// PruneIdempotencyKeys deletes up to limit idempotency keys older than age and returns how many it
// deleted. Rows that a running transaction holds are skipped, so pruning never waits on an order.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, age time.Duration, limit int) (int64, error) {
	const q = `DELETE FROM idempotency_keys WHERE ctid IN (
		SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::bigint * interval '1 microsecond'
		LIMIT $2 FOR UPDATE SKIP LOCKED)`
	tag, err := s.pool.Exec(ctx, q, age.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", dbError(err))
	}
	return tag.RowsAffected(), nil
}
