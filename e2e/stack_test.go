package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authmesh/events/natstest"
	"github.com/authmesh/events/pgtest"
)

// services lists the binaries in start order: account publishes the keys the others wait for.
var services = []string{"account", "blog", "shop"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three services once per test run, as the Dockerfiles do.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "authmesh-e2e-bin-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-trimpath", "-o", binDir + "/"}
		for _, s := range services {
			args = append(args, "../"+s+"/cmd/"+s)
		}
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// stack is the system run as processes against a private NATS server and fresh databases.
type stack struct {
	t      *testing.T
	bin    string
	NATS   *natstest.Server
	env    map[string][]string
	URL    map[string]string
	procs  map[string]*exec.Cmd
	exited map[string]chan error
	logs   map[string]*bytes.Buffer
	mu     sync.Mutex
}

const (
	adminEmail    = "admin@example.com"
	adminPassword = "admin-password-e2e"
)

// newStack starts NATS and the three services, and stops them when the test ends.
func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{
		t:      t,
		bin:    binaries(t),
		NATS:   natstest.New(t),
		env:    map[string][]string{},
		URL:    map[string]string{},
		procs:  map[string]*exec.Cmd{},
		exited: map[string]chan error{},
		logs:   map[string]*bytes.Buffer{},
	}
	for _, name := range services {
		addr := freeAddr(t)
		s.URL[name] = "http://" + addr
		s.env[name] = []string{
			"HTTP_ADDR=" + addr,
			"DATABASE_URL=" + pgtest.NewDatabase(t),
			"NATS_URL=" + s.NATS.URL,
			"LOG_LEVEL=debug",
		}
	}
	s.env["account"] = append(s.env["account"],
		"BOOTSTRAP_ADMIN_EMAIL="+adminEmail, "BOOTSTRAP_ADMIN_PASSWORD="+adminPassword)
	t.Cleanup(func() {
		for _, name := range services {
			if s.procs[name] != nil {
				s.Stop(name)
			}
		}
		if t.Failed() {
			for _, name := range services {
				t.Logf("--- %s log (tail)\n%s", name, tail(s.logs[name].String(), 40))
			}
		}
	})
	for _, name := range services {
		s.Start(name)
	}
	return s
}

// Start starts a service and waits until its /readyz answers 200.
func (s *stack) Start(name string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, name))
	cmd.Env = append(os.Environ(), s.env[name]...)
	if s.logs[name] == nil {
		s.logs[name] = &bytes.Buffer{}
	}
	w := &lockedWriter{mu: &s.mu, w: s.logs[name]}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.procs[name], s.exited[name] = cmd, done
	s.waitReady(name, done)
}

func (s *stack) waitReady(name string, done chan error) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			s.t.Fatalf("%s exited at start: %v\n%s", name, err, s.Log(name))
		default:
		}
		resp, err := http.Get(s.URL[name] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("%s not ready within 30s\n%s", name, s.Log(name))
}

// Stop sends SIGTERM to a service and checks that it exits 0 within 30 seconds.
func (s *stack) Stop(name string) {
	s.t.Helper()
	cmd := s.procs[name]
	if cmd == nil {
		return
	}
	s.procs[name] = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited[name]:
		if err != nil {
			s.t.Errorf("%s exited with %v after SIGTERM, want 0", name, err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Errorf("%s did not exit within 30s of SIGTERM", name)
	}
}

// Log returns what a service has logged so far.
func (s *stack) Log(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs[name].String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// response is an HTTP answer with its body decoded as a JSON object when it is one.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

var client = &http.Client{Timeout: 15 * time.Second}

// call sends a JSON request; body may be nil, token may be empty.
func call(t *testing.T, method, url, token string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// want fails the test unless r has the given status.
func (r response) want(t *testing.T, status int, what string) response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Raw)
	}
	return r
}

// str returns a string field of the body.
func (r response) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// eventually repeats call until it answers status, for at most 15 seconds (events propagate
// asynchronously), and returns the last answer.
func eventually(t *testing.T, status int, what string, call func() response) response {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := call()
		if r.Status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %d after 15s, want %d; body %s", what, r.Status, status, r.Raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command runs an operator subcommand of a service's binary with the service's environment and
// returns its output and exit code.
func (s *stack) Command(name string, args ...string) (out string, code int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Env = append(os.Environ(), s.env[name]...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b), ee.ExitCode()
		}
		s.t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(b), 0
}
