package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

type productRow struct {
	ID         uuid.UUID `db:"id"`
	Name       string    `db:"name"`
	PriceCents int64     `db:"price_cents"`
	Stock      int64     `db:"stock"`
	CreatedAt  time.Time `db:"created_at"`
	UpdatedAt  time.Time `db:"updated_at"`
}

func (r productRow) product() shop.Product {
	return shop.Product{
		ID:         r.ID,
		Name:       r.Name,
		PriceCents: r.PriceCents,
		Stock:      r.Stock,
		CreatedAt:  r.CreatedAt.UTC(),
		UpdatedAt:  r.UpdatedAt.UTC(),
	}
}

const productColumns = `id, name, price_cents, stock, created_at, updated_at`

// CreateProduct adds a product and returns it.
func (s *Store) CreateProduct(ctx context.Context, np shop.NewProduct) (shop.Product, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return shop.Product{}, fmt.Errorf("new product id: %w", err)
	}
	const q = `INSERT INTO products (id, name, price_cents, stock) VALUES ($1, $2, $3, $4)
		RETURNING ` + productColumns
	p, err := collectProduct(s.pool.Query(ctx, q, id, np.Name, np.PriceCents, np.Stock))
	if err != nil {
		return shop.Product{}, fmt.Errorf("insert product: %w", dbError(err))
	}
	return p, nil
}

// Product returns the product with the given id, or shop.ErrNotFound.
func (s *Store) Product(ctx context.Context, id uuid.UUID) (shop.Product, error) {
	const q = `SELECT ` + productColumns + ` FROM products WHERE id = $1`
	p, err := collectProduct(s.pool.Query(ctx, q, id))
	if err != nil {
		return shop.Product{}, fmt.Errorf("product %s: %w", id, dbError(err))
	}
	return p, nil
}

// UpdateProduct applies patch to the product with the given id and returns it, or
// shop.ErrNotFound. An empty patch changes nothing, not even updated_at.
func (s *Store) UpdateProduct(ctx context.Context, id uuid.UUID, patch shop.ProductPatch) (shop.Product, error) {
	if patch.Empty() {
		return s.Product(ctx, id)
	}
	const q = `UPDATE products SET
			name        = COALESCE($2, name),
			price_cents = COALESCE($3, price_cents),
			stock       = COALESCE($4, stock),
			updated_at  = now()
		WHERE id = $1
		RETURNING ` + productColumns
	p, err := collectProduct(s.pool.Query(ctx, q, id, patch.Name, patch.PriceCents, patch.Stock))
	if err != nil {
		return shop.Product{}, fmt.Errorf("update product %s: %w", id, dbError(err))
	}
	return p, nil
}

// Products returns a page of the catalogue, oldest first, and the cursor of the next page (nil on
// the last page).
func (s *Store) Products(ctx context.Context, page shop.Page) ([]shop.Product, *shop.Cursor, error) {
	const q = `SELECT ` + productColumns + ` FROM products
		WHERE (created_at, id) > ($1, $2)
		ORDER BY created_at, id
		LIMIT $3`
	after, afterID := position(page.After, pgtype.NegativeInfinity, uuid.Nil)
	rows, err := s.pool.Query(ctx, q, after, afterID, page.Limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("list products: %w", dbError(err))
	}
	prs, err := pgx.CollectRows(rows, pgx.RowToStructByName[productRow])
	if err != nil {
		return nil, nil, fmt.Errorf("list products: %w", dbError(err))
	}
	var next *shop.Cursor
	if len(prs) > page.Limit {
		prs = prs[:page.Limit]
		last := prs[len(prs)-1]
		next = &shop.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	ps := make([]shop.Product, len(prs))
	for i, r := range prs {
		ps[i] = r.product()
	}
	return ps, next, nil
}

// collectProduct reads the one product of rows, or shop.ErrNotFound.
func collectProduct(rows pgx.Rows, err error) (shop.Product, error) {
	if err != nil {
		return shop.Product{}, err
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[productRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return shop.Product{}, shop.ErrNotFound
	}
	if err != nil {
		return shop.Product{}, err
	}
	return r.product(), nil
}

// position returns the sort key after which a page starts: the cursor's, or with none a key
// beyond every row's in the order of the list (one query, and an index scan, for every page).
func position(c *shop.Cursor, start pgtype.InfinityModifier, startID uuid.UUID) (pgtype.Timestamptz, uuid.UUID) {
	if c == nil {
		return pgtype.Timestamptz{InfinityModifier: start, Valid: true}, startID
	}
	return pgtype.Timestamptz{Time: c.CreatedAt, Valid: true}, c.ID
}
