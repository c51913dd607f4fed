package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authmesh/events"
	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
)

// order is the JSON of an order.
type order struct {
	ID         uuid.UUID   `json:"id"`
	UserID     uuid.UUID   `json:"user_id"`
	Items      []orderItem `json:"items"`
	TotalCents int64       `json:"total_cents"`
	Status     string      `json:"status"`
	CreatedAt  time.Time   `json:"created_at"`
}

type orderItem struct {
	ProductID  uuid.UUID `json:"product_id"`
	Quantity   int64     `json:"quantity"`
	PriceCents int64     `json:"price_cents"`
}

func toOrder(o shop.Order) order {
	items := make([]orderItem, len(o.Items))
	for i, it := range o.Items {
		items[i] = orderItem{ProductID: it.ProductID, Quantity: it.Quantity, PriceCents: it.PriceCents}
	}
	return order{ID: o.ID, UserID: o.UserID, Items: items, TotalCents: o.TotalCents, Status: o.Status, CreatedAt: o.CreatedAt.UTC()}
}

// placeOrderRequest is the body of POST /v1/orders. product_id is a string so that a malformed one
// is reported per item (422) rather than as malformed JSON (400).
type placeOrderRequest struct {
	Items []placeOrderItem `json:"items"`
}

type placeOrderItem struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// Valid checks the number of items, each product id and quantity, and that no product is listed
// twice.
func (req placeOrderRequest) Valid() []web.FieldError {
	if len(req.Items) < 1 || len(req.Items) > shop.MaxItems {
		return []web.FieldError{{Field: "items", Message: fmt.Sprintf("must list from 1 to %d items", shop.MaxItems)}}
	}
	var errs []web.FieldError
	seen := make(map[uuid.UUID]int, len(req.Items))
	for i, it := range req.Items {
		field := fmt.Sprintf("items[%d].", i)
		id, err := uuid.Parse(it.ProductID)
		switch {
		case err != nil:
			errs = append(errs, web.FieldError{Field: field + "product_id", Message: "must be a product id (UUID)"})
		case seen[id] > 0:
			errs = append(errs, web.FieldError{Field: field + "product_id", Message: fmt.Sprintf("repeats the product of items[%d]; order it once with the total quantity", seen[id]-1)})
		default:
			seen[id] = i + 1
		}
		if it.Quantity < 1 || it.Quantity > shop.MaxQuantity {
			errs = append(errs, web.FieldError{Field: field + "quantity", Message: fmt.Sprintf("must be from 1 to %d", shop.MaxQuantity)})
		}
	}
	return errs
}

// items returns the items of a valid request, with canonical product ids.
func (req placeOrderRequest) items() []shop.Item {
	items := make([]shop.Item, len(req.Items))
	for i, it := range req.Items {
		items[i] = shop.Item{ProductID: uuid.MustParse(it.ProductID), Quantity: it.Quantity}
	}
	return items
}

// requestHash is the digest of the canonical form of a valid request: its items re-encoded, so
// that spacing, key order or the spelling of a UUID do not make a retry look like another request.
func requestHash(items []shop.Item) (string, error) {
	type item struct {
		ProductID uuid.UUID `json:"product_id"`
		Quantity  int64     `json:"quantity"`
	}
	canon := make([]item, len(items))
	for i, it := range items {
		canon[i] = item{ProductID: it.ProductID, Quantity: it.Quantity}
	}
	b, err := json.Marshal(canon)
	if err != nil {
		return "", fmt.Errorf("canonical order request: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// idempotencyKey reads the optional Idempotency-Key header: absent is "", and a key that is empty,
// repeated, longer than 255 bytes, not UTF-8 or with control characters is a 400.
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", nil
	}
	bad := func(why string) error { return web.BadRequest("the Idempotency-Key header " + why) }
	switch key := vals[0]; {
	case len(vals) > 1:
		return "", bad("must be sent once")
	case key == "" || len(key) > shop.MaxIdempotencyKeyLength:
		return "", bad(fmt.Sprintf("must be 1 to %d bytes", shop.MaxIdempotencyKeyLength))
	case !utf8.ValidString(key) || strings.ContainsFunc(key, unicode.IsControl):
		return "", bad("must be printable UTF-8")
	default:
		return key, nil
	}
}

func handlePlaceOrder(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		key, err := idempotencyKey(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req placeOrderRequest
		if err := web.Decode(w, r, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		no := shop.NewOrder{UserID: u.ID, Items: req.items()}
		if key != "" {
			hash, err := requestHash(no.Items)
			if err != nil {
				writeError(w, r, log, err)
				return
			}
			no.Idempotency = &shop.Idempotency{Key: key, RequestHash: hash}
		}
		o, replayed, err := store.PlaceOrder(r.Context(), no)
		if unknown, ok := errors.AsType[*shop.UnknownProductsError](err); ok {
			err = web.Invalid(unknownItems(no.Items, unknown.IDs))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		// A replay renders the order it reads again as the first response rendered it when placed:
		// the order never changes, so the body is the same, byte for byte.
		h := w.Header()
		h.Set("Location", "/v1/orders/"+o.ID.String())
		if replayed {
			h.Set("Idempotent-Replayed", "true")
		}
		web.Encode(w, http.StatusCreated, toOrder(o))
	})
}

// unknownItems names the items whose product is among unknown.
func unknownItems(items []shop.Item, unknown []uuid.UUID) []web.FieldError {
	var errs []web.FieldError
	for i, it := range items {
		for _, id := range unknown {
			if it.ProductID == id {
				errs = append(errs, web.FieldError{Field: fmt.Sprintf("items[%d].product_id", i), Message: "names no product"})
			}
		}
	}
	return errs
}

// handleListOrders lists orders, newest first: whose, ordersOwner decides.
func handleListOrders(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page, err := parsePage(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		owner, err := ordersOwner(r, u)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		orders, next, err := store.Orders(r.Context(), owner, page)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		web.Encode(w, http.StatusOK, web.NewList(orders, (*web.Cursor)(next), toOrder))
	})
}

// ordersOwner returns whose orders the request lists: those of ?user_id= when u may list them
// (shop.CanListOrdersOf), else 403; without it, everyone's (uuid.Nil) to whoever may list all
// orders, and u's own to anyone else.
func ordersOwner(r *http.Request, u events.User) (uuid.UUID, error) {
	q := r.URL.Query()
	if !q.Has("user_id") {
		if shop.CanListAllOrders(u) {
			return uuid.Nil, nil
		}
		return u.ID, nil
	}
	id, err := uuid.Parse(q.Get("user_id"))
	if err != nil {
		return uuid.Nil, web.BadRequest("user_id must be a UUID")
	}
	if !shop.CanListOrdersOf(u, id) {
		return uuid.Nil, web.Forbidden("only an admin may list another user's orders")
	}
	return id, nil
}

// handleGetOrder shows an order to whoever may see it (shop.CanSeeOrder); to anyone else it does
// not exist.
func handleGetOrder(log *slog.Logger, store *postgres.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := user(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		id, err := web.PathID(r, "order")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		o, err := store.Order(r.Context(), id)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if !shop.CanSeeOrder(u, o) {
			writeError(w, r, log, web.NotFound("no such order"))
			return
		}
		web.Encode(w, http.StatusOK, toOrder(o))
	})
}
