package main

import (
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
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// blogProcess is the blog started through run, as its binary would be.
type blogProcess struct {
	*servicetest.Process
	js jetstream.JetStream
}

// start runs the blog until the test ends, with its own database and NATS server, and checks
// that it then stops cleanly. It returns once the blog is ready, with iss's keys published.
func start(t *testing.T, iss *authtest.Issuer) *blogProcess {
	t.Helper()
	env, ns := servicetest.Env(t, "blog")
	js := ns.JetStream(t, natstest.Account) // what account creates and publishes
	if _, err := bus.EnsureStream(t.Context(), js); err != nil {
		t.Fatalf("stream: %v", err)
	}
	iss.PublishKeys(t, js)
	return &blogProcess{Process: servicetest.Start(t, run, env), js: js}
}

// authenticated waits until the blog accepts token, answering something else than 503
// replica_lagging; a token issued at a user's new version thus proves the replica has applied it.
func (p *blogProcess) authenticated(t *testing.T, token string) {
	t.Helper()
	for range 20 { // each try waits up to the replica's 2 s before answering 503
		res := p.Do(t, "DELETE", "/v1/posts/"+uuid.NewString(), token, "")
		switch res.Status {
		case http.StatusNotFound:
			return
		case http.StatusServiceUnavailable:
			continue
		default:
			t.Fatalf("probe with a fresh token = %d %s, want 404", res.Status, res.Body)
		}
	}
	t.Fatal("the replica never caught up with the token")
}

func (p *blogProcess) createPost(t *testing.T, token string) string {
	t.Helper()
	var res servicetest.Response
	for range 20 { // the first request of a new user may find the replica not there yet
		res = p.Do(t, "POST", "/v1/posts", token, `{"title":"Hello","body":"World"}`)
		if res.Status != http.StatusServiceUnavailable {
			break
		}
	}
	if res.Status != http.StatusCreated {
		t.Fatalf("POST /v1/posts = %d %s, want 201", res.Status, res.Body)
	}
	var post struct {
		ID string `json:"id"`
	}
	res.Decode(t, &post)
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
	if res := p.Do(t, "DELETE", first, oldToken, ""); res.Status != http.StatusForbidden {
		t.Fatalf("DELETE by another user = %d %s, want 403", res.Status, res.Body)
	}

	// Grant moderator: the same old token may now delete another user's post.
	other.Roles, other.Version = events.NormalizeRoles([]string{events.RoleModerator}), 2
	authtest.PublishUser(t, p.js, events.UserRoleChanged, other)
	p.authenticated(t, iss.Token(t, other))
	if res := p.Do(t, "DELETE", first, oldToken, ""); res.Status != http.StatusNoContent {
		t.Fatalf("DELETE by the new moderator with the old token = %d %s, want 204", res.Status, res.Body)
	}
	if res := p.Do(t, "GET", first, "", ""); res.Status != http.StatusNotFound {
		t.Errorf("GET deleted post = %d, want 404", res.Status)
	}

	// Revoke it: the same old token is refused again.
	other.Roles, other.Version = events.NormalizeRoles(nil), 3
	authtest.PublishUser(t, p.js, events.UserRoleChanged, other)
	p.authenticated(t, iss.Token(t, other))
	if res := p.Do(t, "DELETE", second, oldToken, ""); res.Status != http.StatusForbidden {
		t.Fatalf("DELETE after the role was revoked = %d %s, want 403", res.Status, res.Body)
	}
	if res := p.Do(t, "GET", second, "", ""); res.Status != http.StatusOK {
		t.Errorf("GET post after refused delete = %d, want 200", res.Status)
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
			want: config{Config: service.Config{Name: "blog", HTTPAddr: "127.0.0.1:8082",
				DatabaseURL: "postgres://postgres@127.0.0.1:5432/blog?sslmode=disable",
				NATSURL:     "nats://127.0.0.1:4222", LogLevel: "info"}, TokenIssuer: "account"},
		},
		{
			name: "set",
			env: map[string]string{"HTTP_ADDR": ":9000", "DATABASE_URL": "postgres://db/blog", "NATS_URL": "nats://n:4222",
				"NATS_CREDS": "/run/blog.creds", "LOG_LEVEL": "debug", "TOKEN_ISSUER": " https://id.example.com "},
			want: config{Config: service.Config{Name: "blog", HTTPAddr: ":9000", DatabaseURL: "postgres://db/blog",
				NATSURL: "nats://n:4222", NATSCreds: "/run/blog.creds", LogLevel: "debug"}, TokenIssuer: "https://id.example.com"},
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
		"DATABASE_URL": "postgres://blog:db-pw-123@db:5432/blog",
		"NATS_URL":     "nats://blog:nats-pw-456@n1:4222,nats://blog:nats-pw-456@n2:4222",
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
