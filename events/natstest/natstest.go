// Package natstest runs a private NATS server with JetStream for a test, embedded in the test
// process on a free loopback port, with its store in the test's temporary directory. Tests never
// use the machine's shared server: the stream name is fixed by the contract, so they would collide.
//
// The server runs with the project's deploy/nats/auth.conf, as production does: no anonymous
// access, and one identity per service with the permissions of the contract. A test connects as
// the identity whose work it does (Account to publish events or keys, Blog or Shop to consume,
// Ops to set up or break things), so that a permission the code needs but auth.conf lacks fails a
// test here rather than a deployment.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/authmesh/events/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The identities of deploy/nats/auth.conf.
const (
	Account = "account"
	Blog    = "blog"
	Shop    = "shop"
	Ops     = "ops"
)

// Identities lists every identity of auth.conf.
var Identities = []string{Account, Blog, Shop, Ops}

// Password returns the password of user on the servers of this package. They are fixed test
// values, put in this process's environment (NATS_ACCOUNT_PASSWORD, ...) where auth.conf reads
// them.
func Password(user string) string { return "test-" + user + "-password" }

// AuthConf returns the path of deploy/nats/auth.conf, found in the working directory or one of its
// parents (tests run in their package's directory, inside the repository).
func AuthConf() (string, error) {
	setup.Do(func() { authConf, setupErr = findAuthConf() })
	return authConf, setupErr
}

var (
	setup    sync.Once
	authConf string
	setupErr error
)

func findAuthConf() (string, error) {
	for _, u := range Identities {
		if err := os.Setenv(passwordVar(u), Password(u)); err != nil {
			return "", err
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "deploy", "nats", "auth.conf")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("deploy/nats/auth.conf not found in the working directory or its parents")
		}
		dir = parent
	}
}

// passwordVar is the environment variable auth.conf reads user's password from.
func passwordVar(user string) string {
	switch user {
	case Account:
		return "NATS_ACCOUNT_PASSWORD"
	case Blog:
		return "NATS_BLOG_PASSWORD"
	case Shop:
		return "NATS_SHOP_PASSWORD"
	default:
		return "NATS_OPS_PASSWORD"
	}
}

// Options returns the options of a server configured by auth.conf, with JetStream storing in dir,
// listening on 127.0.0.1:port (0 for a free port).
func Options(dir string, port int) (*server.Options, error) {
	conf, err := AuthConf()
	if err != nil {
		return nil, err
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", conf, err)
	}
	opts.Host = "127.0.0.1"
	opts.Port = port
	if port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.JetStream = true
	opts.StoreDir = dir
	opts.NoLog = true
	opts.NoSigs = true
	return opts, nil
}

// Server is a private NATS server that a test can stop and start again on the same port and
// store, to play an outage.
type Server struct {
	t    testing.TB
	dir  string
	port int
	srv  *server.Server
	// URL is the client URL of the server, without credentials (an anonymous client, which the
	// server refuses); it stays the same across Stop and Start. UserURL adds an identity.
	URL string
}

// New starts a server and stops it when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir()}
	s.Start()
	s.port = s.srv.Addr().(*net.TCPAddr).Port
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server, again after a Stop, with the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	opts, err := Options(s.dir, s.port)
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatalf("nats server not ready within 10s")
	}
	s.srv = srv
}

// Stop shuts the server down and waits until it has. It is a no-op when already stopped.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// UserURL returns the server's URL with the credentials of user, as a service's NATS_URL.
func (s *Server) UserURL(user string) string {
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, Password(user)), Host: fmt.Sprintf("127.0.0.1:%d", s.port)}
	return u.String()
}

// Connect connects to the server as user, the way the service of that name does (its own inbox
// prefix), and closes the connection when t ends. The connection reconnects without limit, so it
// outlives a Stop and Start. Any permissions violation the server reports on it fails the test:
// a test does the work of its identity, which auth.conf must allow. (Tests of refusals use Dial.)
func (s *Server) Connect(t testing.TB, user string) *nats.Conn {
	t.Helper()
	var (
		mu         sync.Mutex
		done       bool
		violations []string
	)
	nc, err := s.Dial(user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if !errors.Is(err, nats.ErrPermissionViolation) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !done {
			violations = append(violations, err.Error())
		}
	}))
	if err != nil {
		t.Fatalf("connect to nats as %s: %v", user, err)
	}
	t.Cleanup(func() {
		nc.Close()
		mu.Lock()
		defer mu.Unlock()
		done = true
		for _, v := range violations {
			t.Errorf("nats refused %s: %s", user, v)
		}
	})
	return nc
}

// Dial connects to the server as user, as Connect does, with opts added, and leaves the
// connection to the caller.
func (s *Server) Dial(user string, opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{
		nats.Name(user),
		nats.UserInfo(user, Password(user)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
	}
	if user != Ops {
		all = append(all, nats.CustomInboxPrefix(bus.InboxPrefix(user)))
	}
	return nats.Connect(s.URL, append(all, opts...)...)
}

// JetStream connects as user (see Connect) and returns a JetStream handle on the connection.
func (s *Server) JetStream(t testing.TB, user string, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(s.Connect(t, user), opts...)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
