package blackbox

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

var b64 = base64.RawURLEncoding

// decodeSegment decodes a JWS header or payload.
func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := b64.DecodeString(seg)
	if err != nil {
		t.Fatalf("segment %q: %v", seg, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("segment %q: %v", seg, err)
	}
	return m
}

// encodeSegment encodes a JWS header or payload.
func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(b)
}

// with returns a copy of m with the given keys set (a nil value deletes the key).
func with(m map[string]any, kv ...any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
			continue
		}
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

// forger makes tokens the way an attacker would: from a real token's header and claims, with
// keys of its own or none.
type forger struct {
	t              *testing.T
	header, claims map[string]any
	signed         string // the real token's "header.payload"
	sig            string // the real token's signature
	ed             ed25519.PrivateKey
}

func (f forger) unsigned(header, claims map[string]any) string {
	return encodeSegment(f.t, header) + "." + encodeSegment(f.t, claims)
}

// none is an unsecured JWS: no signature at all.
func (f forger) none(alg string) string {
	return f.unsigned(with(f.header, "alg", alg), f.claims) + "."
}

// hs256 signs with HMAC-SHA256 under secret, e.g. the bytes of the public key.
func (f forger) hs256(secret []byte) string {
	in := f.unsigned(with(f.header, "alg", "HS256"), f.claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(in))
	return in + "." + b64.EncodeToString(mac.Sum(nil))
}

// ed25519 signs with the forger's own Ed25519 key.
func (f forger) ed25519(header, claims map[string]any) string {
	in := f.unsigned(header, claims)
	return in + "." + b64.EncodeToString(ed25519.Sign(f.ed, []byte(in)))
}

// es256 signs with a fresh P-256 key.
func (f forger) es256() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	in := f.unsigned(with(f.header, "alg", "ES256"), f.claims)
	sum := sha256.Sum256([]byte(in))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		f.t.Fatal(err)
	}
	return in + "." + b64.EncodeToString(sig)
}

// resigned keeps the real signature over edited claims.
func (f forger) resigned(claims map[string]any) string {
	return encodeSegment(f.t, f.header) + "." + encodeSegment(f.t, claims) + "." + f.sig
}

