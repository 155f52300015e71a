#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60), one after another,
# each as a single libFuzzer process (one core). See FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: all, in the order below)
#   FUZZ_SANITIZER  address (default) or none (faster; the parsers are safe Rust, the sanitizer
#                   mostly guards the C zstd and zlib-rs code under the layer target)
#   FUZZ_RUNS       stop a target after this many executions (default: only the time limit)
#
# The exact command per target is, with stable rustc 1.95 (no nightly needed):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s address <target> \
#       fuzz/corpus-work/<target> fuzz/corpus/<target> fuzz/regressions/<target> -- \
#       -max_total_time=<SECONDS> -timeout=10 -rss_limit_mb=2048 -artifact_prefix=fuzz/artifacts/<target>/
# RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes (sanitizer, coverage
# instrumentation). New inputs go to fuzz/corpus-work/ (ignored by git); a crash is written to
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, fix the bug, and the replay
# tests (tests/fuzz_replay.rs, crates/oci2sif/tests/fuzz_replay.rs) keep it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
sanitizer=${FUZZ_SANITIZER:-address}
targets=${FUZZ_TARGETS:-"manifest names range query jwt unmunge sif layer"}
runs=()
if [[ -n "${FUZZ_RUNS:-}" ]]; then
    runs=("-runs=$FUZZ_RUNS")
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

cargo fuzz build -a -s "$sanitizer"
for t in $targets; do
    mkdir -p "fuzz/corpus-work/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    echo "=== $t: ${seconds}s"
    # No -jobs: libFuzzer's default is one in-process fuzzer; -jobs=1 would do the same in a
    # child process and move its output to fuzz-0.log.
    cargo fuzz run -a -s "$sanitizer" "$t" \
        "fuzz/corpus-work/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
        -max_total_time="$seconds" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/"
done
