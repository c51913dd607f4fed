# The image of one service, chosen by the build argument SERVICE: account, blog or shop. Build from
# the repository root, which holds the go.work workspace:
#
#   docker build --build-arg SERVICE=account -t authmesh/account .     (or: docker compose build account)
#
# Each service is configured only through the environment (docs/contract.md); in a container
# HTTP_ADDR must listen on all interfaces, such as 0.0.0.0:8081 for account (8082 blog, 8083 shop;
# HTTP_ADDR, not the image, decides the port, so the image exposes none). Operator commands run
# with the same image, under the service's name: `docker compose exec account account outbox
# status`, `docker compose exec blog blog replica status`.

FROM golang:1.26 AS build
ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=account, blog or shop" >&2; exit 1; }
WORKDIR /src
# Module files first, so that the download layer is rebuilt only when a go.mod or go.sum changes.
# Every module of go.work must be present, e2e included, for the workspace to load.
COPY go.work go.work.sum ./
COPY events/go.mod events/go.sum events/
COPY account/go.mod account/go.sum account/
COPY blog/go.mod blog/go.sum blog/
COPY shop/go.mod shop/go.sum shop/
COPY e2e/go.mod e2e/go.sum e2e/
RUN go mod download
COPY . .
# The Makefile's build flags: a static binary (no cgo), no local paths, no symbol tables.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/$SERVICE ./$SERVICE/cmd/$SERVICE

# Alpine rather than distroless: its busybox wget serves the compose health check on /readyz.
FROM alpine:3.22
ARG SERVICE
RUN adduser -D -H -u 10001 -s /sbin/nologin authmesh
COPY --from=build /out/${SERVICE} /usr/local/bin/${SERVICE}
# ENTRYPOINT cannot name a build argument, so a fixed name links to the service's binary.
RUN ln -s ${SERVICE} /usr/local/bin/service
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/service"]