// TestForgedTokens sends tokens that must not authenticate to every service: each gets 401
// unauthenticated as a problem with WWW-Authenticate: Bearer error="invalid_token", never a 5xx.
// The suite holds no signing key of the system, so expired, wrong-audience and wrong-issuer
// tokens are the real token's signature over edited claims, or signed with a key of its own
// under the real kid; events/auth's tests cover those checks with trusted keys.
func TestForgedTokens(t *testing.T) {
	t.Parallel()
	u := newUser(t, "Victim")
	parts := strings.Split(u.Token, ".")
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := forger{t: t, header: decodeSegment(t, parts[0]), claims: decodeSegment(t, parts[1]),
		signed: parts[0] + "." + parts[1], sig: parts[2], ed: ed}
	kid, _ := f.header["kid"].(string)

	// The public key an HS256 confusion attack would use as its secret, in its usual forms.
	var pub map[string]any
	jwks := apitest.Call(t, "GET", system.account+"/.well-known/jwks.json", "", nil).Want(t, http.StatusOK, "jwks")
	keys, _ := jwks.Body["keys"].([]any)
	for _, k := range keys {
		if m, _ := k.(map[string]any); m["kid"] == kid {
			pub = m
		}
	}
	if pub == nil {
		t.Fatalf("the token's kid %s is not in the jwks %s", kid, jwks.Raw)
	}
	pubJSON, _ := json.Marshal(pub)
	x, _ := pub["x"].(string)
	rawX, err := b64.DecodeString(x)
	if err != nil {
		t.Fatalf("jwks x: %v", err)
	}

	// An attacker's key server: a verifier that follows jku/x5u would fetch from it.
	var fetched atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "OKP", "crv": "Ed25519", "kid": "attacker", "x": b64.EncodeToString(ed.Public().(ed25519.PublicKey)),
		}}})
	}))
	defer attacker.Close()
	attackerJWK := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64.EncodeToString(ed.Public().(ed25519.PublicKey))}

	now := time.Now().Unix()
	flip := []byte(f.sig)
	flip[len(flip)/2] ^= 'A' ^ 'B'
	if flip[len(flip)/2] == f.sig[len(f.sig)/2] {
		flip[len(flip)/2] = 'A'
	}
	tokens := []struct{ name, token string }{
		{"alg none", f.none("none")},
		{"alg None", f.none("None")},
		{"alg NONE", f.none("NONE")},
		{"alg none with the real signature", f.unsigned(with(f.header, "alg", "none"), f.claims) + "." + f.sig},
		{"HS256 keyed with the public JWK", f.hs256(pubJSON)},
		{"HS256 keyed with the raw public key", f.hs256(rawX)},
		{"HS256 keyed with the public key's x", f.hs256([]byte(x))},
		{"ES256 with a key of its own", f.es256()},
		{"one signature character changed", f.signed + "." + string(flip)},
		{"signature removed", f.signed + "."},
		{"signature truncated", f.signed + "." + f.sig[:len(f.sig)/2]},
		{"sub edited", f.resigned(with(f.claims, "sub", uuid.NewString()))},
		{"expired (edited)", f.resigned(with(f.claims, "exp", now-3600))},
		{"expired (own key, real kid)", f.ed25519(f.header, with(f.claims, "exp", now-3600))},
		{"no exp (edited)", f.resigned(with(f.claims, "exp", nil))},
		{"wrong aud (edited)", f.resigned(with(f.claims, "aud", []string{"elsewhere"}))},
		{"wrong aud (own key, real kid)", f.ed25519(f.header, with(f.claims, "aud", []string{"elsewhere"}))},
		{"wrong iss (edited)", f.resigned(with(f.claims, "iss", "attacker"))},
		{"nbf in the future (edited)", f.resigned(with(f.claims, "nbf", now+3600))},
		{"own key, real kid", f.ed25519(f.header, f.claims)},
		{"own key, unknown kid", f.ed25519(with(f.header, "kid", uuid.NewString()), f.claims)},
		{"own key, no kid", f.ed25519(with(f.header, "kid", nil), f.claims)},
		{"own key, kid path traversal", f.ed25519(with(f.header, "kid", "../../../../dev/null"), f.claims)},
		{"own key, kid SQL", f.ed25519(with(f.header, "kid", "' OR 1=1--"), f.claims)},
		{"own key, 10 KB kid", f.ed25519(with(f.header, "kid", strings.Repeat("k", 10<<10)), f.claims)},
		{"own key, jku header", f.ed25519(with(f.header, "kid", "attacker", "jku", attacker.URL+"/jwks.json"), f.claims)},
		{"own key, x5u header", f.ed25519(with(f.header, "kid", "attacker", "x5u", attacker.URL+"/cert.pem"), f.claims)},
		{"own key, embedded jwk", f.ed25519(with(f.header, "kid", "attacker", "jwk", attackerJWK), f.claims)},
		{"own key, crit extension", f.ed25519(with(f.header, "crit", []string{"exp-ext"}, "exp-ext", true), f.claims)},
		{"typ id token (edited)", f.unsigned(with(f.header, "typ", "JWT"), f.claims) + "." + f.sig},
		{"two segments", f.signed},
		{"four segments", u.Token + "." + f.sig},
		{"not base64", "!!!.???.***"},
		{"padded base64", parts[0] + "==." + parts[1] + "." + parts[2]},
		{"garbage", "garbage"},
		{"dots", strings.Repeat(".", 10000)},
	}

	probes := []struct{ name, method, url string }{
		{"account", "GET", system.account + "/v1/users/me"},
		{"blog", "PATCH", system.blog + "/v1/posts/" + uuid.NewString()},
		{"shop", "GET", system.shop + "/v1/orders"},
	}
	for _, p := range probes {
		// The real token works: every refusal below is the forgery's doing.
		want := http.StatusOK
		if p.name == "blog" {
			want = http.StatusNotFound
		}
		real := apitest.Send(t, p.method, p.url, http.Header{"Authorization": {"Bearer " + u.Token}, "Content-Type": {"application/json"}}, []byte(`{"title":"x"}`))
		real.Want(t, want, p.name+" with the real token")
	}
	for _, tk := range tokens {
		t.Run(tk.name, func(t *testing.T) {
			for _, p := range probes {
				r := apitest.Send(t, p.method, p.url, http.Header{"Authorization": {"Bearer " + tk.token}, "Content-Type": {"application/json"}}, []byte(`{"title":"x"}`))
				r.WantProblem(t, http.StatusUnauthorized, "unauthenticated", p.name)
				if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") || !strings.Contains(h, `error="invalid_token"`) {
					t.Errorf("%s: WWW-Authenticate %q, want Bearer with error=\"invalid_token\"", p.name, h)
				}
			}
		})
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("the services fetched keys from a URL in a token header %d times, want 0", n)
	}

	// No token, or not in the Authorization header as a bearer token: 401 with a challenge.
	for _, p := range probes {
		for name, h := range map[string]http.Header{
			"no token":        {},
			"Basic scheme":    {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(u.Email+":"+apitest.Password))}},
			"empty bearer":    {"Authorization": {"Bearer "}},
			"token as cookie": {"Cookie": {"access_token=" + u.Token}},
		} {
			h.Set("Content-Type", "application/json")
			r := apitest.Send(t, p.method, p.url+"?access_token="+u.Token, h, []byte(`{"title":"x"}`))
			r.WantProblem(t, http.StatusUnauthorized, "unauthenticated", p.name+" with "+name)
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s with %s: WWW-Authenticate %q, want Bearer", p.name, name, r.Header.Get("WWW-Authenticate"))
			}
		}
		// A huge Authorization header is refused before it is parsed; never a 5xx.
		r := apitest.Send(t, p.method, p.url, http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 20<<10)}}, nil)
		if r.Status != http.StatusUnauthorized && r.Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s with a 20 KB Authorization header: status %d, want 401 or 431", p.name, r.Status)
		}
	}
}
