#!/usr/bin/env bash
# Starts account, blog and shop against the local Postgres and NATS, with a development admin.
# Creates the databases account, blog and shop if they are missing. Ctrl-C stops everything.
#
# Environment (all optional):
#   PG_URL     server to create the databases on  (postgres://postgres@127.0.0.1:5432)
#   NATS_URL   NATS with JetStream                (nats://127.0.0.1:4222)
#   ADMIN_EMAIL / ADMIN_PASSWORD   the bootstrap admin (admin@example.com / admin-password)
#   SIGNING_KEY_SECRETS            seals account's signing keys (a development default; set a real
#                                  secret of at least 32 characters anywhere else)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
ADMIN_EMAIL=${ADMIN_EMAIL:-admin@example.com}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-admin-password}
SIGNING_KEY_SECRETS=${SIGNING_KEY_SECRETS:-development-only-signing-key-secret-change-me}
LOGS=tmp/logs
mkdir -p "$LOGS"

for db in account blog shop; do
  if ! psql "$PG_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql "$PG_URL/postgres" -qc "CREATE DATABASE $db"
    echo "created database $db"
  fi
done

pids=()
stop() {
  local code=${1:-0}
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo "stopping..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "stopped"
  exit "$code"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

start() { # name port
  local name=$1 port=$2
  env HTTP_ADDR="127.0.0.1:$port" \
      DATABASE_URL="$PG_URL/$name?sslmode=disable" \
      NATS_URL="$NATS_URL" \
      BOOTSTRAP_ADMIN_EMAIL="$ADMIN_EMAIL" BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
      SIGNING_KEY_SECRETS="$SIGNING_KEY_SECRETS" \
      "bin/$name" >"$LOGS/$name.log" 2>&1 &
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

start account 8081
wait_ready account 8081  # account publishes the public keys that blog and shop wait for
start blog 8082
start shop 8083
wait_ready blog 8082
wait_ready shop 8083

cat <<INFO
The system is running (logs in $LOGS/):
  account  http://127.0.0.1:8081
  blog     http://127.0.0.1:8082
  shop     http://127.0.0.1:8083
Admin: $ADMIN_EMAIL / $ADMIN_PASSWORD
Press Ctrl-C to stop.
INFO

# Exit when any service exits, or on Ctrl-C.
wait -n "${pids[@]}" || true
echo "a service exited; see $LOGS/" >&2
exit 1
