package observability

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/authmesh/e2e/stack"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// The files under test, relative to root.
const (
	alertsFile      = "deploy/prometheus/alerts.yml"
	alertsTestFile  = "deploy/prometheus/alerts_test.yml"
	prometheusFile  = "deploy/prometheus/prometheus.yml"
	dashboardFile   = "deploy/grafana/dashboards/authmesh.json"
	operationsFile  = "docs/operations.md"
	promtoolInstall = "apt-get install prometheus (Debian's package, which has /usr/bin/promtool)"
)

// binDir holds the binaries the stacks of this package run, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authmesh-observability-bin-")
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
