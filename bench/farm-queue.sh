#!/usr/bin/env bash
# Queue throughput of the SIF build farm (issue 11: "20 images with 1 and with 2 builder
# processes"): N distinct runnable images (default 20) pushed into a fresh server, timed from the
# first push starting until every `/sif/<ref>/status` says ready, in four configurations:
#   remote1  [farm] executor = "remote", workers = 0 (the server builds nothing), and one
#            `hpc-registry builder --server URL` process on this machine
#   remote2  the same with two builder processes (two credentials, two work dirs)
#   local1   the server's own executor, [farm] workers = 1
#   local2   [farm] workers = 2
# Every build uses the server's defaults (native backend, gzip-9, threads = 0 = all cores) unless
# FARM_COMPRESSION / FARM_THREADS say otherwise. Builder credentials are made the way an admin
# makes them (builders/README.md, tests/integration/farm_remote.rs): `hpc-registry builder-token
# create NAME --server URL --output FILE` as the first-start `admin` (its password from
# DATA/initial-admin-password). The server runs with `--dev`, so skopeo pushes anonymously.
#
#   sudo bash bench/farm-queue.sh [REPS]          # default 2 repetitions; ~2.5 min each on 2 busy cores
#   CONFIGS="remote1 remote2" bash bench/farm-queue.sh 3
#
# Figures per measurement (raw lines in bench/results/farm-queue.raw, the table from
# bench/summarize_farm_queue.py in bench/results/farm-queue.md):
#   total_s     first push started → the last of the N statuses said ready (one status request
#               every POLL_MS, default 50 ms, round-robin over the images not yet ready, on one
#               keep-alive connection: the last ready is seen within POLL_MS; a fixed 20
#               requests/s, so that polling adds little to the server's CPU, bench/wait_all_ready.py)
#   images/min  N / total_s
#   cores busy  (server + builders CPU-s) / total_s: how much of the machine the farm kept busy
#   CPU-s/image (utime+stime+cutime+cstime of the server and of each builder process, from
#               /proc/PID/stat, at the first push and when the last SIF was ready) / N; the
#               build child processes are reaped before their SIF is recorded, so their CPU is
#               in their parent's cutime/cstime: the server's (local) or the builder's (remote)
#   first/median ready  when the first and the median image was ready (seen within pending × POLL_MS)
#   push_s      first push started → last push returned
#   split       how many images each builder/worker built (from the status's `builder`)
#   load        `uptime`'s 1/5/15-minute load average before and after
# Pushes: PUSH_JOBS (default 4) `skopeo copy` processes at once, each image pushed once, in
# order q01…qN: a burst of arrivals, so that the queue is what is measured and not the client.
# Configurations are interleaved, the order rotated by one each repetition; each measurement
# has its own fresh server and data dir; the page cache is dropped before each (as root).
#
# The images: each is busybox-static (/bin/sh, the image's command) plus its own QUEUE_IMAGE_MIB
# (default 16) MiB of real files from this machine's /usr/lib (regular files < 4 MiB, sorted,
# dealt out round-robin: image i takes every k-th of files i, i+N, i+2N, …, k chosen to spread
# its picks over all of /usr/lib, until its size is reached; so every image gets the same
# mixture of libraries, Python, data and text, and no file is in two images) and a file
# /etc/bench-image naming it. Each is one layer: distinct layers, configs and
# manifest digests, so no blob, SIF or build is shared between images. Built once with umoci into
# their own OCI layout, $BENCH_CACHE/farm-queue-<N>x<MiB>m (not bench/images.sh's $CACHE/oci,
# which the other scripts may be building into at the same time); /usr/lib differs between
# machines, so compare figures made with the same cache.
#
# Two builders on one 2-core machine are not two builder hosts. Here the server, both builders
# and their build processes share the same two cores, and each build already uses both cores
# for compression (threads = 0), so remote2 can only gain where one build leaves a core idle (its
# serial unpack phase, the upload, the server's hashing and checks of the upload) and pays for
# the extra contention; local2 against local1 is the same comparison inside the server. On two
# builder hosts each build would have its own cores: the builders' side would scale with the
# hosts, and what stays shared is the server's intake of every SIF (receive, hash, verify,
# import), i.e. the server's CPU-s per image, which this benchmark reports apart, and the
# claim/heartbeat traffic. Read remote2/remote1 here as "does the queue keep two claimants busy
# and what does the second cost", and the server's CPU-s per image as the figure that carries
# over to real hosts.
#
# Environment: HPC_REGISTRY_BIN (default target/release/hpc-registry), BENCH_CACHE (default
# /var/tmp/hpc-registry-bench), BENCH_OUT (default bench/results), QUEUE_IMAGES (20),
# QUEUE_IMAGE_MIB (16), PUSH_JOBS (4), POLL_MS (50), CONFIGS ("remote1 remote2 local1 local2"),
# FARM_COMPRESSION (gzip), FARM_THREADS (0), READY_TIMEOUT_S (900 per measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REPS=${1:-2}
BIN=${HPC_REGISTRY_BIN:-$REPO/target/release/hpc-registry}
CACHE=${BENCH_CACHE:-/var/tmp/hpc-registry-bench}
OUT=${BENCH_OUT:-$REPO/bench/results}
N=${QUEUE_IMAGES:-20}
MIB=${QUEUE_IMAGE_MIB:-16}
PUSH_JOBS=${PUSH_JOBS:-4}
POLL_MS=${POLL_MS:-50}
CONFIGS=${CONFIGS:-remote1 remote2 local1 local2}
COMPRESSION=${FARM_COMPRESSION:-gzip}
THREADS=${FARM_THREADS:-0}
READY_TIMEOUT=${READY_TIMEOUT_S:-900}
LAYOUT=$CACHE/farm-queue-${N}x${MIB}m
PY=${PYTHON:-/usr/bin/python3}   # not a pyenv shim: its start-up alone takes ~0.2 s
RAW=$OUT/farm-queue.raw

