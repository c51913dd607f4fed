package observability

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/e2e/apitest"
	"github.com/authmesh/e2e/stack"
	"github.com/google/uuid"
)

// TestMetrics starts the system, provokes every decision of the authenticator (allowed, 401, 403
// for a disabled user, 503 replica_lagging for a user registered while NATS is down) and an
// outbox backlog, then scrapes /metrics of each service: every metric that an alert or a panel
// of the dashboard reads is exposed, and the figures agree with the traffic.
func TestMetrics(t *testing.T) {
	start := time.Now()
	s := stack.ForTest(t, stack.Options{BinDir: binDir, LogLevel: "info"})
	account, blog, shop := s.URL["account"], s.URL["blog"], s.URL["shop"]
	admin := apitest.Login(t, account, s.AdminEmail, s.AdminPassword)

	// allowed, and the same token again (a hit in the token cache), on blog and shop.
	aliceID, alice := apitest.Register(t, account, "alice@example.com", "Alice")
	apitest.Eventually(t, http.StatusOK, "alice reaches shop", func() apitest.Response {
		return apitest.Call(t, "GET", shop+"/v1/orders", alice, nil)
	})
	apitest.Call(t, "GET", shop+"/v1/orders", alice, nil).Want(t, http.StatusOK, "alice lists her orders again")
	apitest.Call(t, "PATCH", blog+"/v1/posts/"+uuid.NewString(), alice, map[string]any{"title": "x"}).
		Want(t, http.StatusNotFound, "alice patches no post")

	// 401: no token, a bad token.
	apitest.Call(t, "GET", shop+"/v1/orders", "", nil).WantProblem(t, http.StatusUnauthorized, "unauthenticated", "no token")
	apitest.Call(t, "GET", shop+"/v1/orders", "abc.def.ghi", nil).WantProblem(t, http.StatusUnauthorized, "unauthenticated", "bad token")

	// 403: alice disabled, her token still valid.
	apitest.Call(t, "PUT", account+"/v1/users/"+aliceID+"/status", admin, map[string]any{"status": "disabled"}).
		Want(t, http.StatusOK, "disable alice")
	apitest.Call(t, "GET", account+"/v1/users/me", alice, nil).WantProblem(t, http.StatusForbidden, "user_disabled", "account: alice disabled")
	apitest.Eventually(t, http.StatusForbidden, "shop: alice disabled", func() apitest.Response {
		return apitest.Call(t, "GET", shop+"/v1/orders", alice, nil)
	})

	// 503 replica_lagging: carol registers while NATS is down; her event waits in account's
	// outbox, so shop does not know her yet.
	s.NATS.Stop()
	_, carol := apitest.Register(t, account, "carol@example.com", "Carol")
	apitest.Call(t, "GET", shop+"/v1/orders", carol, nil).WantProblem(t, http.StatusServiceUnavailable, "replica_lagging", "shop before carol's event")
	backlog := eventually(t, "account's outbox backlog while NATS is down", func() (scrape, string) {
		m := scrapeMetrics(t, account)
		if m.sum("outbox_pending_events", nil) >= 1 && m.sum("outbox_oldest_pending_age_seconds", nil) > 0 {
			return m, ""
		}
		return nil, fmt.Sprintf("outbox_pending_events %v, outbox_oldest_pending_age_seconds %v",
			m.sum("outbox_pending_events", nil), m.sum("outbox_oldest_pending_age_seconds", nil))
	})
	if got := backlog.sum("outbox_publish_errors_total", nil); got < 1 {
		t.Errorf("account: outbox_publish_errors_total = %v while NATS is down, want ≥ 1", got)
	}
	time.Sleep(time.Second) // carol's event is at least this late on shop
	if err := s.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	apitest.Eventually(t, http.StatusOK, "carol reaches shop once NATS is back", func() apitest.Response {
		return apitest.Call(t, "GET", shop+"/v1/orders", carol, nil)
	})
	apitest.Eventually(t, http.StatusOK, "carol reaches blog once NATS is back", func() apitest.Response {
		return apitest.Call(t, "GET", blog+"/v1/posts?author_id="+aliceID, carol, nil)
	})
	// Carol's token on blog's authenticated route: her event has arrived there too.
	apitest.Eventually(t, http.StatusNotFound, "carol reaches blog's replica", func() apitest.Response {
		return apitest.Call(t, "PATCH", blog+"/v1/posts/"+uuid.NewString(), carol, map[string]any{"title": "x"})
	})
	eventually(t, "account's outbox drained", func() (scrape, string) {
		m := scrapeMetrics(t, account)
		if m.sum("outbox_pending_events", nil) == 0 && m.sum("outbox_oldest_pending_age_seconds", nil) == 0 {
			return m, ""
		}
		return nil, fmt.Sprintf("outbox_pending_events %v", m.sum("outbox_pending_events", nil))
	})

	scrapes := map[string]scrape{}
	for _, svc := range stack.Services {
		scrapes[svc] = scrapeMetrics(t, s.URL[svc])
	}

	t.Run("every metric the alerts and the dashboard read is exposed", func(t *testing.T) {
		exposed := map[string][]string{}
		for svc, m := range scrapes {
			for name := range m.names() {
				exposed[name] = append(exposed[name], svc)
			}
		}
		used := map[string]string{} // metric -> where it is read
		for _, a := range alerts(t) {
			for _, n := range metricNames(a.Expr) {
				used[n] = "alert " + a.Alert
			}
		}
		for title, exprs := range dashboardExprs(t) {
			for _, e := range exprs {
				for _, n := range metricNames(e) {
					used[n] = "panel " + strconv.Quote(title)
				}
			}
		}
		if len(used) < 10 {
			t.Fatalf("only %d metric names found in the alerts and the dashboard: the parser has gone blind: %v", len(used), used)
		}
		for n, where := range used {
			if !isSynthetic(n) && len(exposed[n]) == 0 {
				t.Errorf("%s reads %s, which no service exposes", where, n)
			}
		}
	})

	t.Run("build info", func(t *testing.T) {
		for _, svc := range stack.Services {
			series := scrapes[svc].find(svc+"_build_info", nil)
			if len(series) != 1 || series[0].value != 1 {
				t.Errorf("%s: %s_build_info = %v, want one series of value 1", svc, svc, series)
				continue
			}
			want := map[string]string{"version": "(devel)", "revision": "unknown", "goversion": runtime.Version()}
			for k, v := range want {
				if got := series[0].labels[k]; got != v {
					t.Errorf("%s: %s_build_info{%s=%q}, want %q (a build of the workspace, by this toolchain)", svc, svc, k, got, v)
				}
			}
		}
	})

	t.Run("authorization decisions", func(t *testing.T) {
		for _, c := range []struct {
			svc, outcome string
			min          float64
		}{
			{"shop", "allowed", 2}, {"shop", "unauthorized", 2}, {"shop", "forbidden", 1}, {"shop", "lagging", 1},
			{"blog", "allowed", 2},
			{"account", "allowed", 1}, {"account", "forbidden", 1},
		} {
			if got := scrapes[c.svc].sum("auth_decisions_total", map[string]string{"outcome": c.outcome}); got < c.min {
				t.Errorf("%s: auth_decisions_total{outcome=%q} = %v, want ≥ %v", c.svc, c.outcome, got, c.min)
			}
		}
		for _, svc := range stack.Services {
			for _, o := range []string{"allowed", "unauthorized", "forbidden", "lagging", "unavailable"} {
				if len(scrapes[svc].find("auth_decisions_total", map[string]string{"outcome": o})) != 1 {
					t.Errorf("%s: no series auth_decisions_total{outcome=%q} (every outcome is exposed from the start)", svc, o)
				}
			}
		}
		if got := scrapes["shop"].sum("auth_token_cache_lookups_total", map[string]string{"result": "hit"}); got < 1 {
			t.Errorf("shop: auth_token_cache_lookups_total{result=\"hit\"} = %v, want ≥ 1 (alice's token was sent again)", got)
		}
	})

	t.Run("HTTP requests by route and status", func(t *testing.T) {
		m := scrapes["shop"]
		for code, min := range map[string]float64{"200": 2, "401": 2, "403": 1, "503": 1} {
			if got := m.sum("http_requests_total", map[string]string{"route": "GET /v1/orders", "code": code}); got < min {
				t.Errorf("shop: http_requests_total{route=\"GET /v1/orders\",code=%q} = %v, want ≥ %v", code, got, min)
			}
		}
		total := m.sum("http_requests_total", map[string]string{"route": "GET /v1/orders"})
		if got := m.sum("http_request_duration_seconds_count", map[string]string{"route": "GET /v1/orders"}); got != total {
			t.Errorf("shop: http_request_duration_seconds_count{route=\"GET /v1/orders\"} = %v, want the %v requests", got, total)
		}
		// The 503 waited for the replica (2 s) before answering.
		if slow := total - m.sum("http_request_duration_seconds_bucket", map[string]string{"route": "GET /v1/orders", "le": "1"}); slow < 1 {
			t.Errorf("shop: no request of GET /v1/orders over 1 s, want the 503 that waited for the replica")
		}
	})

	t.Run("replica lag", func(t *testing.T) {
		now := time.Now()
		for _, svc := range []string{"blog", "shop"} {
			m := scrapes[svc]
			applied := m.sum("replica_events_applied_total", nil)
			if applied < 3 { // the admin, alice, alice disabled, carol
				t.Errorf("%s: replica_events_applied_total = %v, want ≥ 3", svc, applied)
			}
			count := m.sum("replica_apply_lag_seconds_count", nil)
			if count != applied {
				t.Errorf("%s: replica_apply_lag_seconds_count = %v, want replica_events_applied_total = %v", svc, count, applied)
			}
			if late := count - m.sum("replica_apply_lag_seconds_bucket", map[string]string{"le": "1"}); late < 1 {
				t.Errorf("%s: no event applied over 1 s after it occurred, want carol's (NATS was down)", svc)
			}
			if sum := m.sum("replica_apply_lag_seconds_sum", nil); sum <= 1 || sum > now.Sub(start).Seconds()*applied {
				t.Errorf("%s: replica_apply_lag_seconds_sum = %v, want above 1 s and below the test's duration for each event", svc, sum)
			}
			at := m.sum("replica_last_applied_event_timestamp_seconds", nil)
			if last := time.Unix(0, int64(at*1e9)); last.Before(start.Add(-time.Second)) || last.After(now) {
				t.Errorf("%s: replica_last_applied_event_timestamp_seconds = %v (%s), want within the test (%s .. %s)", svc, at, last, start, now)
			}
			for _, name := range []string{"replica_pending_events", "replica_events_dead_lettered_total"} {
				if got := m.sum(name, nil); got != 0 {
					t.Errorf("%s: %s = %v, want 0", svc, name, got)
				}
			}
		}
	})

	t.Run("outbox", func(t *testing.T) {
		if got := scrapes["account"].sum("outbox_published_total", nil); got < 4 {
			t.Errorf("account: outbox_published_total = %v, want ≥ 4", got)
		}
	})
}

