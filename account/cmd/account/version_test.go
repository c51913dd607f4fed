package main

import (
	"io"
	"strings"
	"testing"

	"github.com/authmesh/events/servicetest"
)

// TestVersion: "account version" prints the module and the Go version the binary was built with, and
// needs no configuration (the VCS part is stamped by go build only; see events/service).
func TestVersion(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"version"}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("run(version) = %v, stderr %q; want nil", err, stderr.String())
	}
	servicetest.CheckVersion(t, "account", stdout.String())
	var help strings.Builder
	if err := run(t.Context(), []string{"--help"}, getenv, &help, io.Discard); err != nil || !strings.Contains(help.String(), "\n  version ") {
		t.Errorf("the usage does not list version: %q", help.String())
	}
}
