// Package propagation measures how long a change of a user's roles takes to be enforced by blog
// and shop, on the real system: the binaries of this workspace run as processes (e2e/stack)
// against a private NATS server and fresh databases.
//
// BenchmarkReportPropagation has an admin change the roles of many users through account's HTTP
// API at a steady rate, first on an idle system, then while blog and shop serve all the
// authorized requests a closed loop of clients can make, and times each change from the PUT's
// answer to its enforcement on each service. Enforcement is observed as the NOTIFY that the
// replica's apply transaction sends on the service's database channel replica_users once it
// commits; on a sample of changes, requests made with the user's old token check that the
// services' answers agree with it. The time is then split into stages by the timestamps the
// system leaves behind: the outbox row's created_at in account's database, the stream's timestamp
// of the message, and the replica row's updated_at (the start of its apply transaction).
//
//	go test -run '^$' -bench Report -benchtime 1x ./e2e/bench/propagation/
//
// runs it briefly (smoke scale); BENCH_SCALE=full runs it at full scale, and BENCH_OUT=dir saves
// its section of docs/performance.md (events/benchfig).
package propagation
