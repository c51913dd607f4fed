package observability

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// promqlWords are the words of PromQL that are no metric: aggregation operators (which need not
// be followed by their parenthesis), set and comparison keywords, and the number literals.
var promqlWords = []string{
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
	"topk", "quantile", "limitk", "limit_ratio",
	"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
	"group_right", "inf", "nan", "atan2",
}

// groupings take a parenthesised list of label names.
var groupings = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// metricNames returns the metric names a PromQL expression (or a Grafana query, whose $variables
// it ignores) selects, sorted and once each: the identifiers outside strings, label matchers,
// range brackets and grouping lists that are neither functions, keywords nor numbers. A selector
// by {__name__=...} alone is not seen.
func metricNames(expr string) []string {
	var out []string
	i := 0
	skipSpace := func(j int) int {
		for j < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[j])) {
			j++
		}
		return j
	}
	// closing returns the index after the bracket that closes the one at j, skipping strings.
	closing := func(j int, open, close byte) int {
		depth := 0
		for ; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				j = endOfString(expr, j) - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return j
	}
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = endOfString(expr, i)
		case c == '{':
			i = closing(i, '{', '}')
		case c == '[':
			i = closing(i, '[', ']')
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				i = closing(i, '{', '}')
				continue
			}
			for i < len(expr) && isIdent(expr[i], true) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], true) || expr[i] == '.') {
				i++
			}
		case isIdent(c, false):
			j := i
			for j < len(expr) && isIdent(expr[j], true) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			i = j
			switch {
			case slices.Contains(groupings, word):
				if next < len(expr) && expr[next] == '(' {
					i = closing(next, '(', ')')
				}
			case slices.Contains(promqlWords, strings.ToLower(word)):
			case next < len(expr) && expr[next] == '(': // a function
			default:
				out = append(out, word)
			}
		default:
			i++
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// endOfString returns the index after the string literal that starts at i.
func endOfString(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1
		}
	}
	return len(s)
}

func isIdent(c byte, inner bool) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || inner && c >= '0' && c <= '9'
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up{job=~"account|blog|shop"} == 0`, []string{"up"}},
		{`sum by (job) (rate(http_requests_total{code=~"5..", code!="503"}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.01`,
			[]string{"http_requests_total"}},
		{`histogram_quantile(0.99, sum by (job, route, le) (rate(http_request_duration_seconds_bucket{route!~"GET /(healthz|readyz|metrics)"}[$__rate_interval])))`,
			[]string{"http_request_duration_seconds_bucket"}},
		{`(max by (job) (changes(replica_last_applied_sequence[10m])) == 0) and on () (sum(increase(outbox_published_total[10m])) > 0)`,
			[]string{"outbox_published_total", "replica_last_applied_sequence"}},
		{`increase(a_total[15m]) > 0 or increase(b_total{result="stale"}[15m]) > 0`, []string{"a_total", "b_total"}},
		{`time() - max by (job) (x_seconds offset 5m)`, []string{"x_seconds"}},
		{`a / on (job) group_left (version) b_info`, []string{"a", "b_info"}},
		{`sum without (instance) (c{l="a}b"}) * 1e3`, []string{"c"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, metricNames(tt.expr)); diff != "" {
			t.Errorf("metricNames(%q) (-want +got):\n%s", tt.expr, diff)
		}
	}
}
