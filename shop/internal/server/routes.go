package server

import (
	"log/slog"
	"net/http"

	"github.com/authmesh/events/web"
	"github.com/authmesh/shop/internal/postgres"
)

// addRoutes is the whole API of the shop. Who may do what is package shop's policy (policy.go).
func addRoutes(mux *http.ServeMux, log *slog.Logger, store *postgres.Store, authn Authenticator) {
	mux.Handle("POST /v1/products", authn.Require(requireCatalogueManager(log, handleCreateProduct(log, store))))
	mux.Handle("GET /v1/products", handleListProducts(log, store))
	mux.Handle("GET /v1/products/{id}", handleGetProduct(log, store))
	mux.Handle("PATCH /v1/products/{id}", authn.Require(requireCatalogueManager(log, handleUpdateProduct(log, store))))

	mux.Handle("POST /v1/orders", authn.Require(handlePlaceOrder(log, store)))
	mux.Handle("GET /v1/orders", authn.Require(handleListOrders(log, store)))
	mux.Handle("GET /v1/orders/{id}", authn.Require(handleGetOrder(log, store)))

	mux.Handle("GET /openapi.json", web.Document(openAPIDocument))
}
