package auth_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	"github.com/authmesh/events/auth"
	"github.com/google/go-cmp/cmp"
)

// TestNewJWK checks the JWK and its thumbprint against the example of RFC 8037, appendix A.
func TestNewJWK(t *testing.T) {
	t.Parallel()
	x := "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	pub, err := base64.RawURLEncoding.DecodeString(x)
	if err != nil {
		t.Fatal(err)
	}
	want := auth.JWK{Kty: "OKP", Crv: "Ed25519", X: x, Kid: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", Use: "sig", Alg: "EdDSA"}
	if diff := cmp.Diff(want, auth.NewJWK(ed25519.PublicKey(pub))); diff != "" {
		t.Errorf("NewJWK() (-want +got):\n%s", diff)
	}
}
