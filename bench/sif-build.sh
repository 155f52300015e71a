#!/usr/bin/env bash
# SIF build benchmark: hpc-registry's native builder vs the Apptainer-style pipeline
# (skopeo copy → umoci raw unpack --rootless → mksquashfs -noappend -all-root → siftool new/add)
# and vs the squashfs floor (`tar2sqfs -j 2` on the merged root filesystem as one tar, made once
# per image with `umoci raw unpack` as root, so owners and device nodes are real),
# at equal compression (gzip level 9 = mksquashfs's default, and zstd level 3), on
#   busybox    one layer, busybox-static (also: push → SIF ready, goal < 1 s)
#   minbase    `debootstrap --variant=minbase bookworm`, one layer (~200 MB unpacked)
#   multilayer minbase + 5 layers of real files from this machine's /usr + 1 layer of whiteouts
# Interleaved, page cache dropped before every measurement, median of REPS (default 3).
#
#   sudo bash bench/sif-build.sh [REPS] [IMAGES...]        e.g. bash bench/sif-build.sh 3 busybox minbase
#
# Environment: BENCH_CACHE (default /var/tmp/hpc-registry-bench: the OCI layouts of the images,
# built once), MINBASE_DIR (reuse an existing debootstrap tree instead of running debootstrap),
# BENCH_OUT (default bench/results: raw lines and the markdown tables), HPC_REGISTRY_BIN,
# BUILD_OCI (default target/release/examples/build_oci: `cargo build --release -p oci2sif
# --example build_oci`), BASELINE_BUILD_OCI (the same example built from the baseline commit:
# measured side by side when set), SIDES (default "build base floor pipeline server"; "server"
# runs only when HPC_REGISTRY_BIN exists).
#
# build/base: one `build_oci` process per measurement (the build alone, as a contained build
# process runs it: the image's blobs read from the OCI layout, the SIF written to scratch),
# under /usr/bin/time: wall time, peak RSS (max RSS of the process), CPU; it also logs its
# phases (unpack, squashfs, SIF write+hash). Each side's reproducible SIF is hashed once, so
# that the baseline and the new build can be seen to write the same bytes.
# floor: `tar2sqfs -q -f -j 2 -c zstd -X level=3` (or `-c gzip -X level=9`) reading the merged
# rootfs tar from a file, under /usr/bin/time.
#
# Ours: a fresh server (fresh data dir, [farm] workers = 1, threads = 0 = all cores, the given
# compression) per measurement; the image is pushed with skopeo, and the figure is the time from
# skopeo returning to /sif/<ref>/status saying ready (polled every 5 ms), plus the server's
# VmHWM (peak RSS; the build runs in-process), reset after start-up so that it covers the push
# and the build, and the server's CPU time (utime+stime) from the push returning to ready.
# Pipeline: each step under /usr/bin/time; the figure is the sum of the steps' wall times, the
# largest max-RSS of any step and the steps' summed CPU time. skopeo pulls from a local
# distribution 2.8 registry.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REPS=${1:-3}
shift || true
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(busybox minbase multilayer)
BIN=${HPC_REGISTRY_BIN:-$REPO/target/release/hpc-registry}
CACHE=${BENCH_CACHE:-/var/tmp/hpc-registry-bench}
OUT=${BENCH_OUT:-$REPO/bench/results}
mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d /var/tmp/bench-sif-build.XXXXXX)
RAW=$OUT/sif-build.raw
: > "$RAW"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for t in skopeo umoci mksquashfs siftool docker-registry python3 busybox; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y skopeo umoci squashfs-tools siftool docker-registry busybox-static debootstrap" >&2; exit 1; }
done
BUILD_OCI=${BUILD_OCI:-$REPO/target/release/examples/build_oci}
SIDES=${SIDES:-build base floor pipeline server}
[ -n "${BASELINE_BUILD_OCI:-}" ] || SIDES=${SIDES/base/}
[ -x "$BIN" ] || { SIDES=${SIDES/server/}; echo "note: $BIN missing, no server measurement (cargo build --release)" >&2; }
[ -x "$BUILD_OCI" ] || { echo "build first: cargo build --release -p oci2sif --example build_oci" >&2; exit 1; }
command -v tar2sqfs >/dev/null || { echo "missing tar2sqfs: apt-get install -y squashfs-tools-ng" >&2; exit 1; }
side() { [[ " $SIDES " == *" $1 "* ]]; }

