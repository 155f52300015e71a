#!/usr/bin/env bash
# Online GC benchmark (not a test): prune time and peak RSS on a synthetic store of N images
# (5 blobs each), unchanged and after 1% changed, for two store sizes so that memory can be
# compared across sizes. Results go to stdout as JSON lines; BENCHMARKS.md has the figures.
#
#   bench/prune.sh [IMAGES...]      default: 10000 1000
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --example prune_bench
bin="${CARGO_TARGET_DIR:-target}/debug/examples/prune_bench"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 1000)
for n in "${sizes[@]}"; do
    dir=$(mktemp -d /tmp/prune-bench.XXXXXX)
    "$bin" setup "$dir" "$n"
    echo "{\"images\": $n, \"phase\": \"unchanged\", \"result\": $("$bin" prune "$dir")}"
    "$bin" change "$dir" 1
    echo "{\"images\": $n, \"phase\": \"1% changed\", \"result\": $("$bin" prune "$dir")}"
    echo "{\"images\": $n, \"phase\": \"unchanged again\", \"result\": $("$bin" prune "$dir")}"
    rm -rf "$dir"
done
