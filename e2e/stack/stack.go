// Package stack runs the whole system for end-to-end tests: the account, blog and shop binaries
// built from this workspace, started as processes on free local ports against a private embedded
// NATS server and fresh databases on the test Postgres server (TEST_DATABASE_URL, as in
// events/pgtest). Nothing it starts touches the shared NATS server or the services' own
// databases.
//
// New starts a stack and Close stops it; ForTest does both around one test. Between them a test
// may stop and start a service (Stop, Start) or NATS (NATS.Stop, NATS.Start), and run a
// service's operator commands with the service's environment (Cmd).
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DevSigningKeySecret is account's SIGNING_KEY_SECRETS in a stack, as in `make run` and
// docker-compose: a development secret.
const DevSigningKeySecret = "development-only-signing-key-secret-change-me"

// Services lists the binaries in start order: account publishes the keys the others wait for.
var Services = []string{"account", "blog", "shop"}

// Bounds on the processes: a service must be ready, and exit after SIGTERM, within these.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// Options configure New. The zero value is usable.
type Options struct {
	// BinDir holds the account, blog and shop binaries (see Build). When empty, New builds them
	// into a temporary directory that Close removes.
	BinDir string
	// AdminEmail and AdminPassword are account's bootstrap admin (default admin@example.com and
	// admin-password, as `make run` and docker-compose use).
	AdminEmail, AdminPassword string
	// LogLevel is every service's LOG_LEVEL (default debug: the logs are shown when a test fails).
	LogLevel string
	// Env is added to every service's environment, after the stack's own variables.
	Env []string
	// Stopped leaves the services stopped: the test starts them, in the order it likes.
	Stopped bool
	// Broker, when set, is the NATS the services use instead of a private embedded server (the
	// reliability suite's nats-server processes, which it kills and restarts); Stack.NATS is
	// then nil.
	Broker Broker
	// PostgresURL is the server the services' databases are created on (default: the test server,
	// pgtest.ServerURL); the reliability suite gives a private server it restarts.
	PostgresURL string
}

// Broker is a NATS server or cluster that a stack connects to.
type Broker interface {
	// UserURL is NATS_URL with the credentials of user (natstest.Account, Blog, Shop, Ops).
	UserURL(user string) string
}

// Stack is the system running as processes. URL, Env and the admin's credentials are fixed for
// its lifetime; a service stopped and started again keeps its address, database and log.
type Stack struct {
	// URL is the base URL of each service, e.g. URL["blog"] = "http://127.0.0.1:41234".
	URL map[string]string
	// Env is each service's environment on top of the test process's own: HTTP_ADDR,
	// DATABASE_URL, NATS_URL, LOG_LEVEL (and account's bootstrap admin and SIGNING_KEY_SECRETS).
	Env map[string][]string
	// NATS is the private NATS server the services use, unless Options.Broker gave another.
	NATS *NATS
	// AdminEmail and AdminPassword log in as the bootstrap admin.
	AdminEmail, AdminPassword string

	bin    string
	ownBin bool
	dbs    []string
	pgURL  string

	// names lists the services and the instances added to them (AddInstance), in start order;
	// binary names each one's binary.
	names  []string
	binary map[string]string

	mu    sync.Mutex
	procs map[string]*process
	logs  map[string]*LogBuffer
}

// process is one running service and the channel its exit status arrives on.
type process struct {
	cmd  *exec.Cmd
	done chan error // receives cmd.Wait's result once
}

