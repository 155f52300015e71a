#!/usr/bin/env bash
# A compute node's cold fetch: `hpc-registry fetch` of a ready SIF into an empty node cache
# (download, hash, fsync, publish), by two client binaries in turn against one server, REPS
# times each, interleaved; the server's copy stays in its page cache, as on a registry that
# serves many nodes. The image is bench/images.sh's multilayer (a 211 MB SIF at zstd-3).
#
#   sudo bash bench/fetch-cold.sh BASE_BIN NEW_BIN [REPS]
#
# BENCH_CACHE (default /var/tmp/hpc-registry-bench) holds the OCI layout bench/sif-build.sh
# makes. The server is NEW_BIN (`serve --dev`); each fetch starts after a `sync`, so that no
# earlier write is still in flight. Prints one line per fetch: the binary, wall seconds, load.
set -euo pipefail
BASE=${1:?usage: fetch-cold.sh BASE_BIN NEW_BIN [REPS]}
NEW=${2:?usage: fetch-cold.sh BASE_BIN NEW_BIN [REPS]}
REPS=${3:-5}
CACHE=${BENCH_CACHE:-/var/tmp/hpc-registry-bench}
[ -d "$CACHE/oci" ] || { echo "no $CACHE/oci: run bench/sif-build.sh once (it builds the images)" >&2; exit 1; }
d=$(mktemp -d /var/tmp/fetch-cold.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NEW" serve --dev --data-dir "$d/data" --listen "127.0.0.1:$port" > "$d/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$d"' EXIT
for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.05; done
skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:multilayer" "docker://127.0.0.1:$port/bench/ml:1"
export HPC_REGISTRY_URL=http://127.0.0.1:$port
# Waits for the build, and warms the server's page cache with the SIF.
HPC_REGISTRY_CACHE_DIR=$d/warm "$NEW" fetch -q --wait 10m bench/ml:1 > /dev/null
for _ in $(seq "$REPS"); do
  for side in base new; do
    bin=$BASE; [ "$side" = new ] && bin=$NEW
    rm -rf "$d/cache"; sync; sleep 1
    t0=$(date +%s.%N)
    HPC_REGISTRY_CACHE_DIR=$d/cache "$bin" fetch -q bench/ml:1 > /dev/null
    t1=$(date +%s.%N)
    echo "$side $(echo "$t1 - $t0" | bc -l | xargs printf '%.3f') s, load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
