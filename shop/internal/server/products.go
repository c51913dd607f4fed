package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
)

// product is the JSON of a product.
type product struct {
	ID         uuid.UUID `json:"id"`
	Name       string    `json:"name"`
	PriceCents int64     `json:"price_cents"`
	Stock      int64     `json:"stock"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func toProduct(p shop.Product) product {
	return product{
		ID:         p.ID,
		Name:       p.Name,
		PriceCents: p.PriceCents,
		Stock:      p.Stock,
		CreatedAt:  p.CreatedAt.UTC(),
		UpdatedAt:  p.UpdatedAt.UTC(),
	}
}

func handleCreateProduct(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req createProductRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.CreateProduct(r.Context(), shop.NewProduct{Name: *req.Name, PriceCents: *req.PriceCents, Stock: *req.Stock})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.Header().Set("Location", "/v1/products/"+p.ID.String())
		web.Encode(w, http.StatusCreated, toProduct(p))
	})
}

func handleListProducts(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, err := parsePage(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		ps, next, err := store.Products(r.Context(), page)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, web.NewList(ps, (*web.Cursor)(next), toProduct))
	})
}

func handleGetProduct(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := web.PathID(r, "product")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		p, err := store.Product(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toProduct(p))
	})
}

func handleUpdateProduct(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := web.PathID(r, "product")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req productRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		patch := shop.ProductPatch{Name: req.Name, PriceCents: req.PriceCents, Stock: req.Stock}
		p, err := store.UpdateProduct(r.Context(), id, patch)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, toProduct(p))
	})
}

// productRequest is the body of a create (every field required) or a patch (any field); an
// absent field and null are the same.
type productRequest struct {
	Name       *string `json:"name"`
	PriceCents *int64  `json:"price_cents"`
	Stock      *int64  `json:"stock"`
}

// Valid checks the fields that are set.
func (req productRequest) Valid() []web.FieldError {
	var errs []web.FieldError
	if req.Name != nil {
		if msg := checkName(*req.Name); msg != "" {
			errs = append(errs, web.FieldError{Field: "name", Message: msg})
		}
	}
	if req.PriceCents != nil && (*req.PriceCents < 1 || *req.PriceCents > shop.MaxPriceCents) {
		errs = append(errs, web.FieldError{Field: "price_cents", Message: fmt.Sprintf("must be from 1 to %d", int64(shop.MaxPriceCents))})
	}
	if req.Stock != nil && (*req.Stock < 0 || *req.Stock > shop.MaxStock) {
		errs = append(errs, web.FieldError{Field: "stock", Message: fmt.Sprintf("must be from 0 to %d", shop.MaxStock)})
	}
	return errs
}

// createProductRequest is the body of a create: every field of productRequest is required.
type createProductRequest productRequest

// Valid checks that every field is set and valid.
func (req createProductRequest) Valid() []web.FieldError {
	errs := productRequest(req).Valid()
	if req.Name == nil {
		errs = append(errs, web.FieldError{Field: "name", Message: "is required"})
	}
	if req.PriceCents == nil {
		errs = append(errs, web.FieldError{Field: "price_cents", Message: "is required"})
	}
	if req.Stock == nil {
		errs = append(errs, web.FieldError{Field: "stock", Message: "is required"})
	}
	return errs
}

// checkName returns what is wrong with a product name, or "".
func checkName(name string) string {
	n := utf8.RuneCountInString(name)
	switch {
	case strings.TrimSpace(name) == "":
		return "must not be blank"
	case n > shop.MaxNameLength:
		return fmt.Sprintf("must be at most %d characters", shop.MaxNameLength)
	case strings.ContainsFunc(name, unicode.IsControl):
		return "must not contain control characters"
	}
	return ""
}
