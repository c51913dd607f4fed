package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/servicetest"
)

// These tests start the real program through run, on a database of their own and a private NATS
// server, and talk to it over HTTP.

const (
	adminEmail    = "root@example.com"
	adminPassword = "admin-password-1"
	// testSecret seals the signing keys in tests; SIGNING_KEY_SECRETS is required.
	testSecret = "a-test-secret-of-at-least-32-characters"
)

// secretEnv is a getenv with SIGNING_KEY_SECRETS set and nothing else.
func secretEnv(k string) string {
	if k == "SIGNING_KEY_SECRETS" {
		return testSecret
	}
	return ""
}

// app is a running account service.
type app struct {
	*servicetest.Process
}

// testEnv returns the environment of a service on a fresh database and NATS server, with a
// bootstrap admin and a secret for the signing keys.
func testEnv(t *testing.T) (map[string]string, *natstest.Server) {
	t.Helper()
	env, ns := servicetest.Env(t, "account")
	env["BOOTSTRAP_ADMIN_EMAIL"] = adminEmail
	env["BOOTSTRAP_ADMIN_PASSWORD"] = adminPassword
	env["SIGNING_KEY_SECRETS"] = testSecret
	return env, ns
}

// startApp runs the service with env (plus a free HTTP_ADDR) until the test ends, and returns
// once /readyz answers 200.
func startApp(t *testing.T, env map[string]string) *app {
	t.Helper()
	return &app{servicetest.Start(t, run, env)}
}

// response is an HTTP answer, read whole.
type response struct {
	servicetest.Response
}

// json decodes the body into a map.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.Body, err)
	}
	return m
}

// request sends a request with a raw body and content type.
func (a *app) request(t *testing.T, method, path, token, contentType, body string) response {
	t.Helper()
	return response{a.Do(t, method, path, token, body, "Content-Type", contentType)}
}

// do sends v as JSON (no body when v is nil).
func (a *app) do(t *testing.T, method, path, token string, v any) response {
	t.Helper()
	if v == nil {
		return response{a.Do(t, method, path, token, "")}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return response{a.Do(t, method, path, token, string(b))}
}

// want checks a response's status, and for an error its problem+json code.
func want(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
	}
	if status < 400 {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" && r.Status != http.StatusNoContent {
			t.Errorf("%s: Content-Type %q, want application/json", what, ct)
		}
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: Content-Type %q, want application/problem+json", what, ct)
	}
	p := r.json(t)
	if p["code"] != code || p["status"] != float64(status) || p["type"] != "about:blank" || p["title"] == "" {
		t.Errorf("%s: problem %s, want code %q and status %d", what, r.Body, code, status)
	}
}

// register creates a user and returns its JSON.
func (a *app) register(t *testing.T, email, password, name string) map[string]any {
	t.Helper()
	r := a.do(t, "POST", "/v1/users", "", map[string]string{"email": email, "password": password, "display_name": name})
	want(t, "register "+email, r, http.StatusCreated, "")
	return r.json(t)
}

// login returns an access token.
func (a *app) login(t *testing.T, email, password string) string {
	t.Helper()
	r := a.do(t, "POST", "/v1/tokens", "", map[string]string{"email": email, "password": password})
	want(t, "login "+email, r, http.StatusOK, "")
	tok, _ := r.json(t)["access_token"].(string)
	if tok == "" {
		t.Fatalf("login %s: no access_token in %s", email, r.Body)
	}
	return tok
}

// segment decodes part i (0 header, 1 claims) of a JWS.
func segment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	return m
}

