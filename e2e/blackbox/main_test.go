package blackbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/apivalidate"
	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events/natstest"
	"github.com/google/uuid"
)

// system is the system under test.
var system struct {
	account, blog, shop string // base URLs
	natsURL             string
	adminEmail          string
	adminPassword       string
	// own says the suite started the system itself (and may rely on NATS and the commands).
	own bool
	// operator returns the command that runs an operator command of a service, or an error
	// saying why there is none.
	operator func(ctx context.Context, service string, args ...string) (*exec.Cmd, error)
	// events holds the events the tests read to docs/asyncapi.yaml (see runValidated).
	events *apivalidate.Events
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	system.adminEmail = env("ADMIN_EMAIL", "admin@example.com")
	system.adminPassword = env("ADMIN_PASSWORD", "admin-password")
	if os.Getenv("ACCOUNT_URL") != "" {
		useRunning()
		return runValidated(m)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	s, err := stack.New(ctx, stack.Options{AdminEmail: system.adminEmail, AdminPassword: system.adminPassword, LogLevel: "info"})
	cancel()
	if errors.Is(err, stack.ErrNoPostgres) && os.Getenv("CI") == "" {
		fmt.Println("skipping the black-box suite:", err)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the system:", err)
		return 1
	}
	system.own = true
	system.account, system.blog, system.shop = s.URL["account"], s.URL["blog"], s.URL["shop"]
	system.natsURL = s.NATS.UserURL(natstest.Ops)
	system.operator = func(ctx context.Context, service string, args ...string) (*exec.Cmd, error) {
		return s.Cmd(ctx, service, args...), nil
	}

	code := runValidated(m)
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the system:", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprint(os.Stderr, s.Logs(60))
	}
	return code
}

