// Command relreport writes the rows that the checks of the reliability suite saved
// (e2e/reliability/report) into docs/reliability.md, between its markers:
//
//	go run ./e2e/cmd/relreport -in tmp/reliability -doc docs/reliability.md -took 14m3s
//
// The rest of the document is left as it is. `make reliability` runs it after the suite, whether
// the suite passed or not, so that a failed check shows as FAILED beside its figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/authmesh/e2e/reliability/report"
)

func main() {
	in := flag.String("in", "tmp/reliability", "the folder the checks saved their rows in (RELIABILITY_OUT)")
	doc := flag.String("doc", "docs/reliability.md", "the document to write the rows into")
	took := flag.Duration("took", 0, "how long the suite ran")
	flag.Parse()
	if err := run(*in, *doc, *took, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "relreport:", err)
		os.Exit(1)
	}
}

func run(in, doc string, took time.Duration, now time.Time) error {
	rows, err := report.Load(in)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("no rows in %s: run the suite first (make reliability)", in)
	}
	old, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	out := report.Splice(string(old), report.Render(rows, now, took))
	return os.WriteFile(doc, []byte(out), 0o644)
}
