// Package broker runs private nats-server processes for the reliability suite: one server, or
// three clustered, on free loopback ports, each with its own store, configured as production is
// (deploy/nats/auth.conf's identities, sync_interval: always). Being processes, they can be
// SIGKILLed, stopped, restarted on the same ports and store, or restarted with their store wiped,
// as the suite's faults need; nothing here touches the machine's shared NATS server.
//
// The binary is built from the Go module github.com/nats-io/nats-server/v2 at the version the
// workspace requires (Build), the same server `make run` builds and the tests embed.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/authmesh/e2e/stack"
	"github.com/authmesh/events/natstest"
)

// Bounds on a node: ready after a start, exited after SIGTERM.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Build builds nats-server into dir and returns its path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := stack.WorkspaceRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %w\n%s", err, out)
	}
	return bin, nil
}

// Broker is one server or a cluster of them.
type Broker struct {
	Nodes []*Node
}

// Node is one nats-server process.
type Node struct {
	Name string
	// Port is the client port; HTTPPort serves /healthz and /jsz; ClusterPort the routes (0 alone).
	Port, HTTPPort, ClusterPort int

	bin, dir string
	log      *stack.LogBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// Start starts one server, or n clustered (n = 3 for the suite's cluster), in new directories
// under dir, and waits until each accepts clients (in a cluster: until each is healthy). The caller must Close the broker.
func Start(ctx context.Context, bin, dir string, n int) (_ *Broker, err error) {
	if _, err := natstest.AuthConf(); err != nil { // puts the identities' passwords in the environment
		return nil, err
	}
	b := &Broker{}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	var routes []string
	for i := range n {
		nd := &Node{Name: fmt.Sprintf("n%d", i+1), bin: bin, dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), log: &stack.LogBuffer{}}
		if nd.Port, err = freePort(); err != nil {
			return nil, err
		}
		if nd.HTTPPort, err = freePort(); err != nil {
			return nil, err
		}
		if n > 1 {
			if nd.ClusterPort, err = freePort(); err != nil {
				return nil, err
			}
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nd.ClusterPort))
		}
		b.Nodes = append(b.Nodes, nd)
	}
	for _, nd := range b.Nodes {
		if err := nd.configure(routes); err != nil {
			return nil, err
		}
	}
	for _, nd := range b.Nodes {
		if err := nd.Launch(); err != nil {
			return nil, err
		}
	}
	for _, nd := range b.Nodes {
		if err := nd.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	if n > 1 {
		// A JetStream request sent before the cluster has elected its meta leader gets no answer
		// at all (creating the stream would wait out its whole timeout), so a new cluster is
		// ready once every node is healthy: routed, with a meta leader, current.
		for _, nd := range b.Nodes {
			if err := nd.WaitHealthy(ctx, readyTimeout); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// configure writes the node's configuration and a copy of deploy/nats/auth.conf beside it.
func (nd *Node) configure(routes []string) error {
	if err := os.MkdirAll(nd.dir, 0o755); err != nil {
		return err
	}
	conf, err := natstest.AuthConf()
	if err != nil {
		return err
	}
	auth, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(nd.dir, "auth.conf"), auth, 0o644); err != nil {
		return err
	}
	var c strings.Builder
	fmt.Fprintf(&c, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", nd.Name, nd.Port, nd.HTTPPort)
	fmt.Fprintf(&c, "jetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", nd.storeDir())
	if len(routes) > 0 {
		fmt.Fprintf(&c, "cluster {\n  name: authmesh\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", nd.ClusterPort, strings.Join(routes, ", "))
	}
	c.WriteString("include auth.conf\n")
	return os.WriteFile(nd.confFile(), []byte(c.String()), 0o644)
}

func (nd *Node) confFile() string { return filepath.Join(nd.dir, "nats.conf") }
func (nd *Node) storeDir() string { return filepath.Join(nd.dir, "store") }

// Launch starts the node's process without waiting for it to be ready; it fails if it runs.
func (nd *Node) Launch() error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return fmt.Errorf("node %s already runs", nd.Name)
	}
	cmd := exec.Command(nd.bin, "-c", nd.confFile())
	cmd.Stdout, cmd.Stderr = nd.log, nd.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %s: %w", nd.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	nd.cmd, nd.done = cmd, done
	return nil
}

// WaitReady waits until the node accepts clients: its /healthz answers with JetStream enabled (a
// cluster node answers before its peers are up, so a whole cluster can start).
func (nd *Node) WaitReady(ctx context.Context) error {
	return nd.poll(ctx, "/healthz?js-enabled-only=true", readyTimeout)
}

// WaitHealthy waits until the node reports itself healthy: JetStream current, with a meta leader
// and its streams caught up (a node back from a crash, or rejoined with an empty store).
func (nd *Node) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	return nd.poll(ctx, "/healthz", timeout)
}

