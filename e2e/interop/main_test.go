// Package interop checks that verifiers written by others accept account's access tokens as
// they are: the npm package jose, run by Node.js (e2e/interop/jose/verify.mjs), verifies tokens
// of the real system with the keys it fetches from /.well-known/jwks.json, across a key rotation,
// and refuses what it must. The system runs as processes (package e2e/stack).
//
// The test needs node (20 or later) and jose installed by npm from e2e/interop/jose/package-lock.json;
// it runs `npm ci` itself when jose is missing and npm is there. Without them it skips, unless CI
// is set: then it fails, saying how to install them.
package interop

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/authmesh/e2e/stack"
)

// binDir holds the binaries every stack of this package runs, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authmesh-interop-bin-")
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