// runValidated runs the tests holding every request they make and every answer they get to the
// OpenAPI documents the services serve at /openapi.json, and the events they read to
// docs/asyncapi.yaml (package e2e/apivalidate): a disagreement fails the test that met it, naming
// the operation and what differs. With -v it prints how much of the documents the tests reached.
func runValidated(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := apivalidate.ForServices(ctx, map[string]string{"account": system.account, "blog": system.blog, "shop": system.shop})
	if err != nil {
		fmt.Fprintln(os.Stderr, "the services' OpenAPI documents:", err)
		return 1
	}
	root, err := stack.WorkspaceRoot(ctx)
	if err == nil {
		system.events, err = apivalidate.LoadEvents(filepath.Join(root, "docs", "asyncapi.yaml"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "the AsyncAPI document:", err)
		return 1
	}
	defer apitest.SetObserver(v.Observe)()
	code := m.Run()
	if testing.Verbose() {
		fmt.Print(v.Report())
	}
	return code
}

// useRunning configures the suite for the system at ACCOUNT_URL and its companions.
func useRunning() {
	system.account = strings.TrimRight(os.Getenv("ACCOUNT_URL"), "/")
	system.blog = strings.TrimRight(env("BLOG_URL", "http://127.0.0.1:8082"), "/")
	system.shop = strings.TrimRight(env("SHOP_URL", "http://127.0.0.1:8083"), "/")
	root, rootErr := stack.WorkspaceRoot(context.Background())
	system.natsURL = env("NATS_URL", runEnv(root, "ops")["NATS_URL"])
	if system.natsURL == "" {
		system.natsURL = "nats://127.0.0.1:4222"
	}
	system.operator = func(ctx context.Context, service string, args ...string) (*exec.Cmd, error) {
		name := strings.ToUpper(service) + "_CMD"
		if argv := strings.Fields(os.Getenv(name)); len(argv) > 0 {
			return exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...), nil
		}
		if rootErr != nil {
			return nil, fmt.Errorf("%s is unset and %w", name, rootErr)
		}
		bin := filepath.Join(root, "bin", service)
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%s is unset and %s does not exist (make build)", name, bin)
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = os.Environ()
		for k, v := range runEnv(root, service) {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		return cmd, nil
	}
}

// runEnv returns the environment that `make run` gave a service (or "ops", the NATS operator),
// from tmp/env/<name>.env of the workspace at root; none when there is no such file.
func runEnv(root, name string) map[string]string {
	vars := map[string]string{}
	if root == "" {
		return vars
	}
	raw, err := os.ReadFile(filepath.Join(root, "tmp", "env", name+".env"))
	if err != nil {
		return vars
	}
	for line := range strings.Lines(string(raw)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// commandResult is what an operator command printed and its exit code.
type commandResult struct {
	stdout, stderr string
	code           int
}

// operate runs an operator command of a service, for at most two minutes. It skips the test
// when an external system has no way to run the command configured.
func operate(t *testing.T, service string, args ...string) commandResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, err := system.operator(ctx, service, args...)
	if err != nil {
		t.Skipf("no operator command for %s: %v", service, err)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	res := commandResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v\n%s", service, strings.Join(args, " "), err, res.stderr)
	}
	t.Logf("%s %s: exit %d\n%s%s", service, strings.Join(args, " "), res.code, res.stdout, res.stderr)
	return res
}

var (
	adminMu    sync.Mutex
	adminToken string
	adminAt    time.Time
)

// admin returns a token of the bootstrap admin, logging in again when the last one is older
// than a minute (tokens are short-lived; the default lifetime is 15 minutes).
func admin(t *testing.T) string {
	t.Helper()
	adminMu.Lock()
	defer adminMu.Unlock()
	if adminToken == "" || time.Since(adminAt) > time.Minute {
		adminToken = apitest.Login(t, system.account, system.adminEmail, system.adminPassword)
		adminAt = time.Now()
	}
	return adminToken
}

// user is a registered user with a token issued at registration.
type user struct {
	ID, Email, Name, Token string
}

// newUser registers a user with a unique email and logs in.
func newUser(t *testing.T, name string) user {
	t.Helper()
	u := user{Email: "e2e-" + uuid.NewString() + "@example.com", Name: name}
	u.ID, u.Token = apitest.Register(t, system.account, u.Email, name)
	return u
}

// login logs u in again, for a token carrying u's current version.
func (u user) login(t *testing.T) string {
	t.Helper()
	return apitest.Login(t, system.account, u.Email, apitest.Password)
}

// setRoles sets u's roles as the admin.
func setRoles(t *testing.T, u user, roles ...string) apitest.Response {
	t.Helper()
	return apitest.Call(t, "PUT", system.account+"/v1/users/"+u.ID+"/roles", admin(t), map[string]any{"roles": roles}).
		Want(t, http.StatusOK, "set the roles of "+u.Name)
}

// setStatus sets u's status as the admin.
func setStatus(t *testing.T, u user, status string) apitest.Response {
	t.Helper()
	return apitest.Call(t, "PUT", system.account+"/v1/users/"+u.ID+"/status", admin(t), map[string]any{"status": status}).
		Want(t, http.StatusOK, "set the status of "+u.Name)
}

// caughtUp returns once blog and shop hold u's current version: a token issued now carries it,
// and each service holds a request whose token is newer than its replica until the replica has
// caught up, so one authorized request to each waits for the event.
func caughtUp(t *testing.T, u user) {
	t.Helper()
	fresh := u.login(t)
	apitest.Call(t, "PATCH", system.blog+"/v1/posts/"+uuid.NewString(), fresh, map[string]any{"title": "x"}).
		Want(t, http.StatusNotFound, "blog catches up with "+u.Name)
	apitest.Call(t, "GET", system.shop+"/v1/orders", fresh, nil).Want(t, http.StatusOK, "shop catches up with "+u.Name)
}

// newProduct creates a product as the admin.
func newProduct(t *testing.T, price, stock int) apitest.Response {
	t.Helper()
	return apitest.Call(t, "POST", system.shop+"/v1/products", admin(t), map[string]any{
		"name": "e2e " + uuid.NewString()[:8], "price_cents": price, "stock": stock,
	}).Want(t, http.StatusCreated, "admin creates a product")
}

// order is the body of an order of quantity of one product.
func order(productID string, quantity int) map[string]any {
	return map[string]any{"items": []map[string]any{{"product_id": productID, "quantity": quantity}}}
}

// num returns a number field of a JSON object.
func num(m map[string]any, key string) float64 {
	f, _ := m[key].(float64)
	return f
}