// New builds the binaries unless opts.BinDir has them, starts NATS, creates one database per
// service, and starts the services in order, each ready (GET /readyz = 200) before the next.
// On error it stops whatever it started. An unreachable Postgres server is reported as an error
// wrapping ErrNoPostgres. The caller must Close the stack.
func New(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.AdminEmail == "" {
		opts.AdminEmail = "admin@example.com"
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = "admin-password"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	s := &Stack{
		URL:           map[string]string{},
		Env:           map[string][]string{},
		AdminEmail:    opts.AdminEmail,
		AdminPassword: opts.AdminPassword,
		bin:           opts.BinDir,
		procs:         map[string]*process{},
		logs:          map[string]*LogBuffer{},
		binary:        map[string]string{},
		pgURL:         opts.PostgresURL,
	}
	var broker Broker
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()

	if s.bin == "" {
		if s.bin, err = os.MkdirTemp("", "authmesh-e2e-bin-"); err != nil {
			return nil, err
		}
		s.ownBin = true
		if err := Build(ctx, s.bin); err != nil {
			return nil, err
		}
	}
	if broker = opts.Broker; broker == nil {
		if s.NATS, err = startNATS(); err != nil {
			return nil, err
		}
		broker = s.NATS
	}
	for _, name := range Services {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		db, err := createDatabase(ctx, s.pgURL)
		if err != nil {
			return nil, err
		}
		s.dbs = append(s.dbs, db.name)
		s.URL[name] = "http://" + addr
		s.Env[name] = []string{
			"HTTP_ADDR=" + addr,
			"DATABASE_URL=" + db.url,
			"NATS_URL=" + broker.UserURL(name), // each service with its own identity
			"LOG_LEVEL=" + opts.LogLevel,
		}
		if name == "account" {
			s.Env[name] = append(s.Env[name],
				"BOOTSTRAP_ADMIN_EMAIL="+opts.AdminEmail, "BOOTSTRAP_ADMIN_PASSWORD="+opts.AdminPassword,
				"SIGNING_KEY_SECRETS="+DevSigningKeySecret)
		}
		s.Env[name] = append(s.Env[name], opts.Env...)
		s.logs[name] = &LogBuffer{}
		s.names = append(s.names, name)
		s.binary[name] = name
	}
	if opts.Stopped {
		return s, nil
	}
	for _, name := range Services {
		if err := s.Start(ctx, name); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Close stops the services (SIGTERM; each must exit 0) and NATS, drops the databases and removes
// the binaries New built. It returns every problem it met, after doing all of it; a service that
// logged a refusal of its NATS permissions is one.
func (s *Stack) Close() error {
	var errs []error
	for i := len(s.names) - 1; i >= 0; i-- {
		if err := s.Stop(s.names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range s.names {
		if strings.Contains(s.Log(name), "Permissions Violation") {
			errs = append(errs, fmt.Errorf("%s met a refusal of its NATS permissions (deploy/nats/auth.conf); see its log", name))
		}
	}
	if s.NATS != nil {
		s.NATS.close()
	}
	for _, db := range s.dbs {
		if err := dropDatabase(s.pgURL, db); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ownBin && s.bin != "" {
		if err := os.RemoveAll(s.bin); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Start starts a service that is not running and waits until its /readyz answers 200.
func (s *Stack) Start(ctx context.Context, name string) error {
	if err := s.Launch(name); err != nil {
		return err
	}
	return s.WaitReady(ctx, name)
}

// Launch starts a service that is not running, without waiting for it to be ready.
func (s *Stack) Launch(name string) error {
	s.mu.Lock()
	running := s.procs[name] != nil
	s.mu.Unlock()
	if running {
		return fmt.Errorf("start %s: already running", name)
	}
	if s.binary[name] == "" {
		return fmt.Errorf("start %s: no such service or instance", name)
	}
	cmd := exec.Command(filepath.Join(s.bin, s.binary[name]))
	cmd.Env = append(os.Environ(), s.Env[name]...)
	cmd.Stdout, cmd.Stderr = s.logs[name], s.logs[name]
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	return nil
}

// WaitReady waits until a launched service's /readyz answers 200; it fails when the service is not
// running, exits meanwhile, or is not ready within 30 seconds.
func (s *Stack) WaitReady(ctx context.Context, name string) error {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s is not running", name)
	}
	return s.waitReady(ctx, name, p)
}

// Running reports whether a service's process is running (started and not exited).
func (s *Stack) Running(name string) bool {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case err := <-p.done:
		p.done <- err // for Stop
		return false
	default:
		return true
	}
}

// PID returns the process id of a running service, or 0 when it is not running: for the
// benchmarks, which read its CPU time and memory in /proc.
func (s *Stack) PID(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[name]; p != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// waitReady polls the service's /readyz until it answers 200, the process exits, or readyTimeout
// passes.
func (s *Stack) waitReady(ctx context.Context, name string, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL[name]+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err // for Stop
			return fmt.Errorf("%s exited while starting (%v); log tail:\n%s", name, err, Tail(s.Log(name), 30))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s; log tail:\n%s", name, readyTimeout, Tail(s.Log(name), 30))
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM to a running service and waits for it to exit. It reports an exit status
// other than 0, and kills a process that has not exited within 30 seconds. Stopping a service
// that is not running does nothing.
func (s *Stack) Stop(name string) error {
	s.mu.Lock()
	p := s.procs[name]
	s.procs[name] = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM, want 0", name, err)
		}
		return nil
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", name, stopTimeout)
	}
}

// Kill SIGKILLs a running service, as a crash ends it, and waits for the process to go. Killing
// a service that is not running does nothing.
func (s *Stack) Kill(name string) {
	s.mu.Lock()
	p := s.procs[name]
	s.procs[name] = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// AddInstance adds a second (third, ...) instance of a service, named name: the same binary and
// environment (so the same database and durable consumer), on an address of its own. It is not
// started; Start it. Stop, Kill, Log and URL take its name; Close stops it first.
func (s *Stack) AddInstance(name, service string) error {
	if s.binary[service] != service {
		return fmt.Errorf("add instance %s: no service %s", name, service)
	}
	if s.binary[name] != "" {
		return fmt.Errorf("add instance %s: the name is taken", name)
	}
	addr, err := FreeAddr()
	if err != nil {
		return err
	}
	env := slices.Clone(s.Env[service])
	for i, kv := range env {
		if strings.HasPrefix(kv, "HTTP_ADDR=") {
			env[i] = "HTTP_ADDR=" + addr
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Env[name], s.URL[name], s.logs[name], s.binary[name] = env, "http://"+addr, &LogBuffer{}, service
	s.names = append(s.names, name)
	return nil
}

// DatabaseURL is the URL of a service's database (an instance shares its service's).
func (s *Stack) DatabaseURL(name string) string {
	for _, kv := range s.Env[name] {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			return v
		}
	}
	return ""
}

// Cmd returns the command that runs a service's binary with args (an operator command such as
// "replica verify") in the service's environment. The caller runs it; ctx kills it.
func (s *Stack) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, s.binary[name]), args...)
	cmd.Env = append(os.Environ(), s.Env[name]...)
	return cmd
}

// Log returns what a service has written to stdout and stderr so far, over all its starts.
func (s *Stack) Log(name string) string {
	if b := s.logs[name]; b != nil {
		return b.String()
	}
	return ""
}

// Logs returns the last n lines of every service's log, for a failed test's report.
func (s *Stack) Logs(n int) string {
	var b strings.Builder
	for _, name := range s.names {
		fmt.Fprintf(&b, "--- %s log (last %d lines)\n%s\n", name, n, Tail(s.Log(name), n))
	}
	return b.String()
}

// LogBuffer is a log that processes write to while tests read it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
