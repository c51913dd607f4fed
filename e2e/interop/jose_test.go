package interop

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/google/go-cmp/cmp"
)

// rotationTimeout bounds the wait for account to sign with a new key: its instances re-read the
// keys every 10 s (docs/operations.md, "account keys rotate").
const rotationTimeout = 30 * time.Second

// TestJoseVerifiesAccountTokens verifies account's access tokens with jose, configured from the
// discovery document as an outside verifier would be: a fresh login's token verifies with the
// subject, issuer and audiences account gave it; after `account keys rotate` a new login's token
// (a kid the verifier has not seen) and the old token both verify, with the same key set, which
// jose fetched again; a verifier started afresh accepts both too; and the token is refused for a
// foreign audience, with a payload character changed, signed by another key under account's kid,
// and re-signed with HS256 (the public key as the HMAC secret) or with no signature at all.
func TestJoseVerifiesAccountTokens(t *testing.T) {
	node := needJose(t)
	s := stack.ForTest(t, stack.Options{BinDir: binDir})
	account := s.URL["account"]

	// The discovery document is what the verifier is configured from.
	disc := apitest.Call(t, "GET", account+"/.well-known/openid-configuration", "", nil).
		Want(t, http.StatusOK, "openid-configuration")
	issuer, jwksURI := disc.Str("issuer"), disc.Str("jwks_uri")
	if issuer == "" || jwksURI != account+"/.well-known/jwks.json" {
		t.Fatalf("openid-configuration = %s, want an issuer and jwks_uri %s/.well-known/jwks.json", disc.Raw, account)
	}

	id, before := apitest.Register(t, account, "jose@example.com", "Jose")
	oldKid := kid(t, before)

	// cooldown 0: jose fetches the set again at once on an unknown kid (its default waits 30 s
	// since the last fetch; see docs/gateways.md).
	v := startVerifier(t, node, jwksURI, issuer, "blog", "--cooldown-ms", "0")
	r := v.verify(t, before, "")
	wantVerified(t, "a fresh login's token", r, oldKid)
	if r.Claims.Sub != id || r.Claims.Iss != issuer || !slices.Equal(r.Claims.Aud, []string{"blog", "shop"}) {
		t.Errorf("claims = %+v, want sub %s, iss %s, aud [blog shop]", r.Claims, id, issuer)
	}
	if r.Claims.Exp <= r.Claims.Iat || r.Claims.Jti == "" || r.Claims.Ver != 1 || !slices.Contains(r.Claims.Roles, "user") {
		t.Errorf("claims = %+v, want exp after iat, a jti, ver 1 and role user", r.Claims)
	}
	if diff := cmp.Diff([]string{oldKid}, r.Kids); diff != "" {
		t.Errorf("key set jose fetched (-want +got):\n%s", diff)
	}
	wantVerified(t, "the token for shop", v.verify(t, before, "shop"), oldKid)

	// Refused: another audience, a changed payload, a forged signature, another algorithm.
	r = v.verify(t, before, "other")
	wantRefused(t, "the token for audience other", r, "ERR_JWT_CLAIM_VALIDATION_FAILED")
	if r.Claim != "aud" {
		t.Errorf("the token for audience other was refused on claim %q, want aud", r.Claim)
	}
	wantRefused(t, "a token with a payload character changed", v.verify(t, tamper(t, before), ""),
		"ERR_JWS_SIGNATURE_VERIFICATION_FAILED")
	wantRefused(t, "a token signed by another Ed25519 key under account's kid", v.verify(t, forge(t, before), ""),
		"ERR_JWS_SIGNATURE_VERIFICATION_FAILED")
	x := publicKey(t, account, oldKid)
	wantRefused(t, "the token re-signed with HS256, the public key as secret", v.verify(t, resign(t, before, "HS256", x), ""),
		"ERR_JOSE_ALG_NOT_ALLOWED")
	wantRefused(t, "the token with alg none", v.verify(t, resign(t, before, "none", nil), ""),
		"ERR_JOSE_ALG_NOT_ALLOWED")

	// Rotate, and wait until account signs with the new key.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.Cmd(ctx, "account", "keys", "rotate").CombinedOutput(); err != nil {
		t.Fatalf("account keys rotate: %v\n%s", err, out)
	}
	var after string
	deadline := time.Now().Add(rotationTimeout)
	for {
		after = apitest.Login(t, account, "jose@example.com", apitest.Password)
		if kid(t, after) != oldKid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("account still signs with kid %s %s after the rotation", oldKid, rotationTimeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
	newKid := kid(t, after)

	// The same key set: the new kid makes jose fetch the set again, which holds both keys.
	r = v.verify(t, after, "")
	wantVerified(t, "a token signed after the rotation", r, newKid)
	if r.Claims.Sub != id {
		t.Errorf("sub = %s after the rotation, want %s", r.Claims.Sub, id)
	}
	if got := slices.Sorted(slices.Values(r.Kids)); !slices.Equal(got, slices.Sorted(slices.Values([]string{oldKid, newKid}))) {
		t.Errorf("key set after the rotation = %v, want the old kid %s and the new %s", r.Kids, oldKid, newKid)
	}
	wantVerified(t, "the token signed before the rotation", v.verify(t, before, ""), oldKid)
	wantRefused(t, "the new token for audience other", v.verify(t, after, "other"), "ERR_JWT_CLAIM_VALIDATION_FAILED")

	// A verifier that starts now, with jose's defaults, accepts both.
	rs := verifyOnce(t, node, jwksURI, issuer, "shop", before, after)
	wantVerified(t, "the old token, to a fresh verifier", rs[0], oldKid)
	wantVerified(t, "the new token, to a fresh verifier", rs[1], newKid)
}

func wantVerified(t *testing.T, what string, r result, kid string) {
	t.Helper()
	if !r.OK {
		t.Fatalf("%s: jose refused it: %s %s (claim %q)", what, r.Code, r.Message, r.Claim)
	}
	if r.Header["alg"] != "EdDSA" || r.Header["typ"] != "at+jwt" || r.Header["kid"] != kid {
		t.Errorf("%s: header %v, want alg EdDSA, typ at+jwt, kid %s", what, r.Header, kid)
	}
}

func wantRefused(t *testing.T, what string, r result, code string) {
	t.Helper()
	if r.OK {
		t.Fatalf("%s: jose accepted it, with claims %+v", what, r.Claims)
	}
	if r.Code != code {
		t.Errorf("%s: refused with %s (%s), want %s", what, r.Code, r.Message, code)
	}
}

// kid returns the kid in a token's header.
func kid(t *testing.T, token string) string {
	t.Helper()
	var h struct {
		Kid string `json:"kid"`
	}
	segment(t, token, 0, &h)
	if h.Kid == "" {
		t.Fatalf("token header has no kid: %s", token)
	}
	return h.Kid
}

// segment decodes part i of a compact JWS (0 header, 1 payload) into v.
func segment(t *testing.T, token string, i int, v any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
}

// tamper changes one character in the middle of the token's payload, keeping it base64url.
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	p := []byte(parts[1])
	i := len(p) / 2
	if p[i] == 'A' {
		p[i] = 'B'
	} else {
		p[i] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}

// forge signs the token's header and payload with a fresh Ed25519 key: account's kid, alg and
// claims, a signature no key of account's made.
func forge(t *testing.T, token string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	head, payload, _ := strings.Cut(token, ".")
	payload, _, _ = strings.Cut(payload, ".")
	signed := head + "." + payload
	return signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(signed)))
}

// resign gives the token's claims a header with another alg (and account's kid) and signs it
// with HMAC-SHA256 under secret for HS256, or not at all for none.
func resign(t *testing.T, token, alg string, secret []byte) string {
	t.Helper()
	var h map[string]any
	segment(t, token, 0, &h)
	h["alg"] = alg
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + parts[1]
	if alg == "none" {
		return signed + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// publicKey returns the x member of the published key kid, as its JWK spells it: the secret an
// algorithm-confusion attack would use.
func publicKey(t *testing.T, account, kid string) []byte {
	t.Helper()
	r := apitest.Call(t, "GET", account+"/.well-known/jwks.json", "", nil).Want(t, http.StatusOK, "jwks")
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
			X   string `json:"x"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &set); err != nil {
		t.Fatalf("jwks %s: %v", r.Raw, err)
	}
	for _, k := range set.Keys {
		if k.Kid == kid && k.X != "" {
			return []byte(k.X)
		}
	}
	t.Fatalf("jwks %s has no key %s", r.Raw, kid)
	return nil
}
