package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/pgtest"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// replica runs `blog replica args...` through run and returns its error and output.
func (p *blogProcess) replica(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, append([]string{"replica"}, args...), func(k string) string { return p.Env[k] }, &out, &out)
	return out.String(), err
}

func TestReplicaRebuildWhileServing(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t)
	p := start(t, iss)
	var tokens []string
	for range 100 {
		u := authtest.NewUser()
		authtest.PublishUser(t, p.js, events.UserCreated, u)
		tokens = append(tokens, iss.Token(t, u))
	}
	for _, tok := range tokens {
		p.authenticated(t, tok)
	}

	// Clients keep making authorized requests (each authorizes from the replica, then finds no
	// such post) for the whole of two rebuilds.
	var requests, failures atomic.Int64
	var mu sync.Mutex
	var firstFailure string
	ctx, stop := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	for c := range 3 {
		clients.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for i := c; ctx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(ctx, "DELETE", p.URL+"/v1/posts/"+uuid.NewString(), nil)
				req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				requests.Add(1)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusNotFound {
					failures.Add(1)
					mu.Lock()
					if firstFailure == "" {
						firstFailure = "request failed: "
						if err != nil {
							firstFailure += err.Error()
						} else {
							firstFailure += resp.Status
						}
					}
					mu.Unlock()
				}
			}
		})
	}
	for range 2 {
		if out, err := p.replica(t, "rebuild"); err != nil {
			t.Errorf("replica rebuild = %v\n%s", err, out)
		} else if !strings.Contains(out, "events read 100, applied 100, skipped 0") {
			t.Errorf("replica rebuild output:\n%s", out)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for before := requests.Load(); requests.Load() < before+20 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // some requests after the last swap too
	}
	stop()
	clients.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d authorized requests failed during the rebuilds; first: %s", n, requests.Load(), firstFailure)
	}
	if requests.Load() == 0 {
		t.Error("no request made during the rebuilds")
	}
	t.Logf("%d authorized requests during the rebuilds", requests.Load())

	if out, err := p.replica(t, "verify"); err != nil {
		t.Errorf("replica verify = %v\n%s", err, out)
	}
	// A row changed by hand: verify reports it, and the exit code reaches main.
	conn, err := pgx.Connect(context.Background(), p.Env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE replica_users SET roles = '{user,admin}' WHERE id = (SELECT id FROM replica_users LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	out, err := p.replica(t, "verify")
	var code replicacmd.ExitCode
	if !errors.As(err, &code) || code != 1 || !strings.Contains(out, "roles replica [user,admin] stream [user]") {
		t.Errorf("replica verify of a tampered row = %v\n%s\nwant exit code 1 naming the field", err, out)
	}
}

func TestReplicaUsage(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.NewDatabase(t), "NATS_URL": "nats://127.0.0.1:1"}
	getenv := func(k string) string { return env[k] }
	var out bytes.Buffer
	if err := run(t.Context(), []string{"replica", "--help"}, getenv, &out, &out); err != nil || !strings.Contains(out.String(), "usage: blog replica") {
		t.Errorf("replica --help = %v, %q", err, out.String())
	}
	tests := []struct {
		args []string
		want replicacmd.ExitCode
	}{
		{[]string{"replica", "nonsense"}, 2},
		{[]string{"replica", "rebuild", "--since", "soon"}, 2},
		{[]string{"replica", "status"}, 1}, // NATS unreachable
	}
	for _, tt := range tests {
		err := run(t.Context(), tt.args, getenv, &out, &out)
		var code replicacmd.ExitCode
		if !errors.As(err, &code) || code != tt.want {
			t.Errorf("run(%q) = %v, want exit code %d", tt.args, err, tt.want)
		}
	}
}