PY=${PYTHON:-/usr/bin/python3}   # not a pyenv shim: its start-up alone takes ~0.2 s
now() { date +%s.%N; }
log() { echo "[$(date +%T)] $*" >&2; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || log "warning: cannot drop caches"; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # port
  for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$1/v2/" && return 0; sleep 0.05; done
  echo "server on port $1 did not answer" >&2; return 1
}
# shellcheck source=bench/images.sh
source bench/images.sh

# ---------------------------------------------------------------- servers
DPORT=$(free_port)
mkdir -p "$WORK/dist"
cat > "$WORK/dist/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/dist/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DPORT
EOF
docker-registry serve "$WORK/dist/config.yml" >"$WORK/dist/log" 2>&1 &
PIDS+=($!)
wait_http "$DPORT"

OURS_PID=""
start_ours() { # compression level → sets OPORT, OURS_PID, ODATA
  OPORT=$(free_port)
  ODATA=$WORK/ours-$OPORT
  mkdir -p "$ODATA"
  cat > "$ODATA.toml" <<EOF
[farm]
workers = 1
threads = 0
compression = "$1"
compression_level = $2
EOF
  "$BIN" serve --listen "127.0.0.1:$OPORT" --data-dir "$ODATA" --dev --config "$ODATA.toml" >"$ODATA.log" 2>&1 &
  OURS_PID=$!
  PIDS+=("$OURS_PID")
  wait_http "$OPORT"
}
stop_ours() {
  kill "$OURS_PID"; wait "$OURS_PID" 2>/dev/null || true
  rm -rf "$ODATA"
}

# ---------------------------------------------------------------- one measurement each
ours_build() { # image comp level rep
  local img=$1 comp=$2 level=$3 rep=$4
  start_ours "$comp" "$level"
  drop_caches
  echo 5 > "/proc/$OURS_PID/clear_refs"   # peak RSS from here on: the push and the build, not start-up
  SERVER_PID=$OURS_PID $PY bench/wait_ready.py "$OPORT" "bench/$img:1" 1800 > "$WORK/ready" &
  local poller=$! t0 t1
  sleep 0.3   # let the poller start (it polls 404s until the image exists)
  t0=$(now)
  skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:$img" "docker://127.0.0.1:$OPORT/bench/$img:1" >/dev/null
  t1=$(now)
  local cpu1; cpu1=$(awk '{print ($14 + $15) / 100}' "/proc/$OURS_PID/stat")
  wait "$poller"
  local seen rss cpu2 status size
  read -r seen rss cpu2 status < "$WORK/ready"
  size=$(curl -fsI "http://127.0.0.1:$OPORT/sif/bench/$img:1" | tr -d '\r' | awk 'tolower($1)=="content-length:"{print $2}')
  if [ "$rep" = 1 ] && [ "$comp" = gzip ]; then
    curl -fs -o "$WORK/check.sif" "http://127.0.0.1:$OPORT/sif/bench/$img:1"
    siftool list "$WORK/check.sif" >&2
    rm -f "$WORK/check.sif"
  fi
  local build_ms
  build_ms=$(sed 's/\x1b\[[0-9;]*m//g' "$ODATA.log" | grep -o 'duration_ms=[0-9]*' | cut -d= -f2 | tail -1)
  stop_ours
  echo "ours $img $comp-$level rep=$rep build_s=$(echo "$seen - $t1" | bc) rss_mib=$rss sif_bytes=$size push_s=$(echo "$t1 - $t0" | bc) worker_ms=$build_ms cpu_s=$(echo "$cpu2 - $cpu1" | bc)" | tee -a "$RAW" >&2
}

