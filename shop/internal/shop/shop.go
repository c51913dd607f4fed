// Package shop is the vocabulary of the shop service: products, orders, their limits, and the
// errors the store reports. It knows nothing of HTTP or SQL.
package shop

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Limits of what a client may ask for. They keep every total well inside int64
// (MaxItems × MaxQuantity × MaxPriceCents < 2^63) and match the database's checks.
const (
	MaxNameLength = 200            // characters of a product name
	MaxPriceCents = 10_000_000_000 // 100 million in the currency's main unit
	MaxStock      = 1_000_000_000
	MaxItems      = 50 // items of one order
	MaxQuantity   = 10_000
	// MaxIdempotencyKeyLength bounds an Idempotency-Key, in bytes.
	MaxIdempotencyKeyLength = 255
)

// OrderPlaced is the only status of an order.
const OrderPlaced = "placed"

// Product is an item of the catalogue.
type Product struct {
	ID         uuid.UUID
	Name       string
	PriceCents int64
	Stock      int64
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// NewProduct is what an admin gives to add a product.
type NewProduct struct {
	Name       string
	PriceCents int64
	Stock      int64
}

// ProductPatch changes the fields that are set and leaves the others as they are.
type ProductPatch struct {
	Name       *string
	PriceCents *int64
	Stock      *int64
}

// Empty reports whether the patch changes nothing.
func (p ProductPatch) Empty() bool {
	return p.Name == nil && p.PriceCents == nil && p.Stock == nil
}

// Item is a line of an order: a product and how many of it, at the price it had when the order was
// placed.
type Item struct {
	ProductID  uuid.UUID
	Quantity   int64
	PriceCents int64 // set by the store; ignored in a NewOrder
}

// Order is a placed order.
type Order struct {
	ID         uuid.UUID
	UserID     uuid.UUID
	Items      []Item
	TotalCents int64
	Status     string
	CreatedAt  time.Time
}

// NewOrder is a user's request to place an order.
type NewOrder struct {
	UserID uuid.UUID
	Items  []Item // distinct products, in the order the client listed them
	// Idempotency, when set, makes a retry of the same request return the order it placed first
	// instead of placing another.
	Idempotency *Idempotency
}

// Idempotency identifies a request that a client may retry: Key is unique per user, RequestHash
// is a digest of the canonical request, so that a key reused for another request is noticed.
type Idempotency struct {
	Key         string
	RequestHash string
}

// Cursor is the position after which a page of a list starts: the sort key of the last item seen.
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// Page asks for at most Limit items after After (from the start when nil).
type Page struct {
	Limit int
	After *Cursor
}

// Errors of the store.
var (
	// ErrNotFound means the product or order does not exist.
	ErrNotFound = errors.New("not found")
	// ErrIdempotencyKeyReused means the user sent the idempotency key before with another request.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with another request")
	// ErrUnavailable means the database cannot serve right now (down, overloaded, too slow, or
	// contention that outlasted the retries); the client may retry.
	ErrUnavailable = errors.New("database unavailable")
)

// OutOfStockError means an order asked for more of a product than is in stock; nothing was
// reserved.
type OutOfStockError struct {
	ProductID uuid.UUID
	Name      string
	Requested int64
	Available int64
}

func (e *OutOfStockError) Error() string {
	return fmt.Sprintf("product %s (%s) is out of stock: %d requested, %d available", e.ProductID, e.Name, e.Requested, e.Available)
}

// UnknownProductsError means an order named products that do not exist; nothing was reserved.
type UnknownProductsError struct {
	IDs []uuid.UUID
}

func (e *UnknownProductsError) Error() string {
	if len(e.IDs) == 0 {
		return "unknown products"
	}
	return fmt.Sprintf("%d unknown products, first %s", len(e.IDs), e.IDs[0])
}
