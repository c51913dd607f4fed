// Package httpload measures the services from outside, over HTTP, as processes: the sections
// "1-http" (authorized requests against the same endpoints without authorization and against
// the synchronous design), "5-memory" (resident memory idle, under that load, and through a storm
// of logins) and "6-login" (registrations and logins, and the argon2id hash behind them) of
// docs/performance.md.
//
// BenchmarkReportServices builds account, blog and shop with the build tag bench, which adds the
// baselines' routes to blog and shop (blog/cmd/blog/bench.go, shop/cmd/shop/bench.go: the same
// handlers under /bench/noauth/ and /bench/sync/), starts them with e2e/stack against a private
// NATS server and fresh databases, and drives them with closed loops of clients (e2e/bench/load)
// while it reads their CPU time and memory in /proc.
//
//	go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/httpload/
//
// runs it briefly (smoke scale); BENCH_SCALE=full at full scale, and BENCH_OUT=dir saves its
// sections (events/benchfig) in dir, which must be an absolute path: each package's test runs in
// its own folder.
package httpload
