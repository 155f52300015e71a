#!/usr/bin/env bash
# Installs the real tools the test suite drives (Debian 12). Idempotent; needs root.
set -euo pipefail
packages=(
  docker.io skopeo umoci busybox-static buildah podman siftool squashfs-tools squashfs-tools-ng curl
  munge slurm-wlm docker-registry python3-pip libssl-dev pkg-config openssl
  sqlite3 prometheus  # promtool for the metrics and alert-rule tests
  wrk apache2-utils libmunge-dev  # bench/registry.py (wrk, htpasswd), MUNGE through libmunge
  rsync  # the fast-storage batch scripts (src/jobscript) stage files with it
  chromium chromium-driver python3-selenium  # the web UI's headless-browser tests (tests/browser)
  python3-aiosmtpd  # the real SMTP server of tests/integration/notifications.rs
  python3-venv  # the venv of ansible-core and ansible-lint (below)
  iproute2 util-linux  # the multi-node Slurm test cluster (ip netns, nsenter, unshare)
  nginx  # bench/sif-serve.sh and bench/sif-herd.sh serve the same SIF beside hpc-registry
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

# Ansible for the roles test (tests/integration/operations/ansible.rs): ansible-core and
# ansible-lint from PyPI, pinned, in their own venv (Debian's Python; the test finds it here).
ANSIBLE_VENV=${HPC_REGISTRY_TEST_ANSIBLE_VENV:-/opt/hpc-registry-test/ansible}
ANSIBLE_PINS=(ansible-core==2.19.14 ansible-lint==25.12.2)
if ! "$ANSIBLE_VENV/bin/python" -m pip freeze 2>/dev/null | grep -qxF -e "${ANSIBLE_PINS[0]}" \
  || ! "$ANSIBLE_VENV/bin/python" -m pip freeze 2>/dev/null | grep -qxF -e "${ANSIBLE_PINS[1]}"; then
  echo "installing ${ANSIBLE_PINS[*]} into $ANSIBLE_VENV"
  rm -rf "$ANSIBLE_VENV"
  /usr/bin/python3 -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${ANSIBLE_PINS[@]}"
fi
