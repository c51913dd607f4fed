package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
)

// confFile is the gateway's configuration, seen from this package's directory.
const confFile = "../../deploy/nginx/nginx.conf"

// proxyAddr is the address nginx connects to the services from: the loopback, as it reaches them
// at 127.0.0.1. Clients use other loopback addresses (127.0.0.2 ...), each a client of its own to
// nginx's limits and to account's throttle; a client at proxyAddr itself is one whose address
// account trusts.
const proxyAddr = "127.0.0.1"

// Bounds on nginx: it must answer its /healthz, and exit after SIGTERM, within these.
const (
	nginxReadyTimeout = 10 * time.Second
	nginxStopTimeout  = 10 * time.Second
)

// gateway is nginx running deploy/nginx/nginx.conf in front of a stack.
type gateway struct {
	URL    string           // base URL, such as http://127.0.0.1:41234
	Limits map[string]rate  // the limit of each location that has one, by path
	log    *stack.LogBuffer // nginx's stdout (the access log) and stderr (the error log)
}

// rate is a limit_req: rate requests per second per client, burst more at once.
type rate struct {
	PerSecond, Burst int
}

// startGateway renders the configuration for the loopback and runs nginx on it in a directory of
// its own, until the test ends. It fails the test unless nginx answers within 10 seconds.
func startGateway(t *testing.T, s *stack.Stack) *gateway {
	t.Helper()
	raw, err := os.ReadFile(confFile)
	if err != nil {
		t.Fatal(err)
	}
	listen, err := stack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := render(string(raw), listen, s.URL)
	if err != nil {
		t.Fatalf("%s: %v", confFile, err)
	}
	limits, err := parseLimits(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", confFile, err)
	}

	// Not t.TempDir: its parents are private to this user, and nginx run as root runs its workers
	// as another, which must reach the temporary files in the prefix.
	dir, err := os.MkdirTemp("", "authmesh-gateway-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	g := &gateway{URL: "http://" + listen, Limits: limits, log: &stack.LogBuffer{}}
	cmd := exec.Command(nginxBin, "-p", dir+"/", "-c", path, "-e", "stderr", "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = g.log, g.log
	// Its own process group, so that its workers can be killed with it; and SIGTERM if this test
	// process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		stopNginx(t, cmd, done)
		if t.Failed() {
			t.Logf("--- nginx log (last 40 lines)\n%s", stack.Tail(g.log.String(), 40))
		}
	})
	if err := g.waitReady(done); err != nil {
		t.Fatal(err)
	}
	return g
}

// waitReady polls the gateway's own /healthz until it answers 200, nginx exits, or
// nginxReadyTimeout passes.
func (g *gateway) waitReady(done chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), nginxReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(g.URL + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			done <- err // for stopNginx
			return fmt.Errorf("nginx exited while starting (%v):\n%s", err, stack.Tail(g.log.String(), 30))
		case <-ctx.Done():
			return fmt.Errorf("nginx not ready within %s:\n%s", nginxReadyTimeout, stack.Tail(g.log.String(), 30))
		case <-tick.C:
		}
	}
}

