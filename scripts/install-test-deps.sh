#!/usr/bin/env bash
# Installs the real tools the test suite drives (Debian 12). Idempotent; needs root.
set -euo pipefail
packages=(
  docker.io skopeo umoci busybox-static buildah podman siftool squashfs-tools squashfs-tools-ng curl
  munge slurm-wlm docker-registry python3-pip libssl-dev pkg-config openssl
  sqlite3 prometheus  # promtool for the metrics and alert-rule tests
  wrk apache2-utils libmunge-dev  # bench/registry.py (wrk, htpasswd), MUNGE through libmunge
  chromium chromium-driver python3-selenium  # the web UI's headless-browser tests (tests/browser)
  rsync  # the fast-storage batch scripts (src/jobscript) stage files with it
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