for t in skopeo umoci curl bc busybox; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y skopeo umoci curl bc busybox-static" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release (or set HPC_REGISTRY_BIN)" >&2; exit 1; }
mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d /var/tmp/bench-farm-queue.XXXXXX)
: > "$RAW"

# Only this shell's own live background jobs are stopped (by PID): `jobs -p` never lists a PID
# that has since been reused by someone else's process.
cleanup() {
  local p
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
log() { echo "[$(date -u +%T)] $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || log "warning: cannot drop caches"; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_of() { # pid → utime+stime+cutime+cstime in seconds (fields 14-17; the comm field has no spaces)
  awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15 + $16 + $17) / t}' "/proc/$1/stat"
}
wait_http() { # port path
  for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.05; done
  echo "nothing answered on port $1$2" >&2; return 1
}
tag() { printf 'q%02d' "$1"; }

# ---------------------------------------------------------------- the images (once)
queue_images() {
  [ -f "$LAYOUT.done" ] && return
  log "building $N images of ${MIB} MiB into $LAYOUT (once)"
  rm -rf "$LAYOUT"
  umoci init --layout "$LAYOUT"
  find /usr/lib -xdev -type f -size -4M -readable 2>/dev/null | LC_ALL=C sort > "$WORK/files"
  # Deal the files out round-robin, each image up to MIB MiB: lists $WORK/list-<i>.
  $PY - "$WORK/files" "$WORK" "$N" "$((MIB << 20))" <<'EOF'
import os, sys
files, work, n, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paths, sizes = [], []
for p in open(files):
    p = p.rstrip("\n")
    try:
        sizes.append(os.lstat(p).st_size)
        paths.append(p)
    except OSError:
        pass
# Image i's share is every n-th file from i; of its share it takes every k-th file, k chosen so
# that the picks spread over all of /usr/lib (not just its first directories), then fills up
# from the rest of its share if that fell short.
k = max(1, sum(sizes) // n // cap)
got, lists = [0] * n, [[] for _ in range(n)]
for second in (False, True):
    for idx, (p, s) in enumerate(zip(paths, sizes)):
        i, j = idx % n, idx // n
        if (j % k == 0) == second:
            continue
        if got[i] + s <= cap:
            got[i] += s
            lists[i].append(p.lstrip("/"))
for i in range(n):
    with open(os.path.join(work, f"list-{i + 1}"), "w") as f:
        f.write("\n".join(sorted(lists[i])) + "\n")
    if got[i] < cap * 0.9:
        sys.exit(f"image {i + 1}: only {got[i]} bytes of files found in /usr/lib")
EOF
  local i t b
  for i in $(seq "$N"); do
    t=$(tag "$i"); b=$WORK/bundle-$t
    umoci new --image "$LAYOUT:$t"
    umoci unpack --rootless --image "$LAYOUT:$t" "$b" 2>/dev/null
    mkdir -p "$b/rootfs/bin" "$b/rootfs/etc"
    cp /bin/busybox "$b/rootfs/bin/busybox"; ln -s busybox "$b/rootfs/bin/sh"
    echo "farm-queue image $t of $N" > "$b/rootfs/etc/bench-image"
    tar -C / -cf - --no-recursion -T "$WORK/list-$i" | tar -C "$b/rootfs" -xf -
    umoci repack --image "$LAYOUT:$t" "$b"
    umoci config --image "$LAYOUT:$t" --config.cmd /bin/sh --config.env PATH=/bin --architecture amd64 --os linux
    rm -rf "$b"
  done
  umoci gc --layout "$LAYOUT"
  touch "$LAYOUT.done"
}

image_stats() { # → "layers=… compressed_MB=… unpacked_MB=…" over all N images
  $PY - "$LAYOUT" "$N" "$MIB" <<'EOF'
import json, os, sys
layout, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
idx = json.load(open(os.path.join(layout, "index.json")))
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
digests, layers, size = set(), set(), 0
for m in idx["manifests"]:
    digests.add(m["digest"])
    man = json.load(open(blob(m["digest"])))
    for l in man["layers"]:
        layers.add(l["digest"])
        size += l["size"]
print(f"images={len(idx['manifests'])} distinct_manifests={len(digests)} distinct_layers={len(layers)} "
      f"compressed_MB={size / 1e6:.0f} files_MiB_per_image={mib}")
EOF
}

# ---------------------------------------------------------------- one measurement
SERVER_PID=""
BUILDER_PIDS=()
start_server() { # config → PORT, DATA, SERVER_PID
  local config=$1 workers executor=local
  case $config in
    remote*) workers=0; executor=remote ;;
    local*) workers=${config#local} ;;
  esac
  PORT=$(free_port)
  DATA=$WORK/data-$config
  rm -rf "$DATA"; mkdir -p "$DATA"
  cat > "$WORK/$config.toml" <<EOF
[farm]
executor = "$executor"
workers = $workers
threads = $THREADS
compression = "$COMPRESSION"
EOF
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --dev --config "$WORK/$config.toml" \
    >"$WORK/server-$config.log" 2>&1 &
  SERVER_PID=$!
  wait_http "$PORT" /healthz
}

