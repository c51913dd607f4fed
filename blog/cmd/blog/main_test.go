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
	"github.com/google/uuid"
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

// blogProcess is the blog started through run, as its binary would be.
type blogProcess struct {
	url string
	js  jetstream.JetStream
	env map[string]string // the process's environment, for the replica commands
}

// start runs the blog until the test ends, with its own database and NATS server, and checks
// that it then stops cleanly. It returns once the blog is ready, with iss's keys published.
func start(t *testing.T, iss *authtest.Issuer) *blogProcess {
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
			t.Logf("blog log:\n%s", logs.String())
		}
	})

	p := &blogProcess{url: "http://" + addr, js: js, env: env}
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
			t.Fatalf("blog not ready within 30s (last: %v)\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *blogProcess) do(t *testing.T, method, path, token, body string) (int, []byte) {
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// authenticated waits until the blog accepts token, answering something else than 503
// replica_lagging; a token issued at a user's new version thus proves the replica has applied it.
func (p *blogProcess) authenticated(t *testing.T, token string) {
	t.Helper()
	for range 20 { // each try waits up to the replica's 2 s before answering 503
		status, body := p.do(t, "DELETE", "/v1/posts/"+uuid.NewString(), token, "")
		switch status {
		case http.StatusNotFound:
			return
		case http.StatusServiceUnavailable:
			continue
		default:
			t.Fatalf("probe with a fresh token = %d %s, want 404", status, body)
		}
	}
	t.Fatal("the replica never caught up with the token")
}

func (p *blogProcess) createPost(t *testing.T, token string) string {
	t.Helper()
	var status int
	var body []byte
	for range 20 { // the first request of a new user may find the replica not there yet
		status, body = p.do(t, "POST", "/v1/posts", token, `{"title":"Hello","body":"World"}`)
		if status != http.StatusServiceUnavailable {
			break
		}
	}
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/posts = %d %s, want 201", status, body)
	}
	var post struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &post); err != nil {
		t.Fatal(err)
	}
	return "/v1/posts/" + post.ID
}

func TestRoleChangesApplyToOldTokens(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	p := start(t, iss)

	author := authtest.NewUser()
	other := authtest.NewUser()
	authtest.PublishUser(t, p.js, events.UserCreated, author)
	authtest.PublishUser(t, p.js, events.UserCreated, other)
	authorToken := iss.Token(t, author)
	oldToken := iss.Token(t, other) // issued before any role change; its roles claim says "user"

	first := p.createPost(t, authorToken)
	second := p.createPost(t, authorToken)
	if status, body := p.do(t, "DELETE", first, oldToken, ""); status != http.StatusForbidden {
		t.Fatalf("DELETE by another user = %d %s, want 403", status, body)
	}

	// Grant moderator: the same old token may now delete another user's post.
	other.Roles, other.Version = events.NormalizeRoles([]string{events.RoleModerator}), 2
	authtest.PublishUser(t, p.js, events.UserRoleChanged, other)
	p.authenticated(t, iss.Token(t, other))
	if status, body := p.do(t, "DELETE", first, oldToken, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE by the new moderator with the old token = %d %s, want 204", status, body)
	}
	if status, _ := p.do(t, "GET", first, "", ""); status != http.StatusNotFound {
		t.Errorf("GET deleted post = %d, want 404", status)
	}

	// Revoke it: the same old token is refused again.
	other.Roles, other.Version = events.NormalizeRoles(nil), 3
	authtest.PublishUser(t, p.js, events.UserRoleChanged, other)
	p.authenticated(t, iss.Token(t, other))
	if status, body := p.do(t, "DELETE", second, oldToken, ""); status != http.StatusForbidden {
		t.Fatalf("DELETE after the role was revoked = %d %s, want 403", status, body)
	}
	if status, _ := p.do(t, "GET", second, "", ""); status != http.StatusOK {
		t.Errorf("GET post after refused delete = %d, want 200", status)
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
