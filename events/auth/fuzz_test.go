package auth_test

import (
	"strings"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/auth"
	"github.com/authmesh/events/authtest"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

// FuzzVerify: whatever string comes as a bearer token, Verify answers without panicking, and the
// only tokens it accepts are the ones the issuer signed: any accepted string carries exactly the
// claims of the token it was made from (a forged or altered token is never let through with other
// claims).
func FuzzVerify(f *testing.F) {
	iss := authtest.NewIssuer(f)
	keys, err := auth.NewKeySet(iss.JWKS(f))
	if err != nil {
		f.Fatal(err)
	}
	v := &auth.Verifier{Keys: keys, Issuer: "account", Audience: "blog"}
	u := authtest.NewUser(events.RoleAdmin)
	signed := iss.Token(f, u)
	want, err := v.Verify(signed)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(signed, ".")
	none := jwt.NewWithClaims(jwt.SigningMethodNone, iss.Claims(u))
	unsigned, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		signed, unsigned, "", ".", "..", "a.b.c", parts[0] + "." + parts[1] + ".",
		parts[0] + ".." + parts[2], signed + ".", strings.ToUpper(signed), signed[:len(signed)-1],
		"eyJhbGciOiJub25lIn0." + parts[1] + ".", strings.Repeat("A", 9000),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		got, err := v.Verify(token)
		if err != nil {
			return
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Verify accepted %q with other claims than the issuer signed (-signed +accepted):\n%s", token, diff)
		}
	})
}
