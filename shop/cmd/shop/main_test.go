package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/service"
	"github.com/authmesh/events/servicetest"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// shopProcess is the shop started through run, as its binary would be.
type shopProcess struct {
	*servicetest.Process
	js jetstream.JetStream
}

// start runs the shop until the test ends, with its own database and NATS server, and checks that
// it then stops cleanly. It returns once the shop is ready, with iss's keys published.
func start(t *testing.T, iss *authtest.Issuer) *shopProcess {
	t.Helper()
	env, ns := servicetest.Env(t, "shop")
	js := ns.JetStream(t, natstest.Account) // what account creates and publishes
	if _, err := bus.EnsureStream(t.Context(), js); err != nil {
		t.Fatalf("stream: %v", err)
	}
	iss.PublishKeys(t, js)
	return &shopProcess{Process: servicetest.Start(t, run, env), js: js}
}

// authenticated waits until the shop accepts token, answering something else than 503
// replica_lagging; a token issued at a user's new version thus proves the replica has applied it.
func (p *shopProcess) authenticated(t *testing.T, token string) {
	t.Helper()
	for range 20 { // each try waits up to the replica's 2 s before answering 503
		res := p.Do(t, "GET", "/v1/orders", token, "")
		switch res.Status {
		case http.StatusOK:
			return
		case http.StatusServiceUnavailable:
			continue
		default:
			t.Fatalf("probe with a fresh token = %d %s, want 200", res.Status, res.Body)
		}
	}
	t.Fatal("the replica never caught up with the token")
}

func code(t *testing.T, r servicetest.Response) string {
	t.Helper()
	var p struct {
		Code string `json:"code"`
	}
	r.Decode(t, &p)
	return p.Code
}

func TestShopThroughRun(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	p := start(t, iss)

	admin := authtest.NewUser(events.RoleAdmin)
	buyer := authtest.NewUser()
	authtest.PublishUser(t, p.js, events.UserCreated, admin)
	authtest.PublishUser(t, p.js, events.UserCreated, buyer)
	adminToken := iss.Token(t, admin)
	oldToken := iss.Token(t, buyer) // issued before any change; its roles claim says "user"
	p.authenticated(t, adminToken)
	p.authenticated(t, oldToken)

	// The admin stocks a product.
	res := p.Do(t, "POST", "/v1/products", adminToken, `{"name":"Mug","price_cents":1200,"stock":5}`)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/products as admin = %d %s, want 201", res.Status, res.Body)
	}
	var mug struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(res.Body, &mug); err != nil {
		t.Fatal(err)
	}

	// The buyer orders two, then retries the same request.
	order := `{"items":[{"product_id":"` + mug.ID + `","quantity":2}]}`
	first := p.Do(t, "POST", "/v1/orders", oldToken, order, "Idempotency-Key", "first-order")
	if first.Status != http.StatusCreated {
		t.Fatalf("POST /v1/orders = %d %s, want 201", first.Status, first.Body)
	}
	retry := p.Do(t, "POST", "/v1/orders", oldToken, order, "Idempotency-Key", "first-order")
	if retry.Status != http.StatusCreated || !bytes.Equal(retry.Body, first.Body) || retry.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry = %d %s (replayed %q), want the first response replayed", retry.Status, retry.Body, retry.Header.Get("Idempotent-Replayed"))
	}
	res = p.Do(t, "POST", "/v1/orders", oldToken, `{"items":[{"product_id":"`+mug.ID+`","quantity":4}]}`)
	if res.Status != http.StatusConflict || code(t, res) != "out_of_stock" {
		t.Errorf("order beyond stock = %d %s, want 409 out_of_stock", res.Status, res.Body)
	}

	// Not an admin yet.
	res = p.Do(t, "POST", "/v1/products", oldToken, `{"name":"Plate","price_cents":900,"stock":1}`)
	if res.Status != http.StatusForbidden || code(t, res) != "forbidden" {
		t.Fatalf("POST /v1/products as user = %d %s, want 403 forbidden", res.Status, res.Body)
	}

	// Granted admin by an event: the same old token now suffices.
	buyer.Roles, buyer.Version = events.NormalizeRoles([]string{events.RoleAdmin}), 2
	authtest.PublishUser(t, p.js, events.UserRoleChanged, buyer)
	p.authenticated(t, iss.Token(t, buyer))
	res = p.Do(t, "POST", "/v1/products", oldToken, `{"name":"Plate","price_cents":900,"stock":1}`)
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/products with the old token after the grant = %d %s, want 201", res.Status, res.Body)
	}

	// Disabled by an event: the same old token is refused.
	buyer.Status, buyer.Version = events.StatusDisabled, 3
	authtest.PublishUser(t, p.js, events.UserStatusChanged, buyer)
	fresh := iss.Token(t, buyer) // at version 3: answered only once the replica has applied it
	for range 20 {
		if res = p.Do(t, "GET", "/v1/orders", fresh, ""); res.Status != http.StatusServiceUnavailable {
			break
		}
	}
	res = p.Do(t, "GET", "/v1/orders", oldToken, "")
	if res.Status != http.StatusForbidden || code(t, res) != "user_disabled" {
		t.Errorf("GET /v1/orders after disabling = %d %s, want 403 user_disabled", res.Status, res.Body)
	}
}

