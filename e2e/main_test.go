package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/google/uuid"
)

// binDir holds the binaries every stack of this package runs, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authmesh-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := stack.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// The bootstrap admin of the stacks of this package.
const (
	adminEmail    = "admin@example.com"
	adminPassword = "admin-password-e2e"
)

// newStack starts the system for one test, which may stop and start its parts.
func newStack(t *testing.T) *stack.Stack {
	t.Helper()
	return stack.ForTest(t, stack.Options{BinDir: binDir, AdminEmail: adminEmail, AdminPassword: adminPassword})
}

// must fails the test on a stack error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// command runs an operator command of a service and returns its combined output and exit code.
func command(t *testing.T, s *stack.Stack, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.Cmd(ctx, name, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), 0
}

// register creates a user and logs in, returning the user's id and an access token.
func register(t *testing.T, s *stack.Stack, email, name string) (id, token string) {
	t.Helper()
	return apitest.Register(t, s.URL["account"], email, name)
}

func login(t *testing.T, s *stack.Stack, email, password string) string {
	t.Helper()
	return apitest.Login(t, s.URL["account"], email, password)
}

// caughtUp returns once blog and shop hold the user's current version. A token issued now carries
// that version, and a service holds a request whose token is newer than its replica until the
// replica catches up; so one authorized request with a fresh token on each service waits for the
// event, with no sleeping or polling here.
func caughtUp(t *testing.T, s *stack.Stack, email string) {
	t.Helper()
	fresh := login(t, s, email, apitest.Password)
	apitest.Call(t, "PATCH", s.URL["blog"]+"/v1/posts/"+uuid.NewString(), fresh, map[string]any{"title": "x"}).
		Want(t, http.StatusNotFound, "blog catches up with "+email)
	apitest.Call(t, "GET", s.URL["shop"]+"/v1/orders", fresh, nil).Want(t, http.StatusOK, "shop catches up with "+email)
}
