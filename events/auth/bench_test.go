package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/google/uuid"
)

// BenchmarkRequire times the middleware around a handler that does nothing, for a token seen
// before (cached) and with the cache off (every token verified), with Users a map.
func BenchmarkRequire(b *testing.B) {
	iss := authtest.NewIssuer(b)
	keys, err := auth.NewKeySet(iss.JWKS(b))
	if err != nil {
		b.Fatal(err)
	}
	u := authtest.NewUser()
	users := &fakeUsers{users: map[uuid.UUID]events.User{u.ID: u}}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog"}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+iss.Token(b, u))
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, bc := range []struct {
		name string
		size int
	}{{"cached", auth.DefaultTokenCacheSize}, {"uncached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			h := auth.New(v, users, nil, auth.WithTokenCache(bc.size)).Require(noop)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
		})
	}
}
