# The whole project from the repository root. `make run` starts the system, `make test` runs
# every test (with gofmt and go vet). See README.md.

MODULES  := events account blog shop e2e
PKGS     := $(foreach m,$(MODULES),./$(m)/...)
GO       ?= go
# Build flags shared with the Dockerfile: static binaries, no VCS stamping.
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'

.PHONY: all build run test fmt-check modules-check vet unit e2e bench compose-check clean

all: build

# The three services, and the NATS server `make run` starts: built from the Go module the tests
# embed (github.com/nats-io/nats-server/v2, at the version events/go.mod requires), so that a new
# machine needs only Go and Postgres.
build:
	$(BUILD) -o bin/ ./account/cmd/account ./blog/cmd/blog ./shop/cmd/shop
	$(BUILD) -o bin/nats-server github.com/nats-io/nats-server/v2

# Start a NATS server of the project's own (deploy/nats/dev.conf and deploy/nats/auth.conf, on
# 127.0.0.1:4223, its store in tmp/nats), then account, blog and shop against the local Postgres;
# Ctrl-C stops them all.
run: build
	./scripts/run.sh

# Every test: formatting, the modules standing alone, vet, then the tests of every module against
# the local Postgres (each test makes its own database) and private embedded NATS servers.
test: fmt-check modules-check vet unit

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Each module outside the workspace (GOWORK=off): tidy, builds, vets (tests included), and selects
# the workspace's versions. See scripts/modules-check.sh.
modules-check:
	GO=$(GO) ./scripts/modules-check.sh $(MODULES)

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -count=1 -timeout 9m $(PKGS)

# The black-box suite against a system it starts itself (the binaries built from this tree, a
# private NATS server, fresh databases) and stops; never the shared NATS stream. To test a running
# system instead, set ACCOUNT_URL (see README.md).
e2e:
	$(GO) test -count=1 -timeout 5m -v ./e2e/blackbox/

# Benchmarks (figures, never pass/fail): a full replica rebuild of BENCH_EVENTS events published
# to an embedded NATS server (docs/operations.md records the figure).
BENCH_EVENTS ?= 1000000
bench:
	REPLICA_BENCH_EVENTS=$(BENCH_EVENTS) $(GO) test ./events/replica -run '^$$' -bench Rebuild -benchtime 1x -timeout 20m

# Validate the compose files (Debian's docker-compose package; no Docker engine needed).
compose-check:
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml -f deploy/compose.cluster.yml config -q

clean:
	rm -rf bin tmp
