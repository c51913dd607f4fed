package service

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Revision name the build when the linker sets them, as in
//
//	go build -ldflags "-X github.com/authmesh/events/service.Version=v1.4.0 -X github.com/authmesh/events/service.Revision=$(git rev-parse HEAD)" ./blog/cmd/blog
//
// Left empty (the Makefile and the Dockerfile set neither), Build falls back on what the Go
// toolchain recorded in the binary.
var (
	Version  string
	Revision string
)

// BuildInfo says which build of a service is running.
type BuildInfo struct {
	// Version is Version if set, else the main module's version: "(devel)" for a build of the
	// workspace, as every build of this repository is.
	Version string
	// Revision is Revision if set, else the VCS revision the toolchain stamped (with "-dirty" for
	// modified sources), else "unknown": builds in the workspace, and those from the Docker context
	// (no .git), carry none.
	Revision string
	// GoVersion is the toolchain that built the binary, such as go1.26.8.
	GoVersion string
}

// Build returns the build information of the running binary.
func Build() BuildInfo {
	b := BuildInfo{Version: Version, Revision: Revision, GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if ok {
		b.GoVersion = info.GoVersion
		if b.Version == "" {
			b.Version = info.Main.Version
		}
		if b.Revision == "" {
			b.Revision = vcsRevision(info.Settings)
		}
	}
	if b.Version == "" {
		b.Version = "unknown"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

// vcsRevision is the revision among the settings go build stamped, "" if none.
func vcsRevision(settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// NewBuildInfoCollector returns the gauge <name>_build_info{version,revision,goversion}, always 1,
// of Build(): joined to other series of the same target, it tells which build produced them.
func NewBuildInfoCollector(name string) prometheus.Collector {
	b := Build()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        name + "_build_info",
		Help:        "Always 1; its labels name the build of " + name + " that is running (see docs/operations.md).",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
