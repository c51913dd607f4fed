#!/usr/bin/env bash
# Checks that every module of go.work stands alone, as `make test` requires before the tests run:
# outside the workspace (GOWORK=off) its go.mod and go.sum are tidy, it builds, and it vets (which
# compiles its tests too); and it selects the same version of each dependency as the workspace, so
# that what the workspace tests is what each module builds. A module that uses events requires it
# at v0.0.0-00010101000000-000000000000 with `replace github.com/authmesh/events => ../events`.
#
# To fix a failure: `go work sync`, then `GOWORK=off go mod tidy` in each module.
#
# Usage: scripts/modules-check.sh MODULE...   (GO names the go command; default go)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 MODULE..." >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The workspace's selection: one "path version" line per module it depends on.
$GO list -m -f '{{if not .Main}}{{.Path}} {{.Version}}{{end}}' all | sed '/^$/d' | sort >"$tmp/workspace"

failed=0
fail() { # the module $m fails, for the reason $1
  echo "module $m: $1 (fix: go work sync, then cd $m && GOWORK=off go mod tidy)" >&2
  failed=1
}
for m in "$@"; do
  if ! (cd "$m" && GOWORK=off $GO mod tidy -diff); then
    fail "go mod tidy fails, or would change go.mod or go.sum"
    continue
  fi
  if ! (cd "$m" && GOWORK=off $GO build ./... && GOWORK=off $GO vet ./...); then
    fail "does not build or vet outside the workspace"
    continue
  fi
  (cd "$m" && GOWORK=off $GO list -m -f '{{if not .Main}}{{.Path}} {{.Version}}{{end}}' all) |
    sed '/^$/d' | sort >"$tmp/$m"
  # Lines of the module's selection whose path the workspace selects at another version.
  drift=$(awk 'NR == FNR { ws[$1] = $2; next } ($1 in ws) && ws[$1] != $2 { print "  " $1 " " $2 " (workspace: " ws[$1] ")" }' \
    "$tmp/workspace" "$tmp/$m")
  if [ -n "$drift" ]; then
    fail "selects other versions than the workspace:
$drift"
  fi
done
exit "$failed"
