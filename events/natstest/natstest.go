// Package natstest runs a private NATS server with JetStream for a test, embedded in the test
// process on a free loopback port, with its store in the test's temporary directory. Tests never
// use the machine's shared server: the stream name is fixed by the contract, so they would collide.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a private NATS server that a test can stop and start again on the same port and
// store, to play an outage.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
	// URL is the client URL of the server; it stays the same across Stop and Start.
	URL string
}

// New starts a server and stops it when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	s.Start()
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server, again after a Stop, with the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
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

// JetStream connects to the server and returns a JetStream handle on the connection, which is
// closed when t ends. The connection reconnects without limit, so it outlives a Stop and Start.
func (s *Server) JetStream(t testing.TB, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.Name(t.Name()), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
