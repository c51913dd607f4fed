// Package authcost measures, inside one process, what authorizing a request costs and what its
// parts cost at best: the section "1-auth" of docs/performance.md.
//
// BenchmarkReportAuth wires events/auth and events/replica as blog does (auth.New over a Verifier
// and a replica.New fed by the USERS stream of an embedded NATS server, over a fresh Postgres
// database) and times auth.Authenticator.Require around a handler that does nothing, on one
// recorded request whose token it has seen before: verifying the token, looking the user up and
// putting it in the context. Beside it, the limits of the parts: a raw Ed25519 verify of the
// token's signature (crypto/ed25519), a jwt verify that no cache can answer (auth.Verifier, a new
// token each time), a primary-key SELECT of the user's replica row, and a JetStream publish →
// consume round trip. It goes through the packages' public API only.
//
//	go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/authcost/
//
// runs it briefly (smoke scale); BENCH_SCALE=full at full scale, and BENCH_OUT=dir saves its
// section (events/benchfig) in dir, which must be an absolute path: each package's test runs in
// its own folder.
package authcost
