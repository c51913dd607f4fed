// Package e2e holds black-box tests of the whole system: the account, blog and shop binaries
// built from this repository, run as processes and driven only over HTTP (and NATS, to play a
// broker outage).
package e2e
