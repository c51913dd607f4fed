package rig

import (
	"fmt"
	"strings"
)

// Errors returns the lines of level ERROR in the log of each service and instance named, at
// most n of each: what explains a 500 or a failed apply when a check fails, which the tail of a
// busy log no longer shows.
func (s *System) Errors(n int, names ...string) string {
	var b strings.Builder
	for _, name := range names {
		var lines []string
		total := 0
		for line := range strings.SplitSeq(s.Log(name), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "level=ERROR") {
				total++
				if len(lines) < n {
					lines = append(lines, line)
				}
			}
		}
		if total == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s: %d errors logged, the first %d:\n", name, total, len(lines))
		for _, l := range lines {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}

// LogErrorsOnFailure logs, when the test has failed by its end, the errors that the services and
// instances named logged (Errors).
func (s *System) LogErrorsOnFailure(names ...string) {
	s.t.Cleanup(func() {
		if s.t.Failed() {
			if e := s.Errors(10, names...); e != "" {
				s.t.Log("errors the services logged:\n" + e)
			}
		}
	})
}
