#!/usr/bin/env bash
# Runs the walk-through of README.md as a user would: against a keymint started fresh with its default settings
# (127.0.0.1:50051, data in ./data of its working directory), every ```sh block in order in ONE bash shell
# (set -euo pipefail), so variables, functions and the working directory carry from block to block.
#
# Which blocks: every ```sh block of README.md, except one whose opening fence directly follows a line
# `<!-- not in walkthrough -->`. ```python blocks run with $KEYMINT_TEST_PYTHON (in the shell's working directory
# at that point) when it is set, and are skipped otherwise. Other blocks are not run.
#
# Needs: the binary cargo built (target/debug/keymint, or under $CARGO_TARGET_DIR; KEYMINT_BIN overrides), `npm ci`
# done in the repository root (buf), jq, curl, openssl, and nothing else listening on 127.0.0.1:50051. The
# temporary directory is made under .ci/ so that `npx @bufbuild/buf` finds the repository's package.json, as it
# does for a user who runs the walk-through from the repository.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
README="$REPO/README.md"
ADDR=127.0.0.1:50051
MARKER='<!-- not in walkthrough -->'

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$REPO/$target" ;; esac
BIN=${KEYMINT_BIN:-$target/debug/keymint}

fail() { printf '\nwalkthrough: %s\n' "$*" >&2; exit 1; }
[ -x "$BIN" ] || fail "$BIN is missing: run cargo build first"
for tool in jq curl openssl npx; do command -v "$tool" >/dev/null || fail "$tool is not installed (README: prerequisites)"; done
[ -x "$REPO/node_modules/.bin/buf" ] || fail "buf is missing: run npm ci in $REPO"
if curl -s -o /dev/null --max-time 2 "http://$ADDR/live"; then
  fail "something already answers on $ADDR; the walk-through needs that port (stop it first)"
fi

started=$(date +%s)
WORK=$(mktemp -d "$REPO/.ci/.walkthrough-XXXXXX")
BLOCKS="$WORK.blocks"
mkdir -m 700 "$BLOCKS"
SERVER=""
ok=""

cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  if [ -n "$ok" ]; then
    rm -rf "$WORK" "$BLOCKS"
  else
    printf '\nwalkthrough: kept %s (server.log, data/, walkthrough/) for a look\n' "$WORK" >&2
    rm -rf "$BLOCKS"
  fi
}
trap cleanup EXIT

# The blocks, in order: NNN.sh / NNN.py, and an index of "NNN <kind> <line of the fence in README.md>".
awk -v dir="$BLOCKS" -v marker="$MARKER" '
  BEGIN { n = 0; inblock = 0; skip = 0 }
  {
    line = $0
    if (!inblock && line ~ /^```/) {
      lang = substr(line, 4); sub(/[ \t].*$/, "", lang)
      inblock = 1; run = 0
      if ((lang == "sh" || lang == "python") && prev != marker) {
        run = 1; n++
        kind = (lang == "sh") ? "sh" : "py"
        file = sprintf("%s/%03d.%s", dir, n, kind)
        printf "" > file
        printf "%03d %s %d\n", n, kind, NR >> (dir "/index")
      }
    } else if (inblock && line ~ /^```[ \t]*$/) {
      inblock = 0
      if (run) close(file)
    } else if (inblock && run) {
      print line >> file
    }
    prev = line
  }
' "$README"
[ -s "$BLOCKS/index" ] || fail "no walk-through blocks found in README.md"

# A fresh keymint with its default settings (no KEYMINT_* variable of the caller's, the tests' own aside).
unset_args=()
while IFS= read -r name; do
  case $name in KEYMINT_TEST_*) ;; KEYMINT_*) unset_args+=(-u "$name") ;; esac
done < <(compgen -e)
cd "$WORK"
env ${unset_args[@]+"${unset_args[@]}"} "$BIN" >server.log 2>&1 &
SERVER=$!
printf 'walkthrough: keymint (pid %s) in %s, waiting for http://%s/ready\n' "$SERVER" "$WORK" "$ADDR"
for _ in $(seq 1 300); do
  curl -sf -o /dev/null --max-time 2 "http://$ADDR/ready" && break
  kill -0 "$SERVER" 2>/dev/null || { cat server.log >&2; fail "keymint exited before it was ready"; }
  sleep 0.2
done
curl -sf -o /dev/null "http://$ADDR/ready" || { tail -n 30 server.log >&2; fail "keymint was not ready within 60 s"; }

# One bash for every block: a driver that sources the shell blocks in order.
driver="$BLOCKS/driver.sh"
{
  echo 'set -euo pipefail'
  echo "__walkthrough_show() { printf '\\n\\033[1m== README.md:%s (%s block %s)\\033[0m\\n' \"\$3\" \"\$2\" \"\$1\"; cat \"\$4\"; printf -- '--\\n'; echo \"\$1\" > '$BLOCKS/current'; }"
  while read -r n kind line; do
    file="$BLOCKS/$n.$kind"
    if [ "$kind" = sh ]; then
      printf '__walkthrough_show %s shell %s %q\nsource %q\n' "$n" "$line" "$file" "$file"
    else
      printf 'if [ -n "${KEYMINT_TEST_PYTHON:-}" ]; then __walkthrough_show %s python %s %q; "$KEYMINT_TEST_PYTHON" %q; ' \
        "$n" "$line" "$file" "$file"
      printf 'else printf "\\n== README.md:%s (python block %s): skipped, KEYMINT_TEST_PYTHON is not set\\n"; fi\n' \
        "$line" "$n"
    fi
  done < "$BLOCKS/index"
  echo "echo done > '$BLOCKS/current'"
} > "$driver"

status=0
bash "$driver" || status=$?
current=$(cat "$BLOCKS/current" 2>/dev/null || echo none)
if [ "$status" -ne 0 ] || [ "$current" != done ]; then
  {
    printf '\n\033[1;31mwalkthrough FAILED (exit %s)' "$status"
    if [ "$current" != none ] && [ "$current" != done ]; then
      read -r _ kind line < <(grep "^$current " "$BLOCKS/index")
      printf ' in the %s block at README.md:%s:\033[0m\n' "$([ "$kind" = sh ] && echo shell || echo python)" "$line"
      cat "$BLOCKS/$current.$kind"
    else
      printf '\033[0m\n'
    fi
    printf -- '-- the end of server.log:\n'
    tail -n 12 "$WORK/server.log"
  } >&2
  exit 1
fi
ok=1
printf '\nwalkthrough: %s blocks of README.md passed in %s s\n' "$(wc -l < "$BLOCKS/index")" "$(( $(date +%s) - started ))"
