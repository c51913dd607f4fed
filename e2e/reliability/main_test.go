// The reliability suite: every check starts the system as processes on private nats-server
// processes and fresh databases, loads it, injects its fault, quiesces, and judges the history
// with the checker (e2e/reliability/rig). `make reliability` runs every check at full scale and
// writes docs/reliability.md from the rows they save; `make test` runs the fast ones at smoke
// scale.
package reliability

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/authmesh/e2e/reliability/report"
	"github.com/authmesh/e2e/reliability/rig"
)

// binDir holds the binaries every system of the suite runs, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authmesh-reliability-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := rig.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// ScaleVar selects the scale: "full" for `make reliability`; anything else is the smoke scale of
// `make test`, where the slow checks are skipped.
const ScaleVar = "RELIABILITY_SCALE"

func full() bool { return os.Getenv(ScaleVar) == "full" }

// size returns the smoke or the full figure.
func size(smoke, fullSize int) int {
	if full() {
		return fullSize
	}
	return smoke
}

// slow skips a check that only `make reliability` runs.
func slow(t *testing.T) {
	t.Helper()
	if !full() {
		t.Skipf("a slow check: run with %s=full (make reliability)", ScaleVar)
	}
}

// newRow starts the report row of a check, saved when the test ends.
func newRow(t *testing.T, id, check, input, expected string) *report.Row {
	t.Helper()
	r := &report.Row{ID: id, Check: check, Input: input, Expected: expected,
		Command: fmt.Sprintf("%s=full go test -count=1 -run '^%s$' ./e2e/reliability/", ScaleVar, t.Name())}
	report.Save(t, r)
	return r
}

// newSystem starts a system for a check.
func newSystem(t *testing.T, opts rig.Options) *rig.System {
	t.Helper()
	opts.BinDir = binDir
	return rig.New(t, opts)
}
