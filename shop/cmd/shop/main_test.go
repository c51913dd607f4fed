package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// syncBuffer collects the process's log, shown when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// shopProcess is the shop started through run, as its binary would be.
type shopProcess struct {
	url string
	js  jetstream.JetStream
	env map[string]string // the process's environment, for the replica commands
}

// start runs the shop until the test ends, with its own database and NATS server, and checks that
// it then stops cleanly. It returns once the shop is ready, with iss's keys published.
func start(t *testing.T, iss *authtest.Issuer) *shopProcess {
	t.Helper()
	ns := natstest.New(t)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	iss.PublishKeys(t, js)

	addr := freeAddr(t)
	env := map[string]string{
		"HTTP_ADDR":    addr,
		"DATABASE_URL": pgtest.NewDatabase(t),
		"NATS_URL":     ns.URL,
		"LOG_LEVEL":    "debug",
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v after cancel, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("run did not return within 30s of cancel")
		}
		if t.Failed() {
			t.Logf("shop log:\n%s", logs.String())
		}
	})

	p := &shopProcess{url: "http://" + addr, js: js, env: env}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("run returned before ready: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("shop not ready within 30s (last: %v)\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; headers are name, value pairs.
func (p *shopProcess) do(t *testing.T, method, path, token, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, p.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// authenticated waits until the shop accepts token, answering something else than 503
// replica_lagging; a token issued at a user's new version thus proves the replica has applied it.
func (p *shopProcess) authenticated(t *testing.T, token string) {
	t.Helper()
	for range 20 { // each try waits up to the replica's 2 s before answering 503
		res := p.do(t, "GET", "/v1/orders", token, "")
		switch res.status {
		case http.StatusOK:
			return
		case http.StatusServiceUnavailable:
			continue
		default:
			t.Fatalf("probe with a fresh token = %d %s, want 200", res.status, res.body)
		}
	}
	t.Fatal("the replica never caught up with the token")
}

func code(t *testing.T, r response) string {
	t.Helper()
	var p struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", r.body, err)
	}
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
	res := p.do(t, "POST", "/v1/products", adminToken, `{"name":"Mug","price_cents":1200,"stock":5}`)
	if res.status != http.StatusCreated {
		t.Fatalf("POST /v1/products as admin = %d %s, want 201", res.status, res.body)
	}
	var mug struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(res.body, &mug); err != nil {
		t.Fatal(err)
	}

	// The buyer orders two, then retries the same request.
	order := `{"items":[{"product_id":"` + mug.ID + `","quantity":2}]}`
	first := p.do(t, "POST", "/v1/orders", oldToken, order, "Idempotency-Key", "first-order")
	if first.status != http.StatusCreated {
		t.Fatalf("POST /v1/orders = %d %s, want 201", first.status, first.body)
	}
	retry := p.do(t, "POST", "/v1/orders", oldToken, order, "Idempotency-Key", "first-order")
	if retry.status != http.StatusCreated || !bytes.Equal(retry.body, first.body) || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry = %d %s (replayed %q), want the first response replayed", retry.status, retry.body, retry.header.Get("Idempotent-Replayed"))
	}
	res = p.do(t, "POST", "/v1/orders", oldToken, `{"items":[{"product_id":"`+mug.ID+`","quantity":4}]}`)
	if res.status != http.StatusConflict || code(t, res) != "out_of_stock" {
		t.Errorf("order beyond stock = %d %s, want 409 out_of_stock", res.status, res.body)
	}

	// Not an admin yet.
	res = p.do(t, "POST", "/v1/products", oldToken, `{"name":"Plate","price_cents":900,"stock":1}`)
	if res.status != http.StatusForbidden || code(t, res) != "forbidden" {
		t.Fatalf("POST /v1/products as user = %d %s, want 403 forbidden", res.status, res.body)
	}

	// Granted admin by an event: the same old token now suffices.
	buyer.Roles, buyer.Version = events.NormalizeRoles([]string{events.RoleAdmin}), 2
	authtest.PublishUser(t, p.js, events.UserRoleChanged, buyer)
	p.authenticated(t, iss.Token(t, buyer))
	res = p.do(t, "POST", "/v1/products", oldToken, `{"name":"Plate","price_cents":900,"stock":1}`)
	if res.status != http.StatusCreated {
		t.Fatalf("POST /v1/products with the old token after the grant = %d %s, want 201", res.status, res.body)
	}

	// Disabled by an event: the same old token is refused.
	buyer.Status, buyer.Version = events.StatusDisabled, 3
	authtest.PublishUser(t, p.js, events.UserStatusChanged, buyer)
	fresh := iss.Token(t, buyer) // at version 3: answered only once the replica has applied it
	for range 20 {
		if res = p.do(t, "GET", "/v1/orders", fresh, ""); res.status != http.StatusServiceUnavailable {
			break
		}
	}
	res = p.do(t, "GET", "/v1/orders", oldToken, "")
	if res.status != http.StatusForbidden || code(t, res) != "user_disabled" {
		t.Errorf("GET /v1/orders after disabling = %d %s, want 403 user_disabled", res.status, res.body)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	for _, args := range [][]string{{"nonsense"}, {"serve", "extra"}} {
		var stderr strings.Builder
		err := run(t.Context(), args, getenv, io.Discard, &stderr)
		if code, ok := errors.AsType[exitCode](err); !ok || code != 2 || !strings.Contains(stderr.String(), usage) {
			t.Errorf("run(%q) = %v, stderr %q; want exit code 2 and the usage", args, err, stderr.String())
		}
	}
	for _, arg := range []string{"-h", "--help", "help"} {
		var stdout strings.Builder
		if err := run(t.Context(), []string{arg}, getenv, &stdout, io.Discard); err != nil || !strings.Contains(stdout.String(), usage) {
			t.Errorf("run(%q) = %v, stdout %q; want nil and the usage", arg, err, stdout.String())
		}
	}
}