// stopNginx sends SIGTERM to nginx's master, which stops its workers, and waits for it; after
// nginxStopTimeout it kills the process group.
func stopNginx(t *testing.T, cmd *exec.Cmd, done chan error) {
	select {
	case <-done:
		return // exited already; waitReady said so
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(nginxStopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Errorf("nginx did not exit within %s of SIGTERM; killed", nginxStopTimeout)
	}
}

var (
	listenLine   = regexp.MustCompile(`(?m)^(\s*listen\s+)\d+;`)
	upstreamLine = regexp.MustCompile(`(?m)^(\s*set \$([a-z]+)_upstream )http://[a-z]+:\d+;`)
)

// render returns the configuration listening on listen (host:port), with the services' URLs in
// place of compose's: the only changes. The listen directive and each service's upstream must be
// there exactly once, or the configuration has changed under this test.
func render(conf, listen string, urls map[string]string) (string, error) {
	if n := len(listenLine.FindAllString(conf, -1)); n != 1 {
		return "", fmt.Errorf("%d listen directives, want 1", n)
	}
	conf = listenLine.ReplaceAllString(conf, "${1}"+listen+";")
	seen := map[string]int{}
	var unknown []string
	conf = upstreamLine.ReplaceAllStringFunc(conf, func(line string) string {
		m := upstreamLine.FindStringSubmatch(line)
		seen[m[2]]++
		u, ok := urls[m[2]]
		if !ok {
			unknown = append(unknown, m[2])
			return line
		}
		return m[1] + u + ";"
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("upstreams of no service: %v", unknown)
	}
	for _, svc := range stack.Services {
		if seen[svc] != 1 {
			return "", fmt.Errorf("$%s_upstream is set %d times, want once", svc, seen[svc])
		}
	}
	return conf, nil
}

// parseLimits reads the rate limits of the configuration: the rate of each limit_req_zone (in
// requests per second) and the zone and burst of each exact location that applies one.
func parseLimits(conf string) (map[string]rate, error) {
	zones := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*limit_req_zone \S+ zone=(\w+):\w+ rate=(\d+)r/s;`).FindAllStringSubmatch(conf, -1) {
		zones[m[1]], _ = strconv.Atoi(m[2])
	}
	limits := map[string]rate{}
	for _, m := range regexp.MustCompile(`(?s)location = (\S+) \{[^}]*?limit_req zone=(\w+) burst=(\d+) nodelay;`).FindAllStringSubmatch(conf, -1) {
		perSecond, ok := zones[m[2]]
		if !ok {
			return nil, fmt.Errorf("location %s limits with zone %s, which has no rate in r/s", m[1], m[2])
		}
		burst, _ := strconv.Atoi(m[3])
		limits[m[1]] = rate{PerSecond: perSecond, Burst: burst}
	}
	return limits, nil
}

// client sends requests to the gateway from one loopback address.
type client struct {
	base string
	from string
	http *http.Client
}

// newClient returns a client whose connections come from the address from.
func newClient(t *testing.T, g *gateway, from string) *client {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{base: g.URL, from: from, http: &http.Client{
		Transport: tr,
		Timeout:   15 * time.Second,
		// The gateway's answer itself, never where it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request with exactly the given header and body (nil: none) to the gateway's path.
func (c *client) do(method, path string, header http.Header, body io.Reader) (apitest.Response, error) {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return apitest.Response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return apitest.Response{}, fmt.Errorf("%s %s from %s: %w", method, path, c.from, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return apitest.Response{}, fmt.Errorf("%s %s from %s: read body: %w", method, path, c.from, err)
	}
	r := apitest.Response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r, nil
}

// send is do that fails the test on an error.
func (c *client) send(t *testing.T, method, path string, header http.Header, body io.Reader) apitest.Response {
	t.Helper()
	r, err := c.do(method, path, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// call sends body as JSON (nil: none) with token as the bearer token (empty: none).
func (c *client) call(t *testing.T, method, path, token string, body any) apitest.Response {
	t.Helper()
	h, rd := jsonRequest(t, token, body)
	return c.send(t, method, path, h, rd)
}

// jsonRequest is the header and body of a JSON request.
func jsonRequest(t *testing.T, token string, body any) (http.Header, io.Reader) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if body == nil {
		return h, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	h.Set("Content-Type", "application/json")
	return h, bytes.NewReader(b)
}

// burst sends n requests at once, request(i) making the i-th, and returns the answers in order
// and the time from the first send to the last answer.
func (c *client) burst(t *testing.T, n int, request func(i int) (method, path string, header http.Header, body []byte)) ([]apitest.Response, time.Duration) {
	t.Helper()
	out := make([]apitest.Response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		method, path, header, body := request(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = c.do(method, path, header, bytes.NewReader(body))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out, elapsed
}

// fromGateway tells the gateway's own problem answers (deploy/nginx/nginx.conf) from the
// services'.
func fromGateway(r apitest.Response) bool {
	return strings.HasPrefix(r.Str("detail"), "the gateway ")
}
