package servicetest

import (
	"runtime"
	"strings"
	"testing"
)

// CheckVersion fails t unless out, what the version command of service printed, starts with the
// service's name and names its module, the Go version this test runs with (the toolchain that
// built both), and a revision line (service.WriteVersion).
func CheckVersion(t *testing.T, service, out string) {
	t.Helper()
	if !strings.HasPrefix(out, service+" ") {
		t.Errorf("%s version printed %q, want it to start with the name", service, out)
	}
	for _, want := range []string{"module    github.com/authmesh/" + service + "\n", "go        " + runtime.Version() + "\n", "revision  "} {
		if !strings.Contains(out, want) {
			t.Errorf("%s version printed %q, want %q in it", service, out, want)
		}
	}
}
