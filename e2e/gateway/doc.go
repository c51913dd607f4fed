// Package gateway tests the gateway of docker-compose.yml's gateway profile for real: Debian's
// nginx (any nginx on the PATH) runs deploy/nginx/nginx.conf on the loopback, with only its
// listen port and the services' addresses changed, in front of the system of e2e/stack (account
// trusting the loopback as its proxy, as compose has it trust the gateway's address). Through it
// the tests check the routing, the gateway's rate limits (429) and body limit (413), its own
// problem answers, and that account's login throttling sees the client's real address, whatever
// X-Forwarded-For the client sends. Without nginx the tests skip, unless CI is set.
package gateway
