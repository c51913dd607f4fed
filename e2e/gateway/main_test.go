package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/authmesh/e2e/stack"
)

// binDir holds the service binaries, built once by TestMain; nginxBin is nginx.
var binDir, nginxBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if nginxBin, err = findNginx(); err != nil {
		if os.Getenv("CI") == "" {
			fmt.Println("skipping e2e/gateway:", err)
			return 0
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "authmesh-gateway-bin-")
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

// findNginx finds nginx on the PATH, or where Debian puts it (/usr/sbin is not on every user's
// PATH).
func findNginx() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", fmt.Errorf("nginx is not installed (apt-get install nginx-light; .ci/run installs it)")
}

// newStack starts the system for one test, account trusting X-Forwarded-For from the loopback
// address that nginx connects from.
func newStack(t *testing.T) *stack.Stack {
	t.Helper()
	return stack.ForTest(t, stack.Options{BinDir: binDir, LogLevel: "info", Env: []string{"TRUSTED_PROXIES=" + proxyAddr + "/32"}})
}
