#!/usr/bin/env bash
# The full test suite: installs the real tools it uses, then checks formatting and lints and runs
# every unit and integration test. Run as root on Debian 12 (the tests start dockerd, mount SIFs
# and run munged). This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
