// Package compose holds the tests that keep docker-compose.yml, deploy/compose.cluster.yml, the
// Dockerfile (one for every service, which its build argument SERVICE names), .dockerignore and
// the Postgres init script correct on machines without Docker: they parse the files and check them
// against the code (the environment variables each service reads, its port and database, the
// stream configuration) and build each binary the way the Dockerfile does.
package compose
