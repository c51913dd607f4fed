#!/usr/bin/env bash
# Starts the system on this machine: a NATS server of its own (bin/nats-server, built by `make
# build` from the Go module github.com/nats-io/nats-server/v2, configured by deploy/nats/dev.conf
# and the project's auth.conf, its store under tmp/nats), then account, blog and shop against the
# local Postgres, with a development admin. Creates the databases account, blog and shop if they
# are missing. Ctrl-C stops everything, the services first.
#
# Each service connects to NATS with its own identity (deploy/nats/auth.conf). The environment of
# each service and of the NATS operator is written to tmp/env/<name>.env, for the operator
# commands: env $(cat tmp/env/blog.env) bin/blog replica status
#
# Environment (all optional; every password here is a development default, to be replaced by real
# secrets anywhere but a laptop — docs/security.md):
#   PG_URL     server to create the databases on  (postgres://postgres@127.0.0.1:5432)
#   NATS_PORT  the port of the NATS server         (4223)
#   ADMIN_EMAIL / ADMIN_PASSWORD   the bootstrap admin (admin@example.com / admin-password)
#   SIGNING_KEY_SECRETS            seals account's signing keys
#   NATS_ACCOUNT_PASSWORD, NATS_BLOG_PASSWORD, NATS_SHOP_PASSWORD, NATS_OPS_PASSWORD
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
NATS_PORT=${NATS_PORT:-4223}
ADMIN_EMAIL=${ADMIN_EMAIL:-admin@example.com}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-admin-password}
SIGNING_KEY_SECRETS=${SIGNING_KEY_SECRETS:-development-only-signing-key-secret-change-me}
export NATS_ACCOUNT_PASSWORD=${NATS_ACCOUNT_PASSWORD:-account-nats-dev-password}
export NATS_BLOG_PASSWORD=${NATS_BLOG_PASSWORD:-blog-nats-dev-password}
export NATS_SHOP_PASSWORD=${NATS_SHOP_PASSWORD:-shop-nats-dev-password}
export NATS_OPS_PASSWORD=${NATS_OPS_PASSWORD:-ops-nats-dev-password}
LOGS=tmp/logs
ENVS=tmp/env
mkdir -p "$LOGS" "$ENVS" tmp/nats

for db in account blog shop; do
  if ! psql "$PG_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql "$PG_URL/postgres" -qc "CREATE DATABASE $db"
    echo "created database $db"
  fi
done

pids=()    # the services, stopped first
nats_pid=""
stop() {
  local code=${1:-0}
  trap - INT TERM EXIT
  echo "stopping..."
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ -n "$nats_pid" ]; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  echo "stopped"
  exit "$code"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

nats_url() { # identity password
  echo "nats://$1:$2@127.0.0.1:$NATS_PORT"
}

bin/nats-server -c deploy/nats/dev.conf -p "$NATS_PORT" -sd "$PWD/tmp/nats" >"$LOGS/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then break; fi
  if ! kill -0 "$nats_pid" 2>/dev/null; then
    echo "nats-server exited; its log ($LOGS/nats.log):" >&2
    tail -n 20 "$LOGS/nats.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "NATS_URL=$(nats_url ops "$NATS_OPS_PASSWORD")" >"$ENVS/ops.env"

# The environment of each service, as KEY=value lines (no value holds a space).
cat >"$ENVS/account.env" <<ENV
HTTP_ADDR=127.0.0.1:8081
DATABASE_URL=$PG_URL/account?sslmode=disable
NATS_URL=$(nats_url account "$NATS_ACCOUNT_PASSWORD")
BOOTSTRAP_ADMIN_EMAIL=$ADMIN_EMAIL
BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD
SIGNING_KEY_SECRETS=$SIGNING_KEY_SECRETS
ENV
for svc in blog shop; do
  port=8082
  pw=$NATS_BLOG_PASSWORD
  if [ "$svc" = shop ]; then port=8083 pw=$NATS_SHOP_PASSWORD; fi
  cat >"$ENVS/$svc.env" <<ENV
HTTP_ADDR=127.0.0.1:$port
DATABASE_URL=$PG_URL/$svc?sslmode=disable
NATS_URL=$(nats_url "$svc" "$pw")
ENV
done
chmod 600 "$ENVS"/*.env

start() { # name
  local name=$1
  # shellcheck disable=SC2046 # one KEY=value word per line
  env $(cat "$ENVS/$name.env") "bin/$name" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() { # name port
  local name=$1 port=$2
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$name did not become ready within 30 s; its log ($LOGS/$name.log):" >&2
  tail -n 20 "$LOGS/$name.log" >&2
  exit 1
}

# All three at once: blog and shop wait (unready) until account has created the stream and
# published its keys.
start account
start blog
start shop
wait_ready account 8081
wait_ready blog 8082
wait_ready shop 8083

cat <<INFO
The system is running (logs in $LOGS/, each service's environment in $ENVS/):
  account  http://127.0.0.1:8081
  blog     http://127.0.0.1:8082
  shop     http://127.0.0.1:8083
  NATS     nats://127.0.0.1:$NATS_PORT (operator: ops / $NATS_OPS_PASSWORD)
Admin: $ADMIN_EMAIL / $ADMIN_PASSWORD
Operator commands: env \$(cat $ENVS/blog.env) bin/blog replica status
Press Ctrl-C to stop.
INFO

# Exit when any process exits, or on Ctrl-C.
wait -n "${pids[@]}" "$nats_pid" || true
echo "a process exited; see $LOGS/" >&2
exit 1
