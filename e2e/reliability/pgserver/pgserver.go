// Package pgserver runs a private PostgreSQL server for one reliability test, so that the test can
// stop, restart or crash Postgres under a running service without touching the machine's shared
// server on 127.0.0.1:5432, which other tests use.
//
// Start runs initdb in a new directory under os.TempDir and starts the server from it: trust
// authentication, superuser postgres, UTF8 with the C locale, listening on 127.0.0.1 only at a
// port of its own, its unix socket in its own directory. fsync stays on: a crash test of a server
// that does not sync proves nothing. Restart stops it in one of two Modes and starts it again on
// the same port and data directory.
//
// Postgres refuses to run as root. When the test runs as root (as on this machine and in CI),
// initdb and postgres run as the OS user postgres, who then owns the directory; os.TempDir must
// be one that user can reach (/tmp is). Otherwise they run as the current user.
//
// The binaries are those of /usr/lib/postgresql/15/bin, else of `pg_config --bindir`; without
// them Start returns ErrNoPostgres. Every wait is bounded by Timeout as well as by the ctx given.
package pgserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Timeout bounds every wait of this package: initdb, a start until the server accepts
// connections, a stop until the server has exited, creating a database.
const Timeout = 30 * time.Second

// ErrNoPostgres is returned by Start when the PostgreSQL server binaries are not installed.
var ErrNoPostgres = errors.New("pgserver: postgres binaries not found")

// Mode is how Stop and Restart stop the server.
type Mode string

const (
	// Fast is a clean shutdown (pg_ctl stop -m fast): sessions are ended, a shutdown checkpoint
	// is written, and the next start needs no recovery.
	Fast Mode = "fast"
	// Immediate is a crash (pg_ctl stop -m immediate): every process quits at once, without a
	// checkpoint, and the next start recovers from the WAL. It is the crash of the processes,
	// not of the machine: what was written but not yet synced survives in the page cache.
	Immediate Mode = "immediate"
)

// signal is what pg_ctl sends the postmaster for each mode.
func (m Mode) signal() (syscall.Signal, error) {
	switch m {
	case Fast:
		return syscall.SIGINT, nil
	case Immediate:
		return syscall.SIGQUIT, nil
	}
	return 0, fmt.Errorf("pgserver: unknown stop mode %q", m)
}

// Server is a private PostgreSQL server. Its lifecycle methods (Start, Stop, Restart, Close) run
// one at a time; URL and CreateDatabase may be called from any goroutine at any time.
type Server struct {
	dir  string // everything: data/, sock/, postgres.log
	port int
	bin  string
	cred *syscall.Credential // nil: run as the current user

	mu     sync.Mutex
	proc   *process // nil while stopped
	closed bool
}

// process is one run of the postmaster.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster has exited; err is then set
	err  error
}