func keysOf(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"frobnicate"}, {"keys"}, {"keys", "burn"}, {"keys", "reseal", "all"}, {"serve", "now"},
		{"outbox", "republish", "--since", "yesterday"}, {"outbox", "reconcile", "all"}, {"outbox", "status", "--json"}} {
		var stderr bytes.Buffer
		err := run(t.Context(), args, secretEnv, io.Discard, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want errUsage", args, err)
		}
		if !strings.Contains(stderr.String(), "usage: account") {
			t.Errorf("run(%q) stderr = %q, want the usage", args, stderr.String())
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"keys", "rotate", "--help"}, {"keys", "reseal", "--help"}, {"outbox", "status", "-h"}, {"outbox", "republish", "--help"}, {"outbox", "reconcile", "--help"}} {
		var stdout bytes.Buffer
		if err := run(t.Context(), args, func(string) string { return "" }, &stdout, io.Discard); err != nil {
			t.Errorf("run(%q) = %v, want nil", args, err)
		}
		if !strings.Contains(stdout.String(), "usage: account") {
			t.Errorf("run(%q) stdout = %q, want the usage", args, stdout.String())
		}
		for _, want := range []string{"keys reseal", "outbox reconcile", "SIGNING_KEY_SECRETS"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("run(%q): the usage does not mention %s", args, want)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	const short = "only-thirty-one-characters-long"
	tests := []struct {
		name string
		env  map[string]string
		want string // in the error
	}{
		{"half-set admin email", map[string]string{"BOOTSTRAP_ADMIN_EMAIL": "a@example.com"}, "must be set together"},
		{"half-set admin password", map[string]string{"BOOTSTRAP_ADMIN_PASSWORD": "secret-password"}, "must be set together"},
		{"bad admin email", map[string]string{"BOOTSTRAP_ADMIN_EMAIL": "nope", "BOOTSTRAP_ADMIN_PASSWORD": "secret-password"}, "BOOTSTRAP_ADMIN_EMAIL"},
		{"short admin password", map[string]string{"BOOTSTRAP_ADMIN_EMAIL": "a@example.com", "BOOTSTRAP_ADMIN_PASSWORD": "short"}, "BOOTSTRAP_ADMIN_PASSWORD"},
		{"bad ttl", map[string]string{"TOKEN_TTL": "forever"}, "TOKEN_TTL"},
		{"negative ttl", map[string]string{"TOKEN_TTL": "-5m"}, "TOKEN_TTL"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"relative public URL", map[string]string{"PUBLIC_URL": "id.example.com"}, "PUBLIC_URL"},
		{"public URL with a query", map[string]string{"PUBLIC_URL": "https://id.example.com/?x=1"}, "PUBLIC_URL"},
		{"bad trusted proxy", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"}, "TRUSTED_PROXIES"},
		{"bad trusted prefix", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"},
		{"no signing key secret", map[string]string{"SIGNING_KEY_SECRETS": ""}, "SIGNING_KEY_SECRETS is not set"},
		{"blank signing key secret", map[string]string{"SIGNING_KEY_SECRETS": " , "}, "SIGNING_KEY_SECRETS"},
		{"short signing key secret", map[string]string{"SIGNING_KEY_SECRETS": short}, "SIGNING_KEY_SECRETS"},
		{"short second signing key secret", map[string]string{"SIGNING_KEY_SECRETS": testSecret + "," + short}, "SIGNING_KEY_SECRETS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if v, ok := tt.env[k]; ok {
					return v
				}
				return secretEnv(k)
			}
			err := run(t.Context(), nil, getenv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is not one line: %q", err)
			}
			if strings.Contains(err.Error(), "short") && tt.name == "short admin password" {
				t.Errorf("the error quotes the password: %v", err)
			}
			if strings.Contains(err.Error(), short) || strings.Contains(err.Error(), testSecret) {
				t.Errorf("the error quotes a secret: %v", err)
			}
		})
	}
	// Every command needs the secret, not only serve.
	for _, args := range [][]string{{"keys", "rotate"}, {"keys", "reseal"}, {"outbox", "status"}} {
		err := run(t.Context(), args, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "SIGNING_KEY_SECRETS") {
			t.Errorf("run(%q) without SIGNING_KEY_SECRETS = %v, want an error naming it", args, err)
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(secretEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8081" || cfg.TokenTTL != 15*time.Minute || cfg.TokenIssuer != "account" ||
		cfg.DatabaseURL != "postgres://postgres@127.0.0.1:5432/account?sslmode=disable" || cfg.NATSURL != "nats://127.0.0.1:4222" {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.PublicURL != "http://127.0.0.1:8081" {
		t.Errorf("PublicURL = %q by default, want http://127.0.0.1:8081", cfg.PublicURL)
	}
	if cfg.TrustedProxies != nil {
		t.Errorf("TrustedProxies = %v by default, want none", cfg.TrustedProxies)
	}
	attrs := config{Config: cfg.Config, AdminEmail: "a@example.com", AdminPassword: "top-secret-pw", Sealer: cfg.Sealer}.logAttrs()
	for _, v := range attrs {
		if s, ok := v.(string); ok && (strings.Contains(s, "top-secret-pw") || strings.Contains(s, testSecret)) {
			t.Errorf("logged configuration holds the admin password or a secret: %v", attrs)
		}
	}
	if !slices.Contains(attrs, any("signing_key_secrets")) || cfg.Sealer.Len() != 1 {
		t.Errorf("logged configuration %v does not count the secrets (%d)", attrs, cfg.Sealer.Len())
	}
	cfg.NATSURL = "nats://account:s3cr3t-pw@host:4222,nats://t0k3n-value@other:4222"
	if got := fmt.Sprint(config{Config: cfg.Config, Sealer: cfg.Sealer}.logAttrs()...); strings.Contains(got, "s3cr3t-pw") || strings.Contains(got, "t0k3n-value") {
		t.Errorf("logged configuration %q holds NATS credentials", got)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"10.0.0.0/8", []string{"10.0.0.0/8"}},
		{" 10.0.0.0/8 , 192.168.1.0/24,fd00::/8 ", []string{"10.0.0.0/8", "192.168.1.0/24", "fd00::/8"}},
		{"10.1.2.3/8", []string{"10.0.0.0/8"}}, // host bits dropped
		{"127.0.0.1,::1", []string{"127.0.0.1/32", "::1/128"}},
		{"10.0.0.0/8,", []string{"10.0.0.0/8"}},
	}
	for _, tt := range tests {
		ps, err := parseTrustedProxies(tt.in)
		if err != nil {
			t.Errorf("parseTrustedProxies(%q): %v", tt.in, err)
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseTrustedProxies(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, in := range []string{"localhost", "10.0.0.0/33", "10.0.0.0/", "1.2.3.4.5", "10.0.0.0/8;192.168.0.0/16"} {
		if _, err := parseTrustedProxies(in); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
			t.Errorf("parseTrustedProxies(%q) error = %v, want one naming TRUSTED_PROXIES", in, err)
		}
	}
}

func TestPublicURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://id.example.com":          "https://id.example.com",
		"https://id.example.com/":         "https://id.example.com",
		"HTTPS://id.example.com/account/": "https://id.example.com/account",
		"http://127.0.0.1:8081":           "http://127.0.0.1:8081",
		"http://[::1]:8081":               "http://[::1]:8081",
	} {
		if got, err := parsePublicURL(in); err != nil || got != want {
			t.Errorf("parsePublicURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"id.example.com", "/account", "ftp://id.example.com", "https://", "http://:8081",
		"https://user:pw@id.example.com", "https://id.example.com/?a=b", "https://id.example.com/?",
		"https://id.example.com/#top", "https://id.example.com#", "mailto:a@example.com", "https://exa mple.com"} {
		if got, err := parsePublicURL(in); err == nil || !strings.Contains(err.Error(), "PUBLIC_URL") {
			t.Errorf("parsePublicURL(%q) = %q, %v; want an error naming PUBLIC_URL", in, got, err)
		}
	}
	// By default, the listening address.
	for addr, want := range map[string]string{"0.0.0.0:8081": "http://0.0.0.0:8081", ":8081": "http://localhost:8081"} {
		cfg, err := loadConfig(func(k string) string {
			return map[string]string{"HTTP_ADDR": addr, "SIGNING_KEY_SECRETS": testSecret}[k]
		})
		if err != nil || cfg.PublicURL != want {
			t.Errorf("PublicURL with HTTP_ADDR %q = %q, %v; want %q", addr, cfg.PublicURL, err, want)
		}
	}
}
