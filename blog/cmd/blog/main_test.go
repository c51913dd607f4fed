package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/authmesh/events"
	"github.com/authmesh/events/authtest"
	"github.com/authmesh/events/bus"
	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/replica/replicacmd"
	"github.com/authmesh/events/servicetest"
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

// TestCommandLine checks that the binary reads the shared command line (replicacmd.Main has the
// full table): an unknown command is a usage error, exit 2.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	var stderr strings.Builder
	err := run(t.Context(), []string{"nonsense"}, func(string) string { return "" }, io.Discard, &stderr)
	if code, ok := errors.AsType[replicacmd.ExitCode](err); !ok || code != 2 || !strings.Contains(stderr.String(), replicacmd.Usage("blog")) {
		t.Errorf("run(nonsense) = %v, stderr %q; want exit code 2 and the usage", err, stderr.String())
	}
}