func (nd *Node) poll(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		nd.mu.Lock()
		done := nd.done
		nd.mu.Unlock()
		if done == nil {
			return fmt.Errorf("node %s is not running", nd.Name)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", nd.HTTPPort, path), nil)
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
		case err := <-done:
			done <- err
			return fmt.Errorf("node %s exited (%v); log tail:\n%s", nd.Name, err, stack.Tail(nd.log.String(), 20))
		case <-ctx.Done():
			return fmt.Errorf("node %s: %s not 200 within %s; log tail:\n%s", nd.Name, path, timeout, stack.Tail(nd.log.String(), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill SIGKILLs the node, as a crash ends it, and waits for the process to go.
func (nd *Node) Kill() {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.cmd, nd.done = nil, nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop stops the node with SIGTERM, killing it if it has not exited within 15 s.
func (nd *Node) Stop() {
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.cmd, nd.done = nil, nil
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Start starts a stopped or killed node again on its ports and store, and waits until it is ready.
func (nd *Node) Start(ctx context.Context) error {
	if err := nd.Launch(); err != nil {
		return err
	}
	return nd.WaitReady(ctx)
}

// Running reports whether the node's process runs.
func (nd *Node) Running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.cmd != nil
}

// WipeStore removes a stopped node's JetStream store, as if its disk were lost.
func (nd *Node) WipeStore() error {
	if nd.Running() {
		return fmt.Errorf("node %s runs; stop it before wiping its store", nd.Name)
	}
	return os.RemoveAll(nd.storeDir())
}

// Log is what the node has written so far, over all its starts.
func (nd *Node) Log() string { return nd.log.String() }

// URL is the node's client URL with the credentials of user (natstest.Account, Blog, Shop, Ops).
func (nd *Node) URL(user string) string {
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, natstest.Password(user)), Host: fmt.Sprintf("127.0.0.1:%d", nd.Port)}
	return u.String()
}

// UserURL is NATS_URL for a client of every node with the credentials of user: a comma-separated
// list, as a service in a cluster is configured.
func (b *Broker) UserURL(user string) string {
	var urls []string
	for _, nd := range b.Nodes {
		urls = append(urls, nd.URL(user))
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name, or nil.
func (b *Broker) Node(name string) *Node {
	for _, nd := range b.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	return nil
}

// Close kills every node and removes nothing: the directories belong to the caller (a test's
// TempDir).
func (b *Broker) Close() {
	for _, nd := range b.Nodes {
		nd.Kill()
	}
}

// StreamState is what one node holds of a stream, read from its own /jsz (not the leader's).
type StreamState struct {
	Msgs, FirstSeq, LastSeq uint64
	Leader                  string
}

// StreamState reads the node's copy of the stream named name; ok is false when the node holds
// none.
func (nd *Node) StreamState(ctx context.Context, name string) (st StreamState, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/jsz?streams=true", nd.HTTPPort), nil)
	if err != nil {
		return st, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, false, err
	}
	defer resp.Body.Close()
	var jsz struct {
		AccountDetails []struct {
			StreamDetail []struct {
				Name    string `json:"name"`
				Cluster *struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
				State struct {
					Msgs     uint64 `json:"messages"`
					FirstSeq uint64 `json:"first_seq"`
					LastSeq  uint64 `json:"last_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return st, false, fmt.Errorf("node %s /jsz: %w", nd.Name, err)
	}
	for _, a := range jsz.AccountDetails {
		for _, s := range a.StreamDetail {
			if s.Name != name {
				continue
			}
			st = StreamState{Msgs: s.State.Msgs, FirstSeq: s.State.FirstSeq, LastSeq: s.State.LastSeq}
			if s.Cluster != nil {
				st.Leader = s.Cluster.Leader
			}
			return st, true, nil
		}
	}
	return st, false, nil
}

// ErrNoLeader is returned by Leader when no running node names a leader of the stream.
var ErrNoLeader = errors.New("no stream leader")

// Leader returns the name of the node that leads the stream, as the running nodes report it.
func (b *Broker) Leader(ctx context.Context, stream string) (string, error) {
	for _, nd := range b.Nodes {
		if !nd.Running() {
			continue
		}
		st, ok, err := nd.StreamState(ctx, stream)
		if err == nil && ok && st.Leader != "" {
			return st.Leader, nil
		}
	}
	return "", ErrNoLeader
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
