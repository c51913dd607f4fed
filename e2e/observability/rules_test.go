package observability

import (
	"bufio"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// alerts returns the alerting rules of deploy/prometheus/alerts.yml.
func alerts(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	raw, err := os.ReadFile(filepath.Join(root, alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no alerting rule", alertsFile)
	}
	return out
}

// promtool returns the path of promtool. Without it the test is skipped, or fails under CI (which
// installs it: .ci/run).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("promtool not found: %s", promtoolInstall)
	}
	t.Skipf("promtool not found (%s); CI fails here", promtoolInstall)
	return ""
}

// TestPromtool validates the configuration and the rules with Prometheus's own tool, and runs the
// rules' unit tests (deploy/prometheus/alerts_test.yml): the alerts there fire, and stay silent,
// when they should.
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "config", prometheusFile},
		{"check", "rules", alertsFile},
		{"test", "rules", alertsTestFile},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestAlertsShape: every alert has a severity of the two that routing knows, a summary, a
// description, and a runbook_url naming its own section of docs/operations.md: a heading with the
// alert's name whose GitHub anchor is the URL's fragment.
func TestAlertsShape(t *testing.T) {
	anchors := headingAnchors(t, operationsFile)
	seen := map[string]bool{}
	for _, a := range alerts(t) {
		t.Run(a.Alert, func(t *testing.T) {
			if seen[a.Alert] {
				t.Errorf("alert %s is defined twice", a.Alert)
			}
			seen[a.Alert] = true
			if s := a.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("severity %q, want critical or warning", s)
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if a.Annotations[k] == "" {
					t.Errorf("no annotation %s", k)
				}
			}
			u, err := url.Parse(a.Annotations["runbook_url"])
			if err != nil {
				t.Fatalf("runbook_url: %v", err)
			}
			if u.Path != operationsFile && !strings.HasSuffix(u.Path, "/"+operationsFile) {
				t.Errorf("runbook_url %s does not name %s", u, operationsFile)
			}
			heading, ok := anchors[u.Fragment]
			if !ok {
				t.Fatalf("runbook_url %s: %s has no heading with the anchor #%s", u, operationsFile, u.Fragment)
			}
			if !strings.Contains(heading, a.Alert) {
				t.Errorf("runbook_url %s leads to the heading %q, which does not name the alert", u, heading)
			}
		})
	}
}

// headingAnchors returns the headings of a Markdown file (outside code blocks) by the anchor
// GitHub gives them.
func headingAnchors(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	counts := map[string]int{}
	heading := regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	inFence := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") || strings.HasPrefix(strings.TrimSpace(line), "~~~") {
			inFence = !inFence
			continue
		}
		m := heading.FindStringSubmatch(line)
		if inFence || m == nil {
			continue
		}
		base := slug(m[1])
		a := base
		if n := counts[base]; n > 0 {
			a = base + "-" + strconv.Itoa(n)
		}
		counts[base]++
		out[a] = m[1]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// slug is GitHub's anchor of a heading's text: lower case, punctuation dropped (but - and _),
// each space a hyphen.
func slug(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r), unicode.IsNumber(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ServiceDown", "servicedown"},
		{"`/readyz`, `/healthz`, `/metrics`", "readyz-healthz-metrics"},
		{"Replica lag (alert on `replica lag`, or users get 503 `replica_lagging`)", "replica-lag-alert-on-replica-lag-or-users-get-503-replica_lagging"},
		{"account's database restored from a backup", "accounts-database-restored-from-a-backup"},
	}
	for _, tt := range tests {
		if got := slug(tt.in); got != tt.want {
			t.Errorf("slug(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// dashboardExprs returns the queries of deploy/grafana/dashboards/authmesh.json by panel title.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d is used twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				out[p.Title] = append(out[p.Title], tg.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatalf("%s has no panel with a query", dashboardFile)
	}
	return out
}

// TestDashboardCoversTheAlerts: every metric an alert reads is on the dashboard too, so that the
// one who is paged finds it there.
func TestDashboardCoversTheAlerts(t *testing.T) {
	shown := map[string]bool{}
	for _, exprs := range dashboardExprs(t) {
		for _, e := range exprs {
			for _, n := range metricNames(e) {
				shown[n] = true
			}
		}
	}
	for _, a := range alerts(t) {
		for _, n := range metricNames(a.Expr) {
			if !shown[n] {
				t.Errorf("alert %s reads %s, which no panel of %s shows", a.Alert, n, path.Base(dashboardFile))
			}
		}
	}
}

// synthetic are the series Prometheus makes itself, which no service exposes.
var synthetic = []string{"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

func isSynthetic(name string) bool { return slices.Contains(synthetic, name) }

// TestOperationsDoc: the table of alerts in docs/operations.md lists every alert, and every link
// to a section of that page (#anchor) leads to a heading of it.
func TestOperationsDoc(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, operationsFile))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, a := range alerts(t) {
		if !strings.Contains(text, "\n| "+a.Alert+" | ") {
			t.Errorf("%s: the table of alerts has no row for %s", operationsFile, a.Alert)
		}
	}
	anchors := headingAnchors(t, operationsFile)
	links := regexp.MustCompile(`\]\(#([^)\s]+)\)`).FindAllStringSubmatch(text, -1)
	if len(links) == 0 {
		t.Fatalf("%s links to none of its sections: the scan has gone blind", operationsFile)
	}
	for _, m := range links {
		if _, ok := anchors[m[1]]; !ok {
			t.Errorf("%s links to #%s, which is no heading of it", operationsFile, m[1])
		}
	}
}
