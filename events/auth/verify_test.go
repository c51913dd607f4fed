package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// now is the verifier's clock in these tests, on a whole second as NumericDate is.
var now = time.Now().Truncate(time.Second)

// fixture is an issuer whose key the verifier trusts, and the verifier (audience shop).
type fixture struct {
	iss *authtest.Issuer
	v   *auth.Verifier
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	iss := authtest.NewIssuer(t)
	keys, err := auth.NewKeySet(iss.JWKS(t))
	if err != nil {
		t.Fatalf("NewKeySet: %v", err)
	}
	return fixture{iss: iss, v: &auth.Verifier{Keys: keys, Issuer: "account", Audience: "shop", Now: func() time.Time { return now }}}
}

// claims are the claims account issues, as a map so a test can break any of them.
func claims(sub uuid.UUID) map[string]any {
	return map[string]any{
		"iss":   "account",
		"sub":   sub.String(),
		"aud":   []string{"blog", "shop"},
		"iat":   now.Add(-time.Minute).Unix(),
		"nbf":   now.Add(-time.Minute).Unix(),
		"exp":   now.Add(14 * time.Minute).Unix(),
		"jti":   uuid.NewString(),
		"roles": []string{"user"},
		"ver":   1,
	}
}

// header is the header account sends.
func (f fixture) header() map[string]any {
	return map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": f.iss.JWK.Kid}
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// compact assembles a token from its encoded header and payload and a signer of the signing input.
func compact(header, payload string, sign func(input string) []byte) string {
	input := header + "." + payload
	return input + "." + base64.RawURLEncoding.EncodeToString(sign(input))
}

func (f fixture) edSign(input string) []byte { return ed25519.Sign(f.iss.Key, []byte(input)) }

// token signs claims under header with the issuer's key.
func (f fixture) token(header, claims map[string]any) string {
	return compact(b64(header), b64(claims), f.edSign)
}

func with(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func without(m map[string]any, k string) map[string]any {
	out := with(m, k, nil)
	delete(out, k)
	return out
}

func hmacSign(key []byte) func(string) []byte {
	return func(input string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return m.Sum(nil)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sub := uuid.New()
	good := claims(sub)
	hdr := f.header()
	valid := f.token(hdr, good)
	parts := strings.Split(valid, ".")

	// Attacker material.
	pub := f.iss.Key.Public().(ed25519.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, err := json.Marshal(f.iss.JWK)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	libSign := func(m jwt.SigningMethod, key any, h map[string]any) string {
		tok := jwt.NewWithClaims(m, jwt.MapClaims(good))
		for k, v := range h {
			if k != "alg" {
				tok.Header[k] = v
			}
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatalf("sign %s: %v", m.Alg(), err)
		}
		return s
	}

	// A listener that must never be called: keys never come from a token.
	var fetched atomic.Int64
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		_, _ = w.Write(f.iss.JWKS(t))
	}))
	t.Cleanup(listener.Close)

	flip := func(s string, i int) string {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// A header whose padded base64 really has padding, signed over that padded form.
	paddedHeader := func() string {
		b, _ := json.Marshal(hdr)
		for len(b)%3 == 0 {
			b = append(b, ' ')
		}
		return base64.URLEncoding.EncodeToString(b)
	}()
	if !strings.Contains(paddedHeader, "=") {
		t.Fatal("padded header has no padding")
	}

	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", valid, true},
		{"valid typ application/at+jwt", f.token(with(hdr, "typ", "application/at+jwt"), good), true},
		{"valid typ upper case", f.token(with(hdr, "typ", "AT+JWT"), good), true},
		{"valid aud string", f.token(hdr, with(good, "aud", "shop")), true},

		// J01 alg none, in any case, with an empty signature.
		{"J01 alg none", b64(with(hdr, "alg", "none")) + "." + parts[1] + ".", false},
		{"J01 alg None", b64(with(hdr, "alg", "None")) + "." + parts[1] + ".", false},
		{"J01 alg NONE", b64(with(hdr, "alg", "NONE")) + "." + parts[1] + ".", false},
		{"J01 alg nOnE", b64(with(hdr, "alg", "nOnE")) + "." + parts[1] + ".", false},
		{"J01 alg none with the original signature", b64(with(hdr, "alg", "none")) + "." + parts[1] + "." + parts[2], false},

		// J02 HS256 keyed with our public key.
		{"J02 HS256 raw public key", compact(b64(with(hdr, "alg", "HS256")), parts[1], hmacSign(pub)), false},
		{"J02 HS256 PEM public key", compact(b64(with(hdr, "alg", "HS256")), parts[1], hmacSign(pemKey)), false},
		{"J02 HS256 DER public key", compact(b64(with(hdr, "alg", "HS256")), parts[1], hmacSign(der)), false},
		{"J02 HS256 JWK public key", compact(b64(with(hdr, "alg", "HS256")), parts[1], hmacSign(jwkJSON)), false},

		// J03 other algorithms and keys.
		{"J03 RS256 attacker key", libSign(jwt.SigningMethodRS256, rsaKey, hdr), false},
		{"J03 ES256 attacker key", libSign(jwt.SigningMethodES256, ecKey, hdr), false},
		{"J03 EdDSA attacker key with our kid", libSign(jwt.SigningMethodEdDSA, otherEd, hdr), false},

		// J04 signature removed, truncated, flipped.
		{"J04 signature removed", parts[0] + "." + parts[1] + ".", false},
		{"J04 signature truncated", parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-4], false},
		{"J04 signature bit flipped", parts[0] + "." + parts[1] + "." + flip(parts[2], 10), false},

		// J05 payload edited, signature kept.
		{"J05 sub edited", parts[0] + "." + b64(with(good, "sub", uuid.NewString())) + "." + parts[2], false},
		{"J05 aud edited", parts[0] + "." + b64(with(good, "aud", []string{"shop", "admin"})) + "." + parts[2], false},
		{"J05 exp edited", parts[0] + "." + b64(with(good, "exp", now.Add(time.Hour).Unix())) + "." + parts[2], false},
		{"J05 header edited", b64(with(hdr, "x", 1)) + "." + parts[1] + "." + parts[2], false},

		// J06 kid tricks; J17 unknown kid.
		{"J06 kid path", f.token(with(hdr, "kid", "../../dev/null"), good), false},
		{"J06 kid sql", f.token(with(hdr, "kid", "' OR 1=1--"), good), false},
		{"J06 kid 10 KB", f.token(with(hdr, "kid", strings.Repeat("k", 10<<10)), good), false},
		{"J06 kid 4 KB", f.token(with(hdr, "kid", strings.Repeat("k", 4<<10)), good), false},
		{"J06 kid number", f.token(with(hdr, "kid", 1), good), false},
		{"J06 kid missing", f.token(without(hdr, "kid"), good), false},
		{"J17 kid unknown", f.token(with(hdr, "kid", authtest.NewIssuer(t).JWK.Kid), good), false},

		// J07, J08, J09 key-bearing and critical headers, even on a token our key signed.
		{"J07 jku", f.token(with(hdr, "jku", listener.URL), good), false},
		{"J08 x5u", f.token(with(hdr, "x5u", listener.URL), good), false},
		{"J08 x5c", f.token(with(hdr, "x5c", []string{base64.StdEncoding.EncodeToString(der)}), good), false},
		{"J08 jwk", f.token(with(hdr, "jwk", f.iss.JWK), good), false},
		{"J08 jwk null", f.token(with(hdr, "jwk", nil), good), false},
		{"J09 crit", f.token(with(with(hdr, "crit", []string{"exp-ext"}), "exp-ext", 1), good), false},

		// J10 exp missing, a string, 0.
		{"J10 exp missing", f.token(hdr, without(good, "exp")), false},
		{"J10 exp string", f.token(hdr, with(good, "exp", "9999999999")), false},
		{"J10 exp string of now", f.token(hdr, with(good, "exp", now.Add(time.Minute).Format(time.RFC3339))), false},
		{"J10 exp zero", f.token(hdr, with(good, "exp", 0)), false},
		{"J10 exp null", f.token(hdr, with(good, "exp", nil)), false},

		// J11 the leeway.
		{"J11 exp 10s ago", f.token(hdr, with(good, "exp", now.Add(-10*time.Second).Unix())), true},
		{"J11 exp 60s ago", f.token(hdr, with(good, "exp", now.Add(-60*time.Second).Unix())), false},

		// J12 nbf or iat in the future.
		{"J12 nbf in 5 min", f.token(hdr, with(good, "nbf", now.Add(5*time.Minute).Unix())), false},
		{"J12 iat in 5 min", f.token(hdr, with(good, "iat", now.Add(5*time.Minute).Unix())), false},
		{"J12 nbf in 10s", f.token(hdr, with(good, "nbf", now.Add(10*time.Second).Unix())), true},
		{"J12 iat string", f.token(hdr, with(good, "iat", "1")), false},

		// J13 issuer.
		{"J13 iss wrong", f.token(hdr, with(good, "iss", "attacker")), false},
		{"J13 iss missing", f.token(hdr, without(good, "iss")), false},

		// J14 audience.
		{"J14 aud of another service", f.token(hdr, with(good, "aud", []string{"blog"})), false},
		{"J14 aud missing", f.token(hdr, without(good, "aud")), false},
		{"J14 aud list with ours", f.token(hdr, with(good, "aud", []string{"x", "shop"})), true},

		// J15 typ.
		{"J15 typ missing", f.token(without(hdr, "typ"), good), false},
		{"J15 typ JWT", f.token(with(hdr, "typ", "JWT"), good), false},
		{"J15 typ refresh", f.token(with(hdr, "typ", "refresh+jwt"), good), false},
		{"J15 typ id token", f.token(with(hdr, "typ", "id_token+jwt"), good), false},
		{"J15 typ number", f.token(with(hdr, "typ", 1), good), false},

		// J18 malformed compact forms.
		{"J18 empty", "", false},
		{"J18 two segments", parts[0] + "." + parts[1], false},
		{"J18 four segments", valid + "." + parts[2], false},
		{"J18 not base64url", compact(parts[0], parts[1][:4]+"+/"+parts[1][6:], f.edSign), false},
		{"J18 padded header", compact(paddedHeader, parts[1], f.edSign), false},
		{"J18 100k dots", strings.Repeat(".", 100_000), false},
		{"J18 over 8 KiB", f.token(hdr, with(good, "pad", strings.Repeat("p", 8<<10))), false},
		{"J18 header not json", compact(base64.RawURLEncoding.EncodeToString([]byte("{")), parts[1], f.edSign), false},

		// Claims of ours.
		{"sub not a uuid", f.token(hdr, with(good, "sub", "admin")), false},
		{"sub uuid without hyphens", f.token(hdr, with(good, "sub", strings.ReplaceAll(sub.String(), "-", ""))), false},
		{"sub urn uuid", f.token(hdr, with(good, "sub", "urn:uuid:"+sub.String())), false},
		{"sub nil uuid", f.token(hdr, with(good, "sub", uuid.Nil.String())), false},
		{"sub missing", f.token(hdr, without(good, "sub")), false},
		{"ver missing", f.token(hdr, without(good, "ver")), false},
		{"ver zero", f.token(hdr, with(good, "ver", 0)), false},
		{"ver string", f.token(hdr, with(good, "ver", "1")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := f.v.Verify(tt.token)
			if tt.ok {
				if err != nil {
					t.Fatalf("Verify() = %v, want a valid token", err)
				}
				if c.Subject != sub.String() || c.Ver != 1 {
					t.Errorf("Verify() claims sub %q ver %d, want %q 1", c.Subject, c.Ver, sub)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify() accepted the token, want it refused")
			}
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("Verify() = %v, want it to wrap ErrInvalidToken", err)
			}
			t.Logf("refused: %.200v", err)
			if c != nil {
				t.Errorf("Verify() returned claims %+v with an error", c)
			}
		})
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("the key listener got %d requests, want 0", n)
	}
}

