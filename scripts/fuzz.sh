#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for FUZZTIME each (default 30s), one after the other:
# the targets are found by their names (func FuzzXxx in a _test.go file). `make test` already runs
# each target's seed corpus as a test; this explores beyond it. A failing input is written by
# `go test` under the package's testdata/fuzz/<target>/, where it then stays as a seed (commit it
# with the fix).
#
# Usage: scripts/fuzz.sh   (FUZZTIME=2m scripts/fuzz.sh for longer runs; GO names the go command)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}

status=0
while IFS=: read -r file target; do
  pkg=$(dirname "$file") # ./events/auth
  echo "== $target ($pkg, $FUZZTIME)"
  if ! "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
    status=1
  fi
done < <(grep -rhoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' --with-filename . \
  | grep -v '^./tmp/' | sed -E 's/func //' | sort)
exit $status