direct_build() { # side binary image comp level rep
  local side=$1 bin=$2 img=$3 comp=$4 level=$5 rep=$6 w=$WORK/direct
  rm -rf "$w"; mkdir -p "$w"
  drop_caches
  /usr/bin/time -f "%e %M %U %S" -o "$w/time" "$bin" "$CACHE/oci" "$img" "$w/img.sif" \
    --comp "$comp" --level "$level" --threads 2 --work "$w" > "$w/out"
  local wall rss cpu size phases
  read -r wall rss _ _ < "$w/time"
  rss=$((rss / 1024))
  cpu=$(awk '{printf "%.2f", $3 + $4}' "$w/time")
  size=$(stat -c %s "$w/img.sif")
  # (the baseline prints no phases)
  phases=$(tr ' ' '\n' < "$w/out" | { grep -E '^(unpack|squashfs|sif)_s=' || true; } | tr '\n' ' ')
  rm -rf "$w"
  echo "$side $img $comp-$level rep=$rep build_s=$wall rss_mib=$rss sif_bytes=$size cpu_s=$cpu $phases" | tee -a "$RAW" >&2
}

same_bytes() { # image: the reproducible SIFs of build and base, zstd-3
  local img=$1 w=$WORK/same a b
  rm -rf "$w"; mkdir -p "$w"
  "$BUILD_OCI" "$CACHE/oci" "$img" "$w/new.sif" --comp zstd --level 3 --threads 2 --work "$w" --reproducible >/dev/null
  a=$(sha256sum < "$w/new.sif" | cut -c1-64)
  b=none
  if side base; then
    "$BASELINE_BUILD_OCI" "$CACHE/oci" "$img" "$w/base.sif" --comp zstd --level 3 --threads 2 --work "$w" --reproducible >/dev/null
    b=$(sha256sum < "$w/base.sif" | cut -c1-64)
  fi
  rm -rf "$w"
  echo "# same-bytes $img build=$a base=$b" | tee -a "$RAW" >&2
}

rootfs_tar() { # image → $CACHE/<image>.rootfs.tar, the merged rootfs (once)
  local img=$1 r=$WORK/rootfs-$1
  [ -f "$CACHE/$img.rootfs.tar" ] && return
  log "merging $img into $CACHE/$img.rootfs.tar (once)"
  umoci raw unpack --image "$CACHE/oci:$img" "$r" 2>/dev/null
  tar --numeric-owner --xattrs -C "$r" -cf "$CACHE/$img.rootfs.tar.tmp" .
  mv "$CACHE/$img.rootfs.tar.tmp" "$CACHE/$img.rootfs.tar"
  rm -rf "$r"
}

floor_build() { # image comp level rep
  local img=$1 comp=$2 level=$3 rep=$4 w=$WORK/floor
  rm -rf "$w"; mkdir -p "$w"
  drop_caches
  /usr/bin/time -f "%e %M %U %S" -o "$w/time" tar2sqfs -q -f -j 2 -c "$comp" -X "level=$level" "$w/img.sqfs" < "$CACHE/$img.rootfs.tar"
  local wall rss cpu size
  read -r wall rss _ _ < "$w/time"
  rss=$((rss / 1024))
  cpu=$(awk '{printf "%.2f", $3 + $4}' "$w/time")
  size=$(stat -c %s "$w/img.sqfs")
  rm -rf "$w"
  echo "floor $img $comp-$level rep=$rep build_s=$wall rss_mib=$rss sif_bytes=$size cpu_s=$cpu" | tee -a "$RAW" >&2
}

measure() { # side image comp level rep
  case $1 in
    build) direct_build build "$BUILD_OCI" "$2" "$3" "$4" "$5" ;;
    base) direct_build base "$BASELINE_BUILD_OCI" "$2" "$3" "$4" "$5" ;;
    floor) floor_build "$2" "$3" "$4" "$5" ;;
    pipeline) pipeline_build "$2" "$3" "$4" "$5" ;;
    server) ours_build "$2" "$3" "$4" "$5" ;;
  esac
}

