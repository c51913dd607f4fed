package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/reliability/report"
)

// The rows saved by passing checks are written between the markers, in ID order, replacing an
// earlier run's and keeping the rest of the document.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "rows")
	t.Setenv(report.OutVar, in)
	for _, r := range []report.Row{
		{ID: "F02", Check: "leader killed", Figures: []report.Figure{{Name: "lost", Value: "0"}}, Pass: true, Command: "go test x"},
		{ID: "F01", Check: "broker down | long", Figures: []report.Figure{{Name: "lost", Value: "3"}}},
	} {
		t.Run(r.ID, func(t *testing.T) {
			row := r
			report.Save(t, &row) // Pass from the subtest's result: passed
		})
	}
	doc := filepath.Join(dir, "reliability.md")
	if err := os.WriteFile(doc, []byte("# Reliability\n\nintro\n\n"+report.Begin+"\nold rows\n"+report.End+"\n\n## After\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, doc, 3*time.Minute, time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	got := string(b)
	for _, want := range []string{"intro", "## After", "| **F01** broker down \\| long |", "| **F02** leader killed |", "lost 0", "2 checks, 2 passed", "`go test x`"} {
		if !strings.Contains(got, want) {
			t.Errorf("document lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "old rows") {
		t.Errorf("the earlier run's rows were kept:\n%s", got)
	}
	if strings.Index(got, "**F01**") > strings.Index(got, "**F02**") {
		t.Errorf("rows not in ID order:\n%s", got)
	}
	if err := run(filepath.Join(dir, "none"), doc, 0, time.Now()); err == nil {
		t.Error("no rows: want an error")
	}
}

// A failed check is shown as FAILED.
func TestRenderFailed(t *testing.T) {
	out := report.Render([]report.Row{{ID: "L01", Pass: false}, {ID: "L04", Pass: true}}, time.Now(), time.Minute)
	if !strings.Contains(out, "| **L01**") || !strings.Contains(out, "**FAILED**") || !strings.Contains(out, "2 checks, 1 passed") {
		t.Errorf("render:\n%s", out)
	}
}
