package auth_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
)

func TestNewKeySet(t *testing.T) {
	t.Parallel()
	for _, doc := range [][]byte{nil, {}} {
		k, err := auth.NewKeySet(doc)
		if err != nil || k.Len() != 0 {
			t.Errorf("NewKeySet(%q) = %v keys, %v; want an empty set", doc, k.Len(), err)
		}
	}
	var zero auth.KeySet
	if _, ok := zero.Key("x"); ok || zero.Len() != 0 {
		t.Error("the zero KeySet is not empty")
	}
	if _, err := auth.NewKeySet([]byte("not json")); err == nil {
		t.Error("NewKeySet(not json) = nil error, want an error")
	}
}

func TestKeySetReplace(t *testing.T) {
	t.Parallel()
	a, b := authtest.NewIssuer(t).JWK, authtest.NewIssuer(t).JWK
	pubA, err := base64.RawURLEncoding.DecodeString(a.X)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(j auth.JWK, f func(*auth.JWK)) auth.JWK { f(&j); return j }
	doc := func(keys ...any) []byte {
		if keys == nil {
			keys = []any{}
		}
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	tests := []struct {
		name    string
		doc     []byte
		wantErr bool
		want    []string // kids in the set afterwards
	}{
		{name: "two keys", doc: doc(a, b), want: []string{a.Kid, b.Kid}},
		{name: "no keys", doc: doc(), want: nil},
		{name: "not json", doc: []byte(`{"keys":[`), wantErr: true, want: []string{a.Kid}},
		{name: "empty", doc: []byte(``), wantErr: true, want: []string{a.Kid}},
		{name: "not a jwks", doc: []byte(`{"kty":"OKP"}`), wantErr: true, want: []string{a.Kid}},
		{name: "keys not a list", doc: []byte(`{"keys":{}}`), wantErr: true, want: []string{a.Kid}},
		{name: "unknown members ignored", doc: []byte(fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q,"kid":%q,"extra":1}],"more":true}`, b.X, b.Kid)), want: []string{b.Kid}},
		{name: "use and alg optional", doc: doc(map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b.X, "kid": b.Kid}), want: []string{b.Kid}},
		{name: "kid taken as given", doc: doc(mod(b, func(j *auth.JWK) { j.Kid = "k1" })), want: []string{"k1"}},
		{
			name: "unusable keys skipped",
			doc: doc(
				a,
				map[string]string{"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
				mod(b, func(j *auth.JWK) { j.Kid = "x25519"; j.Crv = "X25519" }),
				mod(b, func(j *auth.JWK) { j.Kid = "ec"; j.Kty = "EC" }),
				mod(b, func(j *auth.JWK) { j.Kid = "short"; j.X = base64.RawURLEncoding.EncodeToString(pubA[:31]) }),
				mod(b, func(j *auth.JWK) { j.Kid = "long"; j.X = base64.RawURLEncoding.EncodeToString(append(pubA, 0)) }),
				mod(b, func(j *auth.JWK) { j.Kid = "padded"; j.X = base64.URLEncoding.EncodeToString(pubA) }),
				mod(b, func(j *auth.JWK) { j.Kid = "std"; j.X = base64.StdEncoding.EncodeToString(pubA) }),
				mod(b, func(j *auth.JWK) { j.Kid = "enc"; j.Use = "enc" }),
				mod(b, func(j *auth.JWK) { j.Kid = "hs"; j.Alg = "HS256" }),
				mod(b, func(j *auth.JWK) { j.Kid = "" }),
				map[string]any{"kty": "OKP", "crv": "Ed25519", "x": 5, "kid": "number"},
				"a string",
				nil,
			),
			want: []string{a.Kid},
		},
		{name: "duplicate kid keeps the first", doc: doc(a, mod(b, func(j *auth.JWK) { j.Kid = a.Kid })), want: []string{a.Kid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := auth.NewKeySet(doc(a))
			if err != nil {
				t.Fatal(err)
			}
			err = k.Replace(tt.doc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Replace() = %v, want error %v", err, tt.wantErr)
			}
			if k.Len() != len(tt.want) {
				t.Errorf("Len() = %d, want %d", k.Len(), len(tt.want))
			}
			for _, kid := range tt.want {
				if _, ok := k.Key(kid); !ok {
					t.Errorf("Key(%q) not found", kid)
				}
			}
		})
	}

	t.Run("key value", func(t *testing.T) {
		k, err := auth.NewKeySet(doc(a))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := k.Key(a.Kid)
		if !ok || !got.Equal(ed25519.PublicKey(pubA)) {
			t.Errorf("Key(%q) = %x, %v; want %x", a.Kid, got, ok, pubA)
		}
		// The thumbprint always names an x: the duplicate entry above could not be the first key.
		if _, ok := k.Key(b.Kid); ok {
			t.Errorf("Key(%q) found a key not in the set", b.Kid)
		}
	})
}

// TestKeySetConcurrent replaces the set while it is read; run with -race.
func TestKeySetConcurrent(t *testing.T) {
	t.Parallel()
	a, b := authtest.NewIssuer(t), authtest.NewIssuer(t)
	k, err := auth.NewKeySet(a.JWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	docs := [][]byte{a.JWKS(t), b.JWKS(t)}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				if i == 0 {
					if err := k.Replace(docs[j%2]); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				// A reader sees one whole document or the other, never a set being built.
				if n := k.Len(); n != 1 {
					t.Errorf("Len() = %d during replacements, want 1", n)
					return
				}
				if pub, ok := k.Key(a.JWK.Kid); ok && pub == nil {
					t.Error("Key() found a nil key")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestKeySetReady: a service is not ready to verify tokens before it holds a key.
func TestKeySetReady(t *testing.T) {
	t.Parallel()
	k := &auth.KeySet{}
	if err := k.Ready(t.Context()); !errors.Is(err, auth.ErrNoKeys) {
		t.Errorf("Ready() of an empty set = %v, want ErrNoKeys", err)
	}
	if err := k.Replace(authtest.NewIssuer(t).JWKS(t)); err != nil {
		t.Fatal(err)
	}
	if err := k.Ready(t.Context()); err != nil {
		t.Errorf("Ready() with a key = %v, want nil", err)
	}
}