pipeline_build() { # image comp level rep
  local img=$1 comp=$2 level=$3 rep=$4 w=$WORK/pipe
  rm -rf "$w"; mkdir -p "$w"
  local compargs=(-comp gzip)
  [ "$comp" = zstd ] && compargs=(-comp zstd -Xcompression-level "$level")
  [ "$comp" = gzip ] && [ "$level" != 9 ] && compargs=(-comp gzip -Xcompression-level "$level")
  drop_caches
  local tf=$w/times
  T() { /usr/bin/time -f "%e %M %U %S" -a -o "$tf" "$@"; }
  T skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$DPORT/bench/$img:1" "oci:$w/oci:$img" >/dev/null
  T umoci raw unpack --rootless --image "$w/oci:$img" "$w/rootfs" 2>"$w/umoci.log"
  mkdir -p "$w/rootfs/.singularity.d"   # (Apptainer writes its env/runscript files here: a few KiB)
  T mksquashfs "$w/rootfs" "$w/img.sqfs" -noappend -all-root -quiet -no-progress "${compargs[@]}" >/dev/null
  T siftool new "$w/img.sif"
  T siftool add --datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1 "$w/img.sif" "$w/img.sqfs"
  local total rss steps size
  total=$(awk '{s+=$1} END{printf "%.2f", s}' "$tf")
  rss=$(awk '{if ($2>m) m=$2} END{printf "%d", m/1024}' "$tf")
  steps=$(awk '{printf "%s%s", (NR>1?",":""), $1}' "$tf")
  local cpu; cpu=$(awk '{s+=$3+$4} END{printf "%.2f", s}' "$tf")
  size=$(stat -c %s "$w/img.sif")
  chmod -R u+rwX "$w" 2>/dev/null || true
  rm -rf "$w"
  echo "pipeline $img $comp-$level rep=$rep build_s=$total rss_mib=$rss sif_bytes=$size steps_s=$steps cpu_s=$cpu" | tee -a "$RAW" >&2
}

# ---------------------------------------------------------------- run
echo "# sif-build $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) nproc=$(nproc)" | tee -a "$RAW" >&2
for img in "${IMAGES[@]}"; do
  oci_image "$img"
  echo "# image $img $(image_stats "$img")" | tee -a "$RAW" >&2
  skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:$img" "docker://127.0.0.1:$DPORT/bench/$img:1" >/dev/null
done

for img in "${IMAGES[@]}"; do
  rootfs_tar "$img"
  same_bytes "$img"
done

read -r -a SIDE_LIST <<< "$SIDES"
for img in "${IMAGES[@]}"; do
  for cl in "zstd 3" "gzip 9"; do
    set -- $cl
    echo "# $img $1-$2 load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
    for rep in $(seq "$REPS"); do
      # Interleaved, the order rotated by one each repetition.
      n=${#SIDE_LIST[@]}
      for i in $(seq 0 $((n - 1))); do
        measure "${SIDE_LIST[$(((i + rep - 1) % n))]}" "$img" "$1" "$2" "$rep"
      done
    done
  done
done

# push → ready for busybox (default settings: gzip 9), more repetitions: it is short
if side server && printf '%s\n' "${IMAGES[@]}" | grep -qx busybox; then
  echo "# push-to-ready busybox load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
  for rep in $(seq 5); do
    start_ours gzip 9
    $PY bench/wait_ready.py "$OPORT" "bench/busybox:1" 60 > "$WORK/ready" &
    poller=$!
    sleep 0.3
    t0=$(now)
    skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:busybox" "docker://127.0.0.1:$OPORT/bench/busybox:1" >/dev/null
    t1=$(now)
    wait "$poller"
    read -r seen _ < "$WORK/ready"
    stop_ours
    echo "push-to-ready busybox rep=$rep ready_after_push_s=$(echo "$seen - $t1" | bc) push_s=$(echo "$t1 - $t0" | bc)" | tee -a "$RAW" >&2
  done
fi

$PY bench/summarize_sif_build.py "$RAW" | tee "$OUT/sif-build.md"
