package blackbox

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/google/uuid"
)

// TestRegistration: a new user is created active with the role user at version 1; an email is
// taken whatever its case; invalid fields get 422 with one error per field.
func TestRegistration(t *testing.T) {
	t.Parallel()
	email := "E2E-" + uuid.NewString() + "@Example.com"
	r := apitest.Call(t, "POST", system.account+"/v1/users", "", map[string]any{
		"email": email, "password": apitest.Password, "display_name": "Reg",
	}).Want(t, http.StatusCreated, "register")
	if _, err := uuid.Parse(r.Str("id")); err != nil {
		t.Errorf("id %q is not a UUID", r.Str("id"))
	}
	if got := r.Str("email"); !strings.EqualFold(got, email) {
		t.Errorf("email = %q, want %q (any case)", got, email)
	}
	if r.Str("display_name") != "Reg" || r.Str("status") != "active" || num(r.Body, "version") != 1 {
		t.Errorf("new user = %s, want display_name Reg, status active, version 1", r.Raw)
	}
	if roles, _ := r.Body["roles"].([]any); !reflect.DeepEqual(roles, []any{"user"}) {
		t.Errorf("roles = %v, want [user]", r.Body["roles"])
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339Nano, r.Str(k)); err != nil {
			t.Errorf("%s = %q, not an RFC 3339 time", k, r.Str(k))
		}
	}
	if _, ok := r.Body["password"]; ok {
		t.Errorf("the user JSON shows a password: %s", r.Raw)
	}

	for _, again := range []string{email, strings.ToLower(email), strings.ToUpper(email)} {
		apitest.Call(t, "POST", system.account+"/v1/users", "", map[string]any{
			"email": again, "password": "another password", "display_name": "Other",
		}).WantProblem(t, http.StatusConflict, "email_taken", "register "+again+" again")
	}
	tok := apitest.Login(t, system.account, strings.ToLower(email), apitest.Password)
	me := apitest.Call(t, "GET", system.account+"/v1/users/me", tok, nil).Want(t, http.StatusOK, "me")
	if me.Str("id") != r.Str("id") {
		t.Errorf("/v1/users/me = %s, want the registered user %s", me.Raw, r.Str("id"))
	}

	long := strings.Repeat("x", 129)
	tests := []struct {
		name   string
		body   map[string]any
		fields []string // fields named in errors
	}{
		{"bad email", map[string]any{"email": "not-an-email", "password": apitest.Password, "display_name": "A"}, []string{"email"}},
		{"short password", map[string]any{"email": "e2e-" + uuid.NewString() + "@example.com", "password": "1234567", "display_name": "A"}, []string{"password"}},
		{"long password", map[string]any{"email": "e2e-" + uuid.NewString() + "@example.com", "password": long, "display_name": "A"}, []string{"password"}},
		{"empty name", map[string]any{"email": "e2e-" + uuid.NewString() + "@example.com", "password": apitest.Password, "display_name": ""}, []string{"display_name"}},
		{"long name", map[string]any{"email": "e2e-" + uuid.NewString() + "@example.com", "password": apitest.Password, "display_name": strings.Repeat("n", 101)}, []string{"display_name"}},
		{"everything", map[string]any{"email": "", "password": "", "display_name": ""}, []string{"email", "password", "display_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := apitest.Call(t, "POST", system.account+"/v1/users", "", tt.body).
				WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "register with "+tt.name)
			wantFieldErrors(t, r, tt.fields...)
		})
	}
}

// wantFieldErrors checks that a 422 problem lists an error with a message for each field, and
// for no other.
func wantFieldErrors(t *testing.T, r apitest.Response, fields ...string) {
	t.Helper()
	errs, ok := r.Body["errors"].([]any)
	if !ok {
		t.Fatalf("422 without an errors array: %s", r.Raw)
	}
	got := map[string]bool{}
	for _, e := range errs {
		fe, _ := e.(map[string]any)
		f, _ := fe["field"].(string)
		m, _ := fe["message"].(string)
		if f == "" || m == "" {
			t.Errorf("error %v lacks a field or a message", e)
		}
		got[f] = true
	}
	for _, f := range fields {
		if !got[f] {
			t.Errorf("errors = %s, want one for %q", r.Raw, f)
		}
		delete(got, f)
	}
	if len(got) > 0 {
		t.Errorf("errors = %s, want only %v", r.Raw, fields)
	}
}