start_builders() { # config: remoteK → K builder processes, each with its own credential
  BUILDER_PIDS=()
  local k=${1#remote} j password
  password=$(cat "$DATA/initial-admin-password")
  for j in $(seq "$k"); do
    HPC_REGISTRY_USER=admin HPC_REGISTRY_PASSWORD=$password \
      "$BIN" builder-token create "bench-b$j" --server "http://127.0.0.1:$PORT" \
      --output "$WORK/b$j.token" 2>>"$WORK/builder-token.log"
    mkdir -p "$WORK/b$j"
    "$BIN" builder --server "http://127.0.0.1:$PORT" --token-file "$WORK/b$j.token" \
      --work-dir "$WORK/b$j" >"$WORK/builder-$j.log" 2>&1 &
    BUILDER_PIDS+=($!)
  done
}

stop_all() {
  local p
  for p in "${BUILDER_PIDS[@]}" "$SERVER_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  BUILDER_PIDS=()
  rm -rf "$DATA" "$WORK"/b[0-9]*
}

measure() { # config rep
  local config=$1 rep=$2 refs=() i p
  start_server "$config"
  [[ $config == remote* ]] && start_builders "$config"
  for i in $(seq "$N"); do refs+=("bench/$(tag "$i"):1"); done
  drop_caches
  sleep 1   # the builders' first claim long-polls are waiting
  local before; before=$(load)
  local cpu0=() all=("$SERVER_PID" "${BUILDER_PIDS[@]}")
  for p in "${all[@]}"; do cpu0+=("$(cpu_of "$p")"); done
  CPU_PIDS="${all[*]}" $PY bench/wait_all_ready.py "$PORT" "$READY_TIMEOUT" "$POLL_MS" "${refs[@]}" > "$WORK/ready" &
  local poller=$!
  sleep 0.3   # let the poller start (it polls 404s until the images exist)
  local t0 t1
  t0=$(now)
  for i in $(seq "$N"); do tag "$i"; echo; done |
    xargs -P "$PUSH_JOBS" -I{} skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:{}" "docker://127.0.0.1:$PORT/bench/{}:1"
  t1=$(now)
  if ! wait "$poller"; then
    log "measurement $config rep=$rep failed; server log tail:"; tail -20 "$WORK/server-$config.log" >&2
    for j in "${!BUILDER_PIDS[@]}"; do tail -5 "$WORK/builder-$((j + 1)).log" >&2; done
    exit 1
  fi
  local after; after=$(load)
  # server and builder CPU over the window; per-image ready times and who built each
  local line; line=$($PY - "$WORK/ready" "$t0" "${cpu0[*]}" "${all[*]}" <<'EOF'
import statistics, sys
from collections import Counter
lines = open(sys.argv[1]).read().split("\n")
t0, cpu0, pids = float(sys.argv[2]), [float(x) for x in sys.argv[3].split()], sys.argv[4].split()
head = dict(kv.split("=", 1) for kv in lines[0].split())
cpu1 = dict(x.split(":") for x in head["cpu"].split(","))
delta = [float(cpu1[p]) - c for p, c in zip(pids, cpu0)]
per = [dict(kv.split("=", 1) for kv in l.split()) for l in lines[1:] if l.strip()]
ready = sorted(float(r["ready"]) - t0 for r in per)
split = Counter(r["builder"] for r in per)
print(f"total_s={float(head['all_ready']) - t0:.3f} first_ready_s={ready[0]:.3f} "
      f"median_ready_s={statistics.median(ready):.3f} server_cpu_s={delta[0]:.2f} "
      f"builders_cpu_s={sum(delta[1:]):.2f} split={'/'.join(str(v) for _, v in sorted(split.items()))}")
EOF
)
  local sif_bytes=0 size
  for r in "${refs[@]}"; do
    size=$(curl -fsI "http://127.0.0.1:$PORT/sif/$r" | tr -d '\r' | awk 'tolower($1)=="content-length:"{print $2}')
    sif_bytes=$((sif_bytes + size))
  done
  stop_all
  echo "queue $config rep=$rep images=$N $line push_s=$(printf %.3f "$(echo "$t1 - $t0" | bc)") push_jobs=$PUSH_JOBS sif_MB=$((sif_bytes / 1000000)) load_before=$before load_after=$after" | tee -a "$RAW" >&2
}

# ---------------------------------------------------------------- run
queue_images
echo "# farm-queue $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) nproc=$(nproc) bin=$BIN compression=$COMPRESSION threads=$THREADS poll_ms=$POLL_MS" | tee -a "$RAW" >&2
echo "# images $(image_stats)" | tee -a "$RAW" >&2
read -r -a CONFIG_LIST <<< "$CONFIGS"
n=${#CONFIG_LIST[@]}
for rep in $(seq "$REPS"); do
  # Interleaved, the order rotated by one each repetition.
  for i in $(seq 0 $((n - 1))); do
    measure "${CONFIG_LIST[$(((i + rep - 1) % n))]}" "$rep"
  done
done
echo "# end $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

$PY bench/summarize_farm_queue.py "$RAW" | tee "$OUT/farm-queue.md"