// TestVerifyClaims checks the claims of a token signed as account signs them (authtest).
func TestVerifyClaims(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.v.Now = nil // the issuer signs with time.Now
	u := authtest.NewUser("admin")
	want := f.iss.Claims(u)
	got, err := f.v.Verify(f.iss.Sign(t, want))
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify() claims (-want +got):\n%s", diff)
	}
}

// TestVerifyExpiredAndBadlySigned is J24: a token both expired and badly signed is refused as a
// bad signature, the first check made.
func TestVerifyExpiredAndBadlySigned(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.token(f.header(), with(claims(uuid.New()), "exp", now.Add(-time.Hour).Unix()))
	parts := strings.Split(tok, ".")
	tok = parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, ed25519.SignatureSize))
	_, err := f.v.Verify(tok)
	if !errors.Is(err, auth.ErrInvalidToken) || !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("Verify() = %v, want ErrInvalidToken and ErrTokenSignatureInvalid", err)
	}
}

func TestVerifierFailsClosed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.token(f.header(), claims(uuid.New()))
	for _, v := range []*auth.Verifier{
		{Keys: f.v.Keys, Now: f.v.Now, Audience: "shop"},        // no issuer
		{Issuer: "account", Now: f.v.Now, Audience: "shop"},     // no keys
		{Keys: &auth.KeySet{}, Issuer: "account", Now: f.v.Now}, // empty set
	} {
		if _, err := v.Verify(tok); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("Verify() with %+v = %v, want ErrInvalidToken", v, err)
		}
	}
	// Without an audience (account itself), any audience is accepted.
	v := &auth.Verifier{Keys: f.v.Keys, Issuer: "account", Now: f.v.Now}
	if _, err := v.Verify(f.token(f.header(), with(claims(uuid.New()), "aud", "elsewhere"))); err != nil {
		t.Errorf("Verify() without audience = %v, want nil", err)
	}
}

// TestRotation: during a rotation both keys verify; once the old key is removed (J16), its
// tokens are refused and the new key's still pass.
func TestRotation(t *testing.T) {
	t.Parallel()
	oldIss, newIss := authtest.NewIssuer(t), authtest.NewIssuer(t)
	both, err := json.Marshal(auth.JWKS{Keys: []auth.JWK{oldIss.JWK, newIss.JWK}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewKeySet(both)
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog"}
	u := authtest.NewUser()
	oldTok, newTok := oldIss.Token(t, u), newIss.Token(t, u)
	for name, tok := range map[string]string{"old": oldTok, "new": newTok} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("with both keys, Verify(%s token) = %v, want nil", name, err)
		}
	}
	if err := keys.Replace(newIss.JWKS(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(oldTok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("after removal, Verify(old token) = %v, want ErrInvalidToken", err)
	}
	if _, err := v.Verify(newTok); err != nil {
		t.Errorf("after removal, Verify(new token) = %v, want nil", err)
	}
}
