// Package observability holds the tests of what operators watch: the alert rules of
// deploy/prometheus/alerts.yml (checked and unit-tested with promtool, from Debian's prometheus
// package), their runbook_url sections in docs/operations.md, and the metrics that the rules and
// the Grafana dashboard (deploy/grafana/dashboards/authmesh.json) query, scraped from the running
// services after traffic that provokes each authorization decision.
package observability
