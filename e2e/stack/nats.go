package stack

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/authmesh/events/natstest"
	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded NATS server with JetStream, private to one stack, configured by the
// project's deploy/nats/auth.conf as production is: no anonymous client, one identity per service.
// It can be stopped and started again on the same port with the same store, to play a broker
// outage.
type NATS struct {
	// URL is the client URL without credentials, e.g. nats://127.0.0.1:41235; UserURL adds them.
	URL string

	dir  string
	port int
	srv  *server.Server
}

// UserURL is the URL with the credentials of user (natstest.Account, Blog, Shop or Ops).
func (n *NATS) UserURL(user string) string {
	u, _ := url.Parse(n.URL)
	u.User = url.UserPassword(user, natstest.Password(user))
	return u.String()
}

// startNATS starts a server on a free port with its store in a new temporary directory.
func startNATS() (*NATS, error) {
	dir, err := os.MkdirTemp("", "authmesh-e2e-nats-")
	if err != nil {
		return nil, err
	}
	n := &NATS{dir: dir}
	if err := n.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n.port = n.srv.Addr().(*net.TCPAddr).Port
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	return n, nil
}

// Start starts the server again after Stop, on the same port with the same store. It does
// nothing when the server runs.
func (n *NATS) Start() error {
	if n.srv != nil {
		return nil
	}
	opts, err := natstest.Options(n.dir, n.port)
	if err != nil {
		return err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats server not ready within 10s")
	}
	n.srv = srv
	return nil
}

// Stop shuts the server down; clients see the connection drop. The store is kept for Start.
func (n *NATS) Stop() {
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// close stops the server and removes its store.
func (n *NATS) close() {
	n.Stop()
	os.RemoveAll(n.dir)
}
