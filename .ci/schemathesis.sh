#!/usr/bin/env bash
# Runs schemathesis against the JSON routes of a real keymint: the binary cargo built (target/debug/keymint),
# on a free port, with a temporary data directory and a known admin token. Checks that no request gets a 5xx and
# that every answer matches /openapi.json. Bounded: a few examples per route, the whole step under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/debug/keymint
[ -x "$BIN" ] || { echo "$BIN is missing: run cargo build (or cargo test) first" >&2; exit 1; }
[ -x .ci/.venv/bin/schemathesis ] || python3 -m venv .ci/.venv
.ci/.venv/bin/python -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5

DATA=$(mktemp -d)
TOKEN="km_admin_schemathesis_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
LOG="$DATA/keymint.log"

KEYMINT_ADMIN_TOKEN="$TOKEN" KEYMINT_LISTEN="127.0.0.1:$PORT" KEYMINT_DATA_DIR="$DATA" \
  KEYMINT_KEY_POOL_SIZE=2 KEYMINT_KEY_POOL_WORKERS=1 "$BIN" >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

for _ in $(seq 1 60); do
  python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$PORT/openapi.json" 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG" >&2; echo "keymint did not start" >&2; exit 1; }
  sleep 0.5
done

status=0
timeout 300 .ci/.venv/bin/schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples 20 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- keymint's log" >&2
  tail -n 100 "$LOG" >&2
fi
exit "$status"
