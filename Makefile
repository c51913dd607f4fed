# The whole project from the repository root. `make run` starts the system, `make test` runs
# every test (with gofmt and go vet), `make bench` measures it and writes docs/performance.md.
# See README.md.

MODULES  := events account blog shop e2e
PKGS     := $(foreach m,$(MODULES),./$(m)/...)
GO       ?= go
# Build flags shared with the Dockerfile: static binaries, no VCS stamping.
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'

.PHONY: all build run test fmt-check modules-check vet unit bench-smoke e2e bench reliability fuzz compose-check clean

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
# the local Postgres (each test makes its own database) and private embedded NATS servers, and the
# report benchmarks once, briefly, so that they cannot rot.
test: fmt-check modules-check vet unit bench-smoke

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Each module outside the workspace (GOWORK=off): tidy, builds, vets (tests included), and selects
# the workspace's versions. See scripts/modules-check.sh.
modules-check:
	GO=$(GO) ./scripts/modules-check.sh $(MODULES)

# The bench build's files of blog and shop (the benchmarks' baselines) too.
vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags bench ./blog/cmd/blog ./shop/cmd/shop

unit:
	$(GO) test -count=1 -timeout 9m $(PKGS)

# The black-box suite against a system it starts itself (the binaries built from this tree, a
# private NATS server, fresh databases) and stops; never the shared NATS stream. To test a running
# system instead, set ACCOUNT_URL (see README.md).
e2e:
	$(GO) test -count=1 -timeout 5m -v ./e2e/blackbox/

# The packages that hold report benchmarks (BenchmarkReport*: each measures at the scale that
# BENCH_SCALE names and saves its section of docs/performance.md into BENCH_OUT; events/benchfig).
BENCH_PKGS ?= ./e2e/bench/authcost ./e2e/bench/httpload ./e2e/bench/propagation ./events/replica ./events/outbox
# One package at a time (-p 1), so that no benchmark measures while another loads the machine.
BENCH_RUN := $(GO) test -p 1 -count=1 -run '^$$' -bench Report -benchtime 1x

# Figures, never pass/fail: every report benchmark at full scale (a few minutes; real Postgres,
# embedded NATS, the services as processes), then docs/performance.md and its plots in
# docs/performance/ rendered from what they saved (e2e/cmd/perfreport). Run it on a quiet machine.
bench: build
	rm -rf tmp/bench
	BENCH_SCALE=full BENCH_OUT=$(CURDIR)/tmp/bench $(BENCH_RUN) -timeout 30m $(BENCH_PKGS)
	$(GO) run ./e2e/cmd/perfreport -in tmp/bench -out docs

# The same benchmarks at smoke scale, writing nothing: seconds each, part of `make test`.
bench-smoke:
	BENCH_SCALE= BENCH_OUT= $(BENCH_RUN) -timeout 5m $(BENCH_PKGS)

# The reliability suite at full scale: every check of e2e/reliability starts the system as
# processes on private nats-server processes (one, or three clustered) and fresh databases, loads
# it, injects its fault (SIGKILLs, outages, cut connections, duplicates, poison), quiesces, and
# judges the history with e2e/reliability/checker; then docs/reliability.md's table is written from
# the rows the checks saved, passed or failed (e2e/cmd/relreport). About 7 minutes; `make test`
# runs the fast checks at smoke scale. The log of the run is kept in tmp/reliability.log.
reliability:
	rm -rf tmp/reliability && mkdir -p tmp/reliability
	@start=$$(date +%s); \
	( RELIABILITY_SCALE=full RELIABILITY_OUT=$(CURDIR)/tmp/reliability $(GO) test -count=1 -timeout 25m -v ./e2e/reliability/; \
	  echo $$? > tmp/reliability/rc ) 2>&1 | tee tmp/reliability.log | grep --line-buffered -E '^(=== RUN|--- |ok|FAIL|PASS|panic)'; \
	rc=$$(cat tmp/reliability/rc); \
	$(GO) run ./e2e/cmd/relreport -in tmp/reliability -doc docs/reliability.md -took $$(( $$(date +%s) - start ))s && \
	echo "docs/reliability.md written; the suite exited $$rc" && exit $$rc

# Every Go fuzz target (event parsing, token verification, the request decoders) for FUZZTIME each;
# `make test` runs their seed corpora already. See scripts/fuzz.sh.
FUZZTIME ?= 30s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# Validate the compose files (Debian's docker-compose package; no Docker engine needed).
compose-check:
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml --profile gateway config -q
	docker-compose -f docker-compose.yml --profile observability config -q
	docker-compose -f docker-compose.yml -f deploy/compose.cluster.yml config -q

clean:
	rm -rf bin tmp
