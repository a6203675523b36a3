#!/usr/bin/env bash
# Fuzzing (README: "Fuzzing"): builds the cargo-fuzz targets of fuzz/ and runs each for a bounded time on a
# temporary copy of its committed seed corpus, printing libFuzzer's execution counts. Fails on a crash, a
# broken property (a panic), a slow input (-timeout) or a build error. KEYMINT_FUZZ_SECONDS: seconds per target.
#
# Stable Rust, no nightly: with `--sanitizer none` cargo-fuzz passes only stable codegen flags (SanitizerCoverage
# instrumentation, `--cfg fuzzing`, debug assertions and overflow checks). AddressSanitizer would need nightly's
# -Zsanitizer, and keymint forbids unsafe code, so what it would add is checks on the C of aws-lc-sys.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${KEYMINT_FUZZ_SECONDS:-30}"
cargo_fuzz_version=0.13.2
root="$PWD/.ci/cargo-bin"
if ! "$root/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$root"
fi
export PATH="$root/bin:$PATH"
fuzz=(cargo fuzz)
cargo fmt --check --manifest-path fuzz/Cargo.toml
# cargo-fuzz has no --locked: fail here if fuzz/Cargo.lock does not match, instead of letting the build update it.
cargo fetch --locked --target "$(rustc -vV | sed -n "s/^host: //p")" --manifest-path fuzz/Cargo.toml
options=(--sanitizer none)

started=$(date +%s)
"${fuzz[@]}" build "${options[@]}"
echo "fuzz build (release, instrumented, every dependency): $(($(date +%s) - started)) s"

# libFuzzer adds what it finds to the corpus it is given: a temporary copy keeps the committed seeds as they are.
# The targets run two at a time, one a core (the machine has two), straight from the binaries cargo-fuzz built.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin=fuzz/target/x86_64-unknown-linux-gnu/release
run_one() {
  local target="$1"
  mkdir -p "$work/$target" fuzz/artifacts/"$target"
  cp fuzz/corpus/"$target"/* "$work/$target"/
  if "$bin/$target" -artifact_prefix=fuzz/artifacts/"$target"/ -max_total_time="$seconds" -timeout=10 \
    -print_final_stats=1 "$work/$target" >"$work/$target.log" 2>&1; then
    touch "$work/$target.passed"
  fi
}
targets="$("${fuzz[@]}" list)"
running=0
for target in $targets; do
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge 2 ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=0
for target in $targets; do
  log="$work/$target.log"
  if [ -e "$work/$target.passed" ]; then
    # The last status line: "#<total execs> DONE cov: … exec/s: <rate> …".
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1)"
    execs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$done_line")"
    rate="$(sed -E 's/.*exec\/s: ([0-9]+).*/\1/' <<<"$done_line")"
    printf '%-16s %10s execs in %ss (%s exec/s), corpus %s -> %s inputs\n' "$target" "$execs" "$seconds" "$rate" \
      "$(ls fuzz/corpus/"$target" | wc -l)" "$(ls "$work/$target" | wc -l)"
  else
    failed=1
    echo "fuzz target $target FAILED; what libFuzzer said:"
    said="$({ grep -E -A1 "panicked at" "$log" | head -n 2
      grep -E "^(  left|  right)|ERROR: libFuzzer|Test unit written|^Base64:" "$log"; } | cut -c1-400)"
    if [ -n "$said" ]; then echo "$said"; else tail -n 40 "$log"; fi
    echo "reproduce: cargo fuzz run --sanitizer none $target fuzz/artifacts/$target/<file>"
  fi
done
exit "$failed"