// TestCommandLine checks the command line that main reads: serve, replica, help; anything else is
// a usage error (exit 2) that prints the usage.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	for _, args := range [][]string{{"nonsense"}, {"serve", "extra"}} {
		var stderr strings.Builder
		err := run(t.Context(), args, getenv, io.Discard, &stderr)
		if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), usage) {
			t.Errorf("run(%q) = %v, stderr %q; want errUsage and the usage", args, err, stderr.String())
		}
	}
	for _, arg := range []string{"-h", "--help", "help"} {
		var stdout strings.Builder
		if err := run(t.Context(), []string{arg}, getenv, &stdout, io.Discard); err != nil || stdout.String() != usage+"\n" {
			t.Errorf("run(%q) = %v, stdout %q; want nil and the usage", arg, err, stdout.String())
		}
	}
	if err := run(t.Context(), []string{"replica", "frobnicate"}, getenv, io.Discard, io.Discard); err != replicacmd.ExitCode(2) {
		t.Errorf("run(replica frobnicate) = %v, want ExitCode(2)", err)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    config
		wantErr string
	}{
		{
			name: "defaults",
			want: config{Config: service.Config{Name: "shop", HTTPAddr: "127.0.0.1:8083",
				DatabaseURL: "postgres://postgres@127.0.0.1:5432/shop?sslmode=disable",
				NATSURL:     "nats://127.0.0.1:4222", LogLevel: "info"}, TokenIssuer: "account"},
		},
		{
			name: "set",
			env: map[string]string{"HTTP_ADDR": ":9000", "DATABASE_URL": "postgres://db/shop", "NATS_URL": "nats://n:4222",
				"NATS_CREDS": "/run/shop.creds", "LOG_LEVEL": "debug", "TOKEN_ISSUER": " https://id.example.com "},
			want: config{Config: service.Config{Name: "shop", HTTPAddr: ":9000", DatabaseURL: "postgres://db/shop",
				NATSURL: "nats://n:4222", NATSCreds: "/run/shop.creds", LogLevel: "debug"}, TokenIssuer: "https://id.example.com"},
		},
		{name: "bad log level", env: map[string]string{"LOG_LEVEL": "loud"}, wantErr: "LOG_LEVEL"},
		{name: "bad database url", env: map[string]string{"DATABASE_URL": "::nonsense"}, wantErr: "DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadConfig() = %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("loadConfig() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLogAttrs: the configuration logged at start names the servers but not their passwords.
func TestLogAttrs(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"DATABASE_URL": "postgres://shop:db-pw-123@db:5432/shop",
		"NATS_URL":     "nats://shop:nats-pw-456@n1:4222,nats://shop:nats-pw-456@n2:4222",
	}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintln(cfg.logAttrs()...)
	for _, secret := range []string{"db-pw-123", "nats-pw-456"} {
		if strings.Contains(got, secret) {
			t.Errorf("logged configuration %q holds %q", got, secret)
		}
	}
	for _, want := range []string{"db:5432", "n1:4222", "n2:4222", "token_issuer account"} {
		if !strings.Contains(got, want) {
			t.Errorf("logged configuration %q lacks %q", got, want)
		}
	}
}