// eventually calls probe until it returns a scrape, for at most 20 seconds; probe's string says
// what it saw otherwise.
func eventually(t *testing.T, what string, probe func() (scrape, string)) scrape {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, saw := probe()
		if m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s; last seen: %s", what, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// series is one sample of a scrape.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape is what one GET /metrics answered.
type scrape []series

// scrapeMetrics reads the Prometheus text of base/metrics.
func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %v", base, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s/metrics: Content-Type %q, want the text format", base, ct)
	}
	m, err := parseText(string(raw))
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	return m
}

// parseText parses the Prometheus text format (version 0.0.4): name{label="value",...} value
// [timestamp] per line, comments skipped.
func parseText(text string) (scrape, error) {
	var out scrape
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseLine(line string) (series, error) {
	s := series{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no name")
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, ", ")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.Index(line, `="`)
			if eq <= 0 {
				return s, fmt.Errorf("bad label")
			}
			name := line[:eq]
			line = line[eq+2:]
			var v strings.Builder
			j := 0
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						v.WriteByte('\n')
					default:
						v.WriteByte(line[j])
					}
					continue
				}
				v.WriteByte(line[j])
			}
			if j == len(line) {
				return s, fmt.Errorf("unterminated label value")
			}
			s.labels[name] = v.String()
			line = line[j+1:]
		}
	}
	f := strings.Fields(line)
	if len(f) < 1 || len(f) > 2 {
		return s, fmt.Errorf("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// find returns the series of name that carry every label of match.
func (m scrape) find(name string, match map[string]string) []series {
	var out []series
	for _, s := range m {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// sum adds the values of find(name, match); NaN when there is none, which fails every comparison.
func (m scrape) sum(name string, match map[string]string) float64 {
	found := m.find(name, match)
	if len(found) == 0 {
		return math.NaN()
	}
	var total float64
	for _, s := range found {
		total += s.value
	}
	return total
}

// names returns the series names of the scrape.
func (m scrape) names() map[string]bool {
	out := map[string]bool{}
	for _, s := range m {
		out[s.name] = true
	}
	return out
}

func TestParseText(t *testing.T) {
	m, err := parseText("# HELP x_total A counter.\n# TYPE x_total counter\n" +
		`x_total{a="1",b="q\"uote\\"} 3` + "\n" + `y 1.5e+00 1700000000000` + "\n" + `z{le="+Inf"} +Inf` + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.sum("x_total", map[string]string{"b": `q"uote\`}); got != 3 {
		t.Errorf("x_total = %v, want 3", got)
	}
	if got := m.sum("y", nil); got != 1.5 {
		t.Errorf("y = %v, want 1.5", got)
	}
	if got := m.sum("z", map[string]string{"le": "+Inf"}); !math.IsInf(got, 1) {
		t.Errorf("z = %v, want +Inf", got)
	}
	if !math.IsNaN(m.sum("absent", nil)) {
		t.Error("an absent series sums to a number")
	}
	if want := []string{"x_total", "y", "z"}; !slices.Equal(sortedKeys(m.names()), want) {
		t.Errorf("names %v, want %v", sortedKeys(m.names()), want)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
