package main

import (
	"runtime"
	"strings"
	"testing"
)

// TestVersion: "shop version" prints the module and the Go version the binary was built with, and
// needs no configuration (the VCS part is stamped by go build only; see events/service).
func TestVersion(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"version"}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("run(version) = %v, stderr %q; want nil", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"shop ", "module    github.com/authmesh/shop\n", "go        " + runtime.Version() + "\n", "revision  "} {
		if !strings.Contains(out, want) {
			t.Errorf("run(version) printed %q, want %q in it", out, want)
		}
	}
	if !strings.HasPrefix(out, "shop ") {
		t.Errorf("run(version) printed %q, want it to start with the name", out)
	}
	if !strings.Contains(usage, "shop version") {
		t.Errorf("the usage %q does not list version", usage)
	}
}
