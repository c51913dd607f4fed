package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds the account, blog and shop binaries of the workspace that holds the current
// directory into dir, as the Dockerfile does (static, -trimpath), with the build tags given (the
// benchmarks build with "bench"; production binaries never have a tag).
func Build(ctx context.Context, dir string, tags ...string) error {
	root, err := WorkspaceRoot(ctx)
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	for _, s := range Services {
		args = append(args, "./"+s+"/cmd/"+s)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// WorkspaceRoot returns the directory of the go.work file that the current directory is in.
func WorkspaceRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOWORK: %w", err)
	}
	work := strings.TrimSpace(string(out))
	if work == "" || work == "off" {
		return "", fmt.Errorf("not inside the workspace (go env GOWORK = %q)", work)
	}
	return filepath.Dir(work), nil
}
