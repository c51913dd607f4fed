// Package servicetest runs a service inside a test the way its binary runs: through its run
// function, on a free loopback port, with a database and a NATS server of its own, and talks to it
// over HTTP. It also runs any other long-lived part (a replica, a relay) until the test ends, and
// waits for what must happen eventually. Production code never imports it.
package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
)

// patience bounds every wait: for a service to be ready, to stop, and to answer a request.
const patience = 30 * time.Second

// client is the client of every request; its timeout bounds a request that gets no answer.
var client = &http.Client{Timeout: patience}

// permissionViolation is how the server's refusal of a subject to an identity reads in a log.
const permissionViolation = "Permissions Violation"

// Run is a service's entry point, as its main calls it.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Env returns the environment of service (account, blog or shop) on a fresh database and a private
// NATS server, connecting as the service's own identity, and the server; LOG_LEVEL is debug, so
// that a failing test shows all the service did.
func Env(t testing.TB, service string) (map[string]string, *natstest.Server) {
	t.Helper()
	ns := natstest.New(t)
	return map[string]string{
		"DATABASE_URL": pgtest.NewDatabase(t),
		"NATS_URL":     ns.UserURL(service),
		"LOG_LEVEL":    "debug",
	}, ns
}

// Process is a service started through its run function.
type Process struct {
	// URL is the service's base URL: http:// and Addr.
	URL string
	// Addr is the address the service listens on, its HTTP_ADDR.
	Addr string
	// Env is the service's environment, HTTP_ADDR included.
	Env map[string]string

	logs syncBuffer
	bg   *background
}

// Start runs run with env, HTTP_ADDR set to a free loopback address, and returns once /readyz
// answers 200. The service runs until Stop or the end of the test; its log is shown if the test
// fails.
func Start(t testing.TB, run Run, env map[string]string) *Process {
	t.Helper()
	env = maps.Clone(env)
	env["HTTP_ADDR"] = freeAddr(t)
	p := &Process{URL: "http://" + env["HTTP_ADDR"], Addr: env["HTTP_ADDR"], Env: env}
	t.Cleanup(func() { // runs after the stop that Go registers
		if strings.Contains(p.logs.String(), permissionViolation) {
			t.Errorf("the service met a refusal of the NATS permissions of its identity (deploy/nats/auth.conf)")
		}
		if t.Failed() {
			t.Logf("service log:\n%s", p.logs.String())
		}
	})
	p.bg = start(t, func(ctx context.Context) error {
		return run(ctx, nil, func(k string) string { return env[k] }, io.Discard, &p.logs)
	})

	poll := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(patience)
	for {
		resp, err := poll.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.bg.exited:
			p.bg.once.Do(p.bg.cancel) // reported here: the stop at cleanup has nothing to add
			t.Fatalf("run returned before ready: %v", p.bg.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not ready within %v (last: %v)", patience, err)
		}
	}
}

// Stop cancels the service's context and fails the test unless run then returns nil. Only the
// first call does anything.
func (p *Process) Stop() { p.bg.stop() }

// Logs returns what the service has logged so far.
func (p *Process) Logs() string { return p.logs.String() }

// Do sends a request to the service at path, as the package's Do does.
func (p *Process) Do(t testing.TB, method, path, token, body string, headers ...string) Response {
	t.Helper()
	return Do(t, method, p.URL+path, token, body, headers...)
}

// Response is an HTTP answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the body into v, failing the test if it cannot.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request and reads the whole answer. A body that is not empty is sent as
// application/json, a token as a bearer token; headers are name, value pairs, set last, so they
// may replace the Content-Type.
func Do(t testing.TB, method, url, token, body string, headers ...string) Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
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
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Go runs f in a goroutine until stop is called or the test ends. stop cancels f's context and
// fails the test unless f then returns nil; only the first call does anything.
func Go(t testing.TB, f func(ctx context.Context) error) (stop func()) {
	t.Helper()
	return start(t, f).stop
}

// Eventually polls cond until it holds, and fails the test if it does not within the given time.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// background is a goroutine that a test owns.
type background struct {
	t      testing.TB
	cancel context.CancelFunc
	exited chan struct{} // closed once f has returned err
	err    error
	once   sync.Once
}

func start(t testing.TB, f func(ctx context.Context) error) *background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{t: t, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(b.exited)
		b.err = f(ctx)
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *background) stop() {
	b.once.Do(func() {
		b.cancel()
		select {
		case <-b.exited:
			if b.err != nil {
				b.t.Errorf("run returned %v after cancel, want nil", b.err)
			}
		case <-time.After(patience):
			b.t.Errorf("run did not return within %v of cancel", patience)
		}
	})
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// syncBuffer collects a service's log, written concurrently by its goroutines.
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