// Start creates a data directory with initdb and starts a server on it. The server outlives ctx,
// which bounds only the start; Close stops it and removes the directory.
func Start(ctx context.Context) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "authmesh-pgserver-")
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	s := &Server{dir: dir, bin: bin, cred: cred}
	if err := s.init(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// init makes the directories, hands them to the user postgres runs as, runs initdb and picks the
// port. --no-sync skips only initdb's own final sync of the new files, which would matter only if
// the machine lost power before the kernel wrote them; the server still syncs its WAL.
func (s *Server) init(ctx context.Context) error {
	if err := os.Mkdir(filepath.Join(s.dir, "sock"), 0o700); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	if s.cred != nil {
		for _, d := range []string{s.dir, filepath.Join(s.dir, "sock")} {
			if err := os.Chown(d, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return fmt.Errorf("pgserver: %w", err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	cmd := s.command(ctx, "initdb", "-D", s.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgserver: initdb: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	return nil
}

// URL is the URL of database db as the superuser postgres.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// CreateDatabase creates an empty database with a unique name and returns its URL. The server
// must be running. The database goes when the server is closed.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgserver: create database: %w", err)
	}
	defer conn.Close(context.Background())
	name := "t_" + randomHex(8)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgserver: create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// Start starts the server after Stop, on the same port and data directory, and waits until it
// accepts connections (after recovery, if it crashed). It does nothing when the server runs.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start(ctx)
}

// Stop stops the server in mode and waits until it has exited. It does nothing when the server
// is stopped.
func (s *Server) Stop(ctx context.Context, mode Mode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop(ctx, mode)
}

// Restart stops the server in mode and starts it again on the same port and data directory,
// waiting until it accepts connections. It returns how long the server was unreachable: from the
// stop signal until it was ready again.
func (s *Server) Restart(ctx context.Context, mode Mode) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	began := time.Now()
	if err := s.stop(ctx, mode); err != nil {
		return time.Since(began), err
	}
	err := s.start(ctx)
	return time.Since(began), err
}

// Close stops the server (Immediate: nothing it holds is kept) and removes its directory. Calling
// it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.stop(context.Background(), Immediate)
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Log returns the last n lines of the server's log (all of it when n <= 0), for a test to show
// when it fails.
func (s *Server) Log(n int) string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no postgres log: %v)", err)
	}
	lines := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func (s *Server) start(ctx context.Context) error {
	if s.closed {
		return errors.New("pgserver: server closed")
	}
	if s.proc != nil {
		select {
		case <-s.proc.done: // it died on its own
			s.proc = nil
		default:
			return nil
		}
	}
	logFile, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	defer logFile.Close() // the postmaster holds its own copy
	// Not tied to ctx: the server must outlive the start.
	cmd := s.command(context.Background(), "postgres", "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1", "-k", filepath.Join(s.dir, "sock"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a ^C to the test is not a shutdown of the server. If the test
	// process dies, the postmaster gets SIGQUIT (an immediate shutdown) rather than live on.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	p, err := run(cmd)
	if err != nil {
		return fmt.Errorf("pgserver: start postgres: %w", err)
	}
	s.proc = p
	if err := s.waitReady(ctx, p); err != nil {
		if stopErr := s.stop(context.Background(), Immediate); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return err
	}
	return nil
}

// run starts cmd and waits for it in a goroutine that keeps its OS thread locked while cmd runs:
// Pdeathsig fires when the thread that started the child exits, not the process, and the Go
// runtime may end a thread otherwise.
func run(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// waitReady waits until the server accepts a connection to database postgres.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(attempt, s.URL("postgres"))
		cancelAttempt()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("pgserver: postgres exited while starting (%v); its log:\n%s", p.err, s.Log(20))
		case <-ctx.Done():
			return fmt.Errorf("pgserver: postgres not ready: %w (last: %v); its log:\n%s", ctx.Err(), err, s.Log(20))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) stop(ctx context.Context, mode Mode) error {
	sig, err := mode.signal()
	if err != nil {
		return err
	}
	p := s.proc
	if p == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgserver: signal postgres: %w", err)
	}
	select {
	case <-p.done:
		s.proc = nil
		return nil
	case <-ctx.Done():
	}
	// Its backends may outlive it and hold its shared memory; the next start would say so.
	p.cmd.Process.Kill()
	<-p.done
	s.proc = nil
	return fmt.Errorf("pgserver: postgres did not stop (%s) in time: %w; killed; its log:\n%s", mode, ctx.Err(), s.Log(20))
}

// command is the server binary name, run as the user postgres runs as, with the C locale so that
// its messages are English whatever the test's environment.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir // the test's working directory may be closed to that user
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// binDir is the directory of the server binaries.
func binDir() (string, error) {
	const pg15 = "/usr/lib/postgresql/15/bin"
	if d, err := findBinDir(pg15); err == nil {
		return d, nil
	}
	return findBinDir(pg15, pgConfigBinDir())
}

// findBinDir returns the first of dirs that holds initdb and postgres.
func findBinDir(dirs ...string) (string, error) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in %s)", ErrNoPostgres, strings.Join(dirs, ", "))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pgConfigBinDir is what `pg_config --bindir` says, or "" without pg_config.
func pgConfigBinDir() string {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

// credential is the user to run postgres as: postgres when running as root, else nil (the current
// user).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root, which postgres refuses, and no OS user postgres to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort returns a free loopback port below the kernel's ephemeral range when it can: while the
// server is down for a restart, its port must not be taken as the local port of some outgoing
// connection, as one in the ephemeral range can be.
func freePort() (int, error) {
	low := ephemeralLow()
	for range 100 {
		if low <= 10000 {
			break
		}
		port := 10000 + mrand.IntN(low-10000)
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the low end of the kernel's ephemeral port range (Linux's default when it
// cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}
