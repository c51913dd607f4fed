// Package e2e holds the end-to-end tests that own their system because they break it: the
// account, blog and shop binaries built from this repository, run as processes (package
// e2e/stack) and driven over HTTP (package e2e/apitest), while a test stops account, stops
// NATS, rotates the signing key, or deletes the USERS stream and restores it from account's
// outbox. The black-box suite that runs against any system, the local stack or docker-compose,
// is e2e/blackbox; e2e/compose checks the compose files.
package e2e
