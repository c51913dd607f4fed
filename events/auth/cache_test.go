package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// cacheFixture is an authenticator with a token cache, a clock the test moves, and a counter of
// the cache's lookups.
type cacheFixture struct {
	iss   *authtest.Issuer
	keys  *auth.KeySet
	users *fakeUsers
	now   atomic.Pointer[time.Time]
	reg   *prometheus.Registry
	h     http.Handler
}

func newCacheFixture(t *testing.T, size int, us ...events.User) *cacheFixture {
	t.Helper()
	f := &cacheFixture{iss: authtest.NewIssuer(t), users: &fakeUsers{users: map[uuid.UUID]events.User{}}, reg: prometheus.NewRegistry()}
	for _, u := range us {
		f.users.users[u.ID] = u
	}
	keys, err := auth.NewKeySet(f.iss.JWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	f.keys = keys
	start := time.Now()
	f.now.Store(&start)
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog", Now: func() time.Time { return *f.now.Load() }}
	f.h = auth.New(v, f.users, nil, auth.WithTokenCache(size), auth.WithMetrics(f.reg)).Require(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, _ := auth.UserFrom(r.Context())
			_ = json.NewEncoder(w).Encode(u)
		}))
	return f
}

// do sends a request with token and returns the status and the user the handler saw.
func (f *cacheFixture) do(t *testing.T, token string) (int, events.User) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	var u events.User
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil {
			t.Fatalf("decode user: %v", err)
		}
	}
	return rec.Code, u
}

// lookups returns the count of auth_token_cache_lookups_total with the label result.
func (f *cacheFixture) lookups(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "auth_token_cache_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func (f *cacheFixture) advance(d time.Duration) {
	next := f.now.Load().Add(d)
	f.now.Store(&next)
}

// A token seen before is not verified again, but the user behind it is read on every request:
// the cache holds what the signature proves, never what the user may do.
func TestTokenCacheHitReadsUserAfresh(t *testing.T) {
	t.Parallel()
	u := authtest.NewUser(events.RoleAdmin)
	f := newCacheFixture(t, 10, u)
	tok := f.iss.Token(t, u)

	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("first request: status %d, want 200", code)
	}
	revoked := u
	revoked.Roles, revoked.Version = []string{events.RoleUser}, u.Version+1
	f.users.users[u.ID] = revoked
	code, got := f.do(t, tok)
	if code != http.StatusOK || len(got.Roles) != 1 || got.Roles[0] != events.RoleUser {
		t.Fatalf("second request: status %d, roles %v; want 200 with the roles Users has now", code, got.Roles)
	}
	if hits, misses := f.lookups(t, "hit"), f.lookups(t, "miss"); hits != 1 || misses != 1 {
		t.Errorf("cache lookups: %v hits, %v misses; want 1 and 1", hits, misses)
	}

	disabled := revoked
	disabled.Status, disabled.Version = events.StatusDisabled, revoked.Version+1
	f.users.users[u.ID] = disabled
	if code, _ := f.do(t, tok); code != http.StatusForbidden {
		t.Errorf("after the user is disabled: status %d, want 403 even for a cached token", code)
	}
}

// A cached token stops counting at its exp; past the leeway it is refused like any expired token.
func TestTokenCacheHonoursExp(t *testing.T) {
	t.Parallel()
	u := authtest.NewUser()
	f := newCacheFixture(t, 10, u)
	tok := f.iss.Token(t, u) // expires after the issuer's TTL

	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("fresh token: status %d, want 200", code)
	}
	f.advance(f.iss.TTL - time.Second)
	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("a second before exp: status %d, want 200", code)
	}
	f.advance(time.Second + auth.Leeway + time.Second)
	if code, _ := f.do(t, tok); code != http.StatusUnauthorized {
		t.Errorf("past exp and the leeway: status %d, want 401", code)
	}
	if hits := f.lookups(t, "hit"); hits != 1 {
		t.Errorf("cache hits = %v, want 1 (the request before exp)", hits)
	}
}

// A key-set change sends every cached token through verification again: one whose kid was
// dropped is refused at once, one whose key stays is accepted.
func TestTokenCacheForgetsOnKeyChange(t *testing.T) {
	t.Parallel()
	u := authtest.NewUser()
	f := newCacheFixture(t, 10, u)
	tok := f.iss.Token(t, u)
	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("before the change: status %d, want 200", code)
	}

	next := authtest.NewIssuer(t)
	both, err := json.Marshal(auth.JWKS{Keys: []auth.JWK{f.iss.JWK, next.JWK}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.keys.Replace(both); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("after a key is added: status %d, want 200", code)
	}
	if err := f.keys.Replace(next.JWKS(t)); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.do(t, tok); code != http.StatusUnauthorized {
		t.Errorf("after the token's kid is dropped: status %d, want 401", code)
	}
	if hits, misses := f.lookups(t, "hit"), f.lookups(t, "miss"); hits != 0 || misses != 3 {
		t.Errorf("cache lookups: %v hits, %v misses; want 0 and 3 (every request after a change verifies)", hits, misses)
	}
}

// The cache is keyed by the whole token: a token that differs in any byte is verified on its own.
func TestTokenCacheKeyedByWholeToken(t *testing.T) {
	t.Parallel()
	u := authtest.NewUser()
	f := newCacheFixture(t, 10, u)
	tok := f.iss.Token(t, u)
	if code, _ := f.do(t, tok); code != http.StatusOK {
		t.Fatalf("valid token: status %d, want 200", code)
	}
	last := tok[len(tok)-1]
	tampered := tok[:len(tok)-1] + string(map[bool]byte{true: 'B', false: 'A'}[last == 'A'])
	if code, _ := f.do(t, tampered); code != http.StatusUnauthorized {
		t.Errorf("token with its last byte changed: status %d, want 401", code)
	}
}

// The cache holds at most its size; the least recently used token is verified again.
func TestTokenCacheBounded(t *testing.T) {
	t.Parallel()
	us := []events.User{authtest.NewUser(), authtest.NewUser(), authtest.NewUser()}
	f := newCacheFixture(t, 2, us...)
	var toks []string
	for _, u := range us {
		toks = append(toks, f.iss.Token(t, u))
	}
	for _, tok := range append(toks, toks[2], toks[0]) {
		if code, _ := f.do(t, tok); code != http.StatusOK {
			t.Fatalf("status %d, want 200", code)
		}
	}
	// 0, 1, 2 miss (2 evicts 0); 2 hits; 0 misses again.
	if hits, misses := f.lookups(t, "hit"), f.lookups(t, "miss"); hits != 1 || misses != 4 {
		t.Errorf("cache lookups: %v hits, %v misses; want 1 and 4", hits, misses)
	}
}

// With the cache off every token is verified.
func TestTokenCacheOff(t *testing.T) {
	t.Parallel()
	u := authtest.NewUser()
	f := newCacheFixture(t, 0, u)
	tok := f.iss.Token(t, u)
	for range 3 {
		if code, _ := f.do(t, tok); code != http.StatusOK {
			t.Fatalf("status %d, want 200", code)
		}
	}
	if hits, misses := f.lookups(t, "hit"), f.lookups(t, "miss"); hits != 0 || misses != 0 {
		t.Errorf("cache lookups with no cache: %v hits, %v misses; want none", hits, misses)
	}
}
