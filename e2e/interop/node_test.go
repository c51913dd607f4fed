package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// joseDir holds verify.mjs, its package.json and package-lock.json, and node_modules once npm
// has installed them.
const joseDir = "jose"

// Bounds on the Node.js side: installing jose, one answer of the verifier, its exit.
const (
	installTimeout = 3 * time.Minute
	answerTimeout  = 20 * time.Second
	exitTimeout    = 10 * time.Second
)

const installHint = "install Node.js 20 or later (Debian: apt-get install nodejs npm) and run `npm ci --prefix e2e/interop/jose`"

var (
	installOnce sync.Once
	installErr  error
)

// needJose returns the node binary, with jose installed in jose/node_modules at the version
// package.json pins; it runs `npm ci` (once per test binary, bounded) when jose is missing or at
// another version. When node or jose cannot be had, it skips the test, or fails it when CI is
// set.
func needJose(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; %s", msg, installHint)
		}
		t.Skipf("%s; %s", msg, installHint)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("no node on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		unavailable("node --version: %v", err)
	}
	if major := nodeMajor(string(out)); major < 20 {
		unavailable("node %s is too old: jose needs Node.js 20 or later", strings.TrimSpace(string(out)))
	}
	installOnce.Do(func() { installErr = installJose() })
	if installErr != nil {
		unavailable("%v", installErr)
	}
	return node
}

// nodeMajor returns the major version in node's "v20.20.2", or 0.
func nodeMajor(version string) int {
	v := strings.TrimPrefix(strings.TrimSpace(version), "v")
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// installJose runs `npm ci` in joseDir unless node_modules already holds the pinned jose.
func installJose() error {
	want, err := pinnedJose()
	if err != nil {
		return err
	}
	if got := installedJose(); got == want {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("jose %s is not installed in e2e/interop/jose/node_modules, and there is no npm on PATH", want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefix", joseDir, "--no-audit", "--no-fund")
	cmd.WaitDelay = exitTimeout
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci --prefix e2e/interop/jose: %v\n%s", err, out)
	}
	if got := installedJose(); got != want {
		return fmt.Errorf("after npm ci, e2e/interop/jose/node_modules holds jose %q, want %s", got, want)
	}
	return nil
}

// pinnedJose is the version of jose that jose/package.json names.
func pinnedJose() (string, error) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(joseDir, "package.json"))
	if err == nil {
		err = json.Unmarshal(b, &pkg)
	}
	if err != nil {
		return "", fmt.Errorf("e2e/interop/jose/package.json: %w", err)
	}
	if pkg.Dependencies["jose"] == "" {
		return "", errors.New("e2e/interop/jose/package.json names no jose")
	}
	return pkg.Dependencies["jose"], nil
}

// installedJose is the version of jose in jose/node_modules, or "" when there is none.
func installedJose() string {
	var pkg struct {
		Version string `json:"version"`
	}
	b, err := os.ReadFile(filepath.Join(joseDir, "node_modules", "jose", "package.json"))
	if err != nil || json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}

// result is verify.mjs's answer for one token.
type result struct {
	OK      bool           `json:"ok"`
	Header  map[string]any `json:"header"`
	Claims  claims         `json:"claims"`
	Kids    []string       `json:"kids"`
	Code    string         `json:"code"`
	Claim   string         `json:"claim"`
	Reason  string         `json:"reason"`
	Message string         `json:"message"`
}

// claims are the claims of a verified token that the test looks at.
type claims struct {
	Iss   string   `json:"iss"`
	Sub   string   `json:"sub"`
	Aud   []string `json:"aud"`
	Iat   int64    `json:"iat"`
	Exp   int64    `json:"exp"`
	Jti   string   `json:"jti"`
	Roles []string `json:"roles"`
	Ver   int      `json:"ver"`
}

// verifier is one verify.mjs process reading tokens from its standard input: one jose key set
// for its whole life, as a long-running service holds one.
type verifier struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *bytes.Buffer
}

// startVerifier starts verify.mjs for a JWKS URL, an issuer and a default audience (extra: more
// of its flags); the test's end stops it.
func startVerifier(t *testing.T, node, jwksURL, issuer, audience string, extra ...string) *verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"verify.mjs", "--jwks", jwksURL, "--issuer", issuer, "--audience", audience}, extra...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = joseDir
	cmd.WaitDelay = exitTimeout
	v := &verifier{cmd: cmd, lines: make(chan string, 16), stderr: &bytes.Buffer{}}
	cmd.Stderr = v.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start verify.mjs: %v", err)
	}
	v.stdin = stdin
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(v.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			v.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		// Closing its input ends the script; the context kills it if it does not go in time.
		_ = stdin.Close()
		done := make(chan error, 1)
		go func() {
			for range v.lines { // drain, so the reader can finish
			}
			<-read
			done <- cmd.Wait()
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("verify.mjs exited with %v; stderr:\n%s", err, v.stderr)
			}
		case <-time.After(exitTimeout):
			cancel()
			<-done
			t.Errorf("verify.mjs did not exit within %s of the end of its input; killed", exitTimeout)
		}
		cancel()
	})
	return v
}

// verify asks the verifier about one token, for audience (empty: its default audience).
func (v *verifier) verify(t *testing.T, token, audience string) result {
	t.Helper()
	req := map[string]string{"token": token}
	if audience != "" {
		req["audience"] = audience
	}
	line, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("write to verify.mjs: %v; stderr:\n%s", err, v.stderr)
	}
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	select {
	case out, ok := <-v.lines:
		if !ok {
			t.Fatalf("verify.mjs exited without answering; stderr:\n%s", v.stderr)
		}
		return decode(t, out)
	case <-timer.C:
		t.Fatalf("verify.mjs gave no answer within %s; stderr:\n%s", answerTimeout, v.stderr)
	}
	return result{}
}

// verifyOnce runs verify.mjs afresh with the tokens as arguments, as a verifier that has just
// started (jose's default options), and returns its answers in order.
func verifyOnce(t *testing.T, node, jwksURL, issuer, audience string, tokens ...string) []result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	args := append([]string{"verify.mjs", "--jwks", jwksURL, "--issuer", issuer, "--audience", audience}, tokens...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = joseDir
	cmd.WaitDelay = exitTimeout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v; stderr:\n%s", err, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(tokens) {
		t.Fatalf("node verify.mjs printed %d lines for %d tokens:\n%s", len(lines), len(tokens), out)
	}
	results := make([]result, len(lines))
	for i, l := range lines {
		results[i] = decode(t, l)
	}
	return results
}

func decode(t *testing.T, line string) result {
	t.Helper()
	var r result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("verify.mjs printed %q: %v", line, err)
	}
	return r
}
