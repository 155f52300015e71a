#!/usr/bin/env bash
# Regenerates the README's screenshots of the web UI (docs/screenshots/*.png): runs the
# headless-Chromium test, which writes them where HPCR_SCREENSHOTS says. Run as root on Debian 12
# with the test dependencies installed (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/screenshots
HPCR_SCREENSHOTS="$PWD/docs/screenshots" \
  cargo test --test integration ui_browser -- --nocapture
ls -l docs/screenshots
