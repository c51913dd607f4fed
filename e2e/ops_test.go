package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
)

// kid returns the kid in a token's header.
func kid(t *testing.T, token string) string {
	t.Helper()
	head, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return h.Kid
}

// TestKeyRotation rotates account's signing key while everything runs: blog and shop learn the
// new key from the key bucket without a restart, and tokens signed before and after the rotation
// both verify.
func TestKeyRotation(t *testing.T) {
	s := newStack(t)
	_, before := register(t, s, "rot@example.com", "Rot")

	out, code := command(t, s, "account", "keys", "rotate")
	if code != 0 {
		t.Fatalf("account keys rotate: exit %d\n%s", code, out)
	}

	// The running account switches to the new key within its refresh interval.
	var after string
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = login(t, s, "rot@example.com", apitest.Password)
		if kid(t, after) != kid(t, before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("account still signs with kid %s 30s after the rotation", kid(t, before))
		}
		time.Sleep(250 * time.Millisecond)
	}

	jwks := apitest.Call(t, "GET", s.URL["account"]+"/.well-known/jwks.json", "", nil).Want(t, http.StatusOK, "jwks")
	if keys, _ := jwks.Body["keys"].([]any); len(keys) != 2 {
		t.Fatalf("jwks after a rotation = %s, want the old and the new key", jwks.Raw)
	}
	for name, tok := range map[string]string{"old": before, "new": after} {
		apitest.Call(t, "POST", s.URL["blog"]+"/v1/posts", tok, map[string]any{"title": name, "body": "signed with the " + name + " key"}).
			Want(t, http.StatusCreated, "blog accepts the "+name+" key")
		apitest.Call(t, "GET", s.URL["shop"]+"/v1/orders", tok, nil).Want(t, http.StatusOK, "shop accepts the "+name+" key")
	}
}