// TestLogin: a failed login gets the same 401 invalid_credentials, byte for byte, whether the
// email is unknown, the password wrong or the user disabled.
func TestLogin(t *testing.T) {
	t.Parallel()
	u := newUser(t, "Login")
	tok := apitest.Call(t, "POST", system.account+"/v1/tokens", "", map[string]any{
		"email": strings.ToUpper(u.Email), "password": apitest.Password,
	}).Want(t, http.StatusOK, "log in with the email in upper case")
	if tok.Str("token_type") != "Bearer" || num(tok.Body, "expires_in") <= 0 || tok.Str("access_token") == "" {
		t.Errorf("token response = %s, want access_token, token_type Bearer, expires_in > 0", tok.Raw)
	}
	header := strings.Split(tok.Str("access_token"), ".")[0]
	if h := decodeSegment(t, header); h["alg"] != "EdDSA" || h["typ"] != "at+jwt" || h["kid"] == "" {
		t.Errorf("token header = %v, want alg EdDSA, typ at+jwt and a kid", h)
	}

	disabled := newUser(t, "Disabled")
	setStatus(t, disabled, "disabled")

	failures := map[string]map[string]any{
		"unknown email":  {"email": "e2e-" + uuid.NewString() + "@example.com", "password": apitest.Password},
		"wrong password": {"email": u.Email, "password": "wrong password!"},
		"disabled user":  {"email": disabled.Email, "password": apitest.Password},
	}
	var first apitest.Response
	for name, body := range failures {
		r := apitest.Call(t, "POST", system.account+"/v1/tokens", "", body).
			WantProblem(t, http.StatusUnauthorized, "invalid_credentials", "log in with "+name)
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want Bearer", name, r.Header.Get("WWW-Authenticate"))
		}
		if first.Raw == "" {
			first = r
			continue
		}
		if r.Raw != first.Raw || r.Header.Get("WWW-Authenticate") != first.Header.Get("WWW-Authenticate") {
			t.Errorf("%s: body %s, want the same answer as every failed login: %s", name, r.Raw, first.Raw)
		}
	}

	// The disabled user's token issued before is refused by account at once.
	apitest.Call(t, "GET", system.account+"/v1/users/me", disabled.Token, nil).
		WantProblem(t, http.StatusForbidden, "user_disabled", "account /me for a disabled user")
}

// TestUserAdministration: only an admin lists users and changes roles and status; roles keep
// user; an unknown role is a 422; each change adds one to the version.
func TestUserAdministration(t *testing.T) {
	t.Parallel()
	u, other := newUser(t, "Admin target"), newUser(t, "Other")

	apitest.Call(t, "GET", system.account+"/v1/users", u.Token, nil).
		WantProblem(t, http.StatusForbidden, "forbidden", "a user lists users")
	apitest.Call(t, "PUT", system.account+"/v1/users/"+other.ID+"/roles", u.Token, map[string]any{"roles": []string{"admin"}}).
		WantProblem(t, http.StatusForbidden, "forbidden", "a user grants roles")
	apitest.Call(t, "PUT", system.account+"/v1/users/"+other.ID+"/status", u.Token, map[string]any{"status": "disabled"}).
		WantProblem(t, http.StatusForbidden, "forbidden", "a user disables another")
	apitest.Call(t, "GET", system.account+"/v1/users/"+u.ID, u.Token, nil).Want(t, http.StatusOK, "a user reads itself")
	apitest.Call(t, "GET", system.account+"/v1/users/"+u.ID, admin(t), nil).Want(t, http.StatusOK, "the admin reads a user")
	apitest.Call(t, "GET", system.account+"/v1/users/"+uuid.NewString(), admin(t), nil).
		WantProblem(t, http.StatusNotFound, "not_found", "the admin reads an unknown user")
	list := apitest.Call(t, "GET", system.account+"/v1/users?limit=2", admin(t), nil).Want(t, http.StatusOK, "the admin lists users")
	if n := len(list.Items()); n < 1 || n > 2 {
		t.Errorf("?limit=2 gave %d users, want 1 or 2", n)
	}

	r := setRoles(t, u, "moderator")
	if roles, _ := r.Body["roles"].([]any); !reflect.DeepEqual(roles, []any{"moderator", "user"}) && !reflect.DeepEqual(roles, []any{"user", "moderator"}) {
		t.Errorf("roles after granting [moderator] = %v, want user and moderator", r.Body["roles"])
	}
	if num(r.Body, "version") != 2 {
		t.Errorf("version after a role change = %v, want 2", r.Body["version"])
	}
	apitest.Call(t, "PUT", system.account+"/v1/users/"+u.ID+"/roles", admin(t), map[string]any{"roles": []string{"user", "superuser"}}).
		WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "grant an unknown role")
	apitest.Call(t, "PUT", system.account+"/v1/users/"+u.ID+"/status", admin(t), map[string]any{"status": "sleeping"}).
		WantProblem(t, http.StatusUnprocessableEntity, "validation_failed", "set an unknown status")
	if r := setStatus(t, u, "disabled"); num(r.Body, "version") != 3 || r.Str("status") != "disabled" {
		t.Errorf("after disabling: %s, want status disabled, version 3", r.Raw)
	}
}

// TestWellKnown: the public keys and the discovery document are served to anyone.
func TestWellKnown(t *testing.T) {
	t.Parallel()
	jwks := apitest.Call(t, "GET", system.account+"/.well-known/jwks.json", "", nil).Want(t, http.StatusOK, "jwks")
	keys, _ := jwks.Body["keys"].([]any)
	if len(keys) == 0 {
		t.Fatalf("jwks = %s, want keys", jwks.Raw)
	}
	for _, k := range keys {
		m, _ := k.(map[string]any)
		if m["kty"] != "OKP" || m["crv"] != "Ed25519" || m["kid"] == nil || m["x"] == nil {
			t.Errorf("key %v, want an Ed25519 OKP key with kid and x", m)
		}
		if _, private := m["d"]; private {
			t.Errorf("jwks publishes a private key: %v", m)
		}
	}
	oidc := apitest.Call(t, "GET", system.account+"/.well-known/openid-configuration", "", nil).Want(t, http.StatusOK, "openid configuration")
	if oidc.Str("issuer") == "" || !strings.HasSuffix(oidc.Str("jwks_uri"), "/.well-known/jwks.json") {
		t.Errorf("openid configuration = %s, want issuer and jwks_uri", oidc.Raw)
	}
}
