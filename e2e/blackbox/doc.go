// Package blackbox is the black-box suite: tests of a running system (account, blog, shop) that
// use only what a client or an operator has, namely HTTP, the operator commands, and NATS to read
// the published events. They hold the system to docs/contract.md: status codes, error codes,
// headers and JSON shapes. Besides, every request they make and every answer they get is held to
// the OpenAPI document the service serves at /openapi.json, and every event they read to
// docs/asyncapi.yaml (package e2e/apivalidate): a disagreement fails the test that met it.
//
// Which system:
//
//   - ACCOUNT_URL unset: TestMain starts its own (package e2e/stack: the binaries built from this
//     workspace, a private embedded NATS server, fresh databases on TEST_DATABASE_URL or the
//     local Postgres) and stops it at the end. This is what `make test` and `make e2e` run; it
//     never touches the shared NATS server.
//   - ACCOUNT_URL set: the system at ACCOUNT_URL, BLOG_URL and SHOP_URL (default
//     http://127.0.0.1:8082 and :8083), NATS_URL (an identity that may read the stream, such as
//     nats://ops:<password>@host:4222; default the operator's URL that `make run` wrote to
//     tmp/env/ops.env, else nats://127.0.0.1:4222), with the admin ADMIN_EMAIL / ADMIN_PASSWORD
//     (default admin@example.com / admin-password, as `make run` and docker-compose set up).
//     Operator commands run as ACCOUNT_CMD, BLOG_CMD and SHOP_CMD, split on spaces (e.g. "docker
//     compose exec -T blog blog"); unset, they are bin/<service> of the workspace if it exists,
//     run with the caller's environment plus the service's environment that `make run` wrote to
//     tmp/env/<service>.env.
//
// The tests tolerate a shared, long-lived system: every user has a unique email, lists are never
// assumed empty and no test depends on global counts. Tests that need NATS or an operator
// command skip, saying why, when an external system does not offer it.
//
// Against `make run`:
//
//	ACCOUNT_URL=http://127.0.0.1:8081 go test -count=1 -v ./e2e/blackbox/
//
// Against `docker compose up -d --build` (NATS is not published there, so the event test skips):
//
//	ACCOUNT_URL=http://127.0.0.1:8081 BLOG_CMD="docker compose exec -T blog blog" \
//	  SHOP_CMD="docker compose exec -T shop shop" ACCOUNT_CMD="docker compose exec -T account account" \
//	  go test -count=1 -v ./e2e/blackbox/
package blackbox
