#!/usr/bin/env bash
# A blob commit (quota check + link in one write transaction) into a namespace with 200,000 blob
# links and a quota: summing the namespace (before the usage counters) vs reading its counter.
# The rows are generated directly in SQLite by the test. Prints medians of 20 commits.
# Usage: bench/quota-commit.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test "$@" --lib meta::quota::tests::quota_commit_in_a_large_namespace -- --ignored --nocapture 2>&1 |
  grep -E "filled|commit with"
