package replicacmd

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/authmesh/events/service"
)

func TestMain_commandLine(t *testing.T) {
	defaults := service.Config{Name: "blog"}
	getenv := func(string) string { return "" }
	served := errors.New("served")
	serve := func(context.Context) error { return served }

	for _, args := range [][]string{nil, {"serve"}} {
		if err := Main(t.Context(), defaults, args, getenv, io.Discard, io.Discard, serve); err != served {
			t.Errorf("Main(%q) = %v, want serve's result", args, err)
		}
	}
	for _, args := range [][]string{{"nonsense"}, {"serve", "extra"}} {
		var stderr strings.Builder
		err := Main(t.Context(), defaults, args, getenv, io.Discard, &stderr, serve)
		if code, ok := errors.AsType[ExitCode](err); !ok || code != 2 || !strings.Contains(stderr.String(), Usage("blog")) {
			t.Errorf("Main(%q) = %v, stderr %q; want exit code 2 and the usage", args, err, stderr.String())
		}
	}
	for _, arg := range []string{"-h", "--help", "help"} {
		var stdout strings.Builder
		if err := Main(t.Context(), defaults, []string{arg}, getenv, &stdout, io.Discard, serve); err != nil || !strings.Contains(stdout.String(), Usage("blog")) {
			t.Errorf("Main(%q) = %v, stdout %q; want nil and the usage", arg, err, stdout.String())
		}
	}
	var stderr strings.Builder
	if err := Main(t.Context(), defaults, []string{"replica", "frobnicate"}, getenv, io.Discard, &stderr, serve); err != ExitCode(2) {
		t.Errorf("Main(replica frobnicate) = %v, want ExitCode(2)", err)
	}
}
