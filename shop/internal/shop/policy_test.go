package shop_test

import (
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/shop/internal/shop"
	"github.com/google/uuid"
)

func TestPolicy(t *testing.T) {
	owner := events.User{ID: uuid.New(), Roles: []string{events.RoleUser}}
	o := shop.Order{ID: uuid.New(), UserID: owner.ID}
	other := func(roles ...string) events.User {
		return events.User{ID: uuid.New(), Roles: events.NormalizeRoles(roles)}
	}
	type may struct{ manageCatalogue, seeOrder, listOwnersOrders, listAllOrders bool }
	tests := []struct {
		name string
		user events.User
		want may
	}{
		{"owner of the order", owner, may{seeOrder: true, listOwnersOrders: true}},
		{"another user", other(), may{}},
		{"moderator", other(events.RoleModerator), may{}},
		{"admin", other(events.RoleAdmin), may{true, true, true, true}},
		{"unknown role", other("shopkeeper"), may{}},
		{"no roles", events.User{ID: uuid.New()}, may{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := may{
				manageCatalogue:  shop.CanManageCatalogue(tt.user),
				seeOrder:         shop.CanSeeOrder(tt.user, o),
				listOwnersOrders: shop.CanListOrdersOf(tt.user, owner.ID),
				listAllOrders:    shop.CanListAllOrders(tt.user),
			}
			if got != tt.want {
				t.Errorf("may %+v, want %+v", got, tt.want)
			}
			// Everyone may list their own orders.
			if !shop.CanListOrdersOf(tt.user, tt.user.ID) {
				t.Errorf("CanListOrdersOf(own id) = false, want true")
			}
		})
	}
}
