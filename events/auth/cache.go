package auth

import (
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultTokenCacheSize is how many verified tokens an Authenticator remembers by default: a few
// MiB at most (a token is under 1 KiB), enough for every client of a busy instance within a token's
// lifetime.
const DefaultTokenCacheSize = 10_000

// verified is what a verification established about a token, all a request needs of it again.
type verified struct {
	subject uuid.UUID
	ver     int64
	exp     time.Time
	// gen is the key set's generation the token was verified under.
	gen uint64
}

// tokenCache remembers tokens that verified, keyed by the whole token, so that a client's next
// request with the same token costs a map lookup instead of a signature check (tens of µs). An
// entry counts only before the token's exp and under the key-set generation it was verified in:
// a rotation that drops the token's kid, or any other change of the key set, sends the token
// through Verify again. Only the signature and claims are cached; who the user is and what they
// may do is read afresh on every request. Safe for concurrent use; the least recently used entry
// goes first when it is full.
type tokenCache struct {
	entries *lru.Cache[string, verified]
	keys    *KeySet
	now     func() time.Time
}

// newTokenCache returns a cache of size entries for tokens verified with keys; nil when size < 1
// (no cache: every token is verified).
func newTokenCache(size int, keys *KeySet, now func() time.Time) *tokenCache {
	if size < 1 || keys == nil {
		return nil
	}
	entries, err := lru.New[string, verified](size)
	if err != nil { // only for a size below 1
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &tokenCache{entries: entries, keys: keys, now: now}
}

// get returns what was established about token, if it verified under the current key set and has
// not expired.
func (c *tokenCache) get(token string) (verified, bool) {
	v, ok := c.entries.Get(token)
	if !ok {
		return verified{}, false
	}
	if v.gen != c.keys.gen() || !c.now().Before(v.exp) {
		c.entries.Remove(token)
		return verified{}, false
	}
	return v, true
}

// add remembers token as t, established by a verification that began under key-set generation
// t.gen. A token past its exp, accepted within the leeway only, is not remembered: Verify judges
// it every time.
func (c *tokenCache) add(token string, t verified) {
	if !c.now().Before(t.exp) {
		return
	}
	// A copy: token may be a slice of a larger header the cache should not keep alive.
	c.entries.Add(strings.Clone(token), t)
}
