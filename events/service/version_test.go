package service

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteVersion(t *testing.T) {
	tests := []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"built from a checkout", debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/authmesh/blog", Version: "v0.0.0-20261201120000-4fa7953abcde+dirty"},
			Settings: []debug.BuildSetting{
				{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"},
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "4fa7953abcdef0123456789"},
				{Key: "vcs.time", Value: "2026-12-01T12:00:00Z"}, {Key: "vcs.modified", Value: "true"},
			},
		}, `blog v0.0.0-20261201120000-4fa7953abcde+dirty
  module    github.com/authmesh/blog
  go        go1.26.8
  platform  linux/amd64
  revision  4fa7953abcdef0123456789 (git)
  time      2026-12-01T12:00:00Z
  modified  true
`},
		{"without VCS information", debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/authmesh/blog"},
		}, `blog (devel)
  module    github.com/authmesh/blog
  go        go1.26.8
  revision  unknown (built without VCS information)
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeVersion(&out, "blog", &tt.info); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("writeVersion (-want +got):\n%s", diff)
			}
		})
	}
}

// The test binary has build information too: its Go version is this one's.
func TestWriteVersionOfThisBinary(t *testing.T) {
	var out bytes.Buffer
	if err := WriteVersion(&out, "x"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "x ") || !strings.Contains(out.String(), "  go        "+runtime.Version()+"\n") {
		t.Errorf("WriteVersion = %q, want the name and go %s", out.String(), runtime.Version())
	}
}
