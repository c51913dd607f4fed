package service

import (
	"fmt"
	"io"
	"runtime/debug"
)

// WriteVersion prints what the running binary was built from, for a service's version command:
// the service's name and its module's version, the module, the Go version, the platform, and the
// VCS revision, commit time and whether the tree had uncommitted changes, as the build stamped
// them (runtime/debug.ReadBuildInfo), or the Version and Revision the linker set, which
// <service>_build_info reports alike. go build stamps the VCS information when it builds from a
// checkout with git at hand (not with -buildvcs=false, nor in go test).
func WriteVersion(w io.Writer, name string) error {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		_, err := fmt.Fprintf(w, "%s: no build information in this binary\n", name)
		return err
	}
	return writeVersion(w, name, info)
}

// writeVersion is WriteVersion for the build information info.
func writeVersion(w io.Writer, name string, info *debug.BuildInfo) error {
	set := map[string]string{}
	for _, s := range info.Settings {
		set[s.Key] = s.Value
	}
	version := info.Main.Version
	if Version != "" { // set by the linker, as <service>_build_info reports it too
		version = Version
	}
	if version == "" {
		version = "(devel)"
	}
	lines := [][2]string{
		{"module", info.Main.Path},
		{"go", info.GoVersion},
	}
	if set["GOOS"] != "" {
		lines = append(lines, [2]string{"platform", set["GOOS"] + "/" + set["GOARCH"]})
	}
	if Revision != "" {
		lines = append(lines, [2]string{"revision", Revision})
	} else if rev := set["vcs.revision"]; rev != "" {
		lines = append(lines, [2]string{"revision", rev + " (" + set["vcs"] + ")"})
		if t := set["vcs.time"]; t != "" {
			lines = append(lines, [2]string{"time", t})
		}
		if m := set["vcs.modified"]; m != "" {
			lines = append(lines, [2]string{"modified", m})
		}
	} else {
		lines = append(lines, [2]string{"revision", "unknown (built without VCS information)"})
	}
	if _, err := fmt.Fprintf(w, "%s %s\n", name, version); err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "  %-9s %s\n", l[0], l[1]); err != nil {
			return err
		}
	}
	return nil
}
