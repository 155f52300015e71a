#!/usr/bin/env bash
# Thundering-herd SIF serving: many clients GET one SIF at once (a job's nodes starting together),
# from hpc-registry and from nginx (sendfile) serving the same file, in the same run, with 64 and
# 256 concurrent clients (wrk, fixed duration, interleaved, median of REPS). While each run goes,
# the server's resident memory is sampled every 0.2 s from /proc: anonymous (RssAnon: buffers,
# heap) and file-mapped (RssFile: the binary, mapped files) apart, peak of each; nginx's is the
# sum over its master and workers. A second hpc-registry binary (BASELINE_BIN, e.g. the previous
# main) runs side by side when given, to compare serving paths.
#
#   bash bench/sif-herd.sh [REPS] [DURATION_S]
#   BASELINE_BIN=/path/to/old/hpc-registry HPC_REGISTRY_BIN=target/debug/hpc-registry bash bench/sif-herd.sh 3 8
#
# MB = 10^6 bytes of response (headers included, as wrk counts). The SIF is bench/images.sh's
# minbase image (~90 MB), cached in BENCH_CACHE.
#
# SIF_HERD_MODE=fetch measures what a job's nodes do instead: each of the clients downloads the
# whole SIF once into a cold cache of its own, all started at the same moment, and the run
# lasts until the last one is done (aggregate MB/s = clients x SIF size / that time). Three
# client kinds, interleaved: `hpc-registry fetch` (resume, sha256 verify, atomic publish: the
# real client) against hpc-registry (`ours-fetch`), curl against hpc-registry (`ours-curl`:
# the server alone, without the client's hashing), and curl against nginx (`nginx-curl`).
# Every file is checked for its size afterwards; caches are removed (and `sync`ed) between runs.
#
#   SIF_HERD_MODE=fetch SIF_HERD_IMAGE=random256 SIF_HERD_CLIENTS=64 bash bench/sif-herd.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REPS=${1:-3}
DUR=${2:-8}
CLIENTS=${SIF_HERD_CLIENTS:-64 256}
MODE=${SIF_HERD_MODE:-wrk}
IMG=${SIF_HERD_IMAGE:-minbase}
BIN=${HPC_REGISTRY_BIN:-$REPO/target/release/hpc-registry}
BASELINE_BIN=${BASELINE_BIN:-}
CACHE=${BENCH_CACHE:-/var/tmp/hpc-registry-bench}
OUT=${BENCH_OUT:-$REPO/bench/results}
mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d /var/tmp/bench-sif-herd.XXXXXX)
RAW=$OUT/sif-herd$([ "${SIF_HERD_MODE:-wrk}" = fetch ] && echo -fetch).raw
: > "$RAW"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for t in wrk nginx skopeo umoci curl python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y wrk nginx skopeo umoci" >&2; exit 1; }
done
ulimit -n 20000 2>/dev/null || true
log() { echo "[$(date +%T)] $*" >&2; }
PY=${PYTHON:-/usr/bin/python3}
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
source bench/images.sh
oci_image "$IMG"

declare -A PORT PID URL
start_registry() { # name binary
  local name=$1 bin=$2 port
  port=$(free_port)
  mkdir -p "$WORK/$name"
  printf '[farm]\ncompression = "zstd"\ncompression_level = 3\n' > "$WORK/$name.toml"
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name/data" --dev --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  PIDS+=("$!")
  PORT[$name]=$port
  for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.05; done
  skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:$IMG" "docker://127.0.0.1:$port/bench/$IMG:1" >/dev/null
  local out digest
  out=$($PY bench/wait_ready.py "$port" "bench/$IMG:1" 1800)
  digest=$(echo "$out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().split(" ",3)[3])["image"])')
  URL[$name]="http://127.0.0.1:$port/sif/$digest"
}

SERVERS="ours"
start_registry ours "$BIN"
if [ -n "$BASELINE_BIN" ]; then
  start_registry baseline "$BASELINE_BIN"
  SERVERS="$SERVERS baseline"
fi

NPORT=$(free_port)
mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
chmod 755 "$WORK" "$WORK/nginx" "$WORK/nginx/www"   # nginx's workers run as www-data
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile 20000;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $WORK/nginx/tmp;
  proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp;
  uwsgi_temp_path $WORK/nginx/tmp;
  scgi_temp_path $WORK/nginx/tmp;
  types { application/vnd.sylabs.sif sif; }
  server {
    listen 127.0.0.1:$NPORT;
    root $WORK/nginx/www;
  }
}
EOF
curl -fs -o "$WORK/nginx/www/$IMG.sif" "${URL[ours]}"
chmod 644 "$WORK/nginx/www/$IMG.sif"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PID[nginx]=$!
PIDS+=("$!")
URL[nginx]="http://127.0.0.1:$NPORT/$IMG.sif"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NPORT/" && break; sleep 0.05; done
echo "# $IMG SIF $(stat -c %s "$WORK/nginx/www/$IMG.sif") bytes" | tee -a "$RAW" >&2

WRKLUA=$WORK/report.lua
cat > "$WRKLUA" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d bytes=%d duration_us=%d errors=%d\n", summary.requests, summary.bytes,
    summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
EOF

# The PIDs whose memory counts: the server, or nginx's master and its workers.
pids_of() {
  if [ "$1" = nginx ]; then echo "${PID[nginx]} $(pgrep -P "${PID[nginx]}" | tr '\n' ' ')"; else echo "${PID[$1]}"; fi
}
# Samples RssAnon and RssFile (KiB, summed over the PIDs) until $WORK/stop exists; prints the peaks.
sample_rss() {
  local pids=$1 anon=0 file=0 a f
  while [ ! -e "$WORK/stop" ]; do
    a=0; f=0
    for p in $pids; do
      read -r pa pf < <(awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} END{print a+0, f+0}' "/proc/$p/status" 2>/dev/null || echo "0 0")
      a=$((a + pa)); f=$((f + pf))
    done
    [ "$a" -gt "$anon" ] && anon=$a
    [ "$f" -gt "$file" ] && file=$f
    sleep 0.2
  done
  echo "rss_anon_kib=$anon rss_file_kib=$file"
}

measure() { # who conns rep
  local who=$1 c=$2 rep=$3 line rss
  rm -f "$WORK/stop"
  sample_rss "$(pids_of "$who")" > "$WORK/rss" &
  local sampler=$!
  line=$(wrk -t 2 -c "$c" -d "${DUR}s" --timeout 60s -s "$WRKLUA" "${URL[$who]}" | grep '^WRK ')
  touch "$WORK/stop"
  wait "$sampler"
  rss=$(cat "$WORK/rss")
  echo "$who c=$c rep=$rep ${line#WRK } $rss load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$RAW" >&2
}

SIF_BYTES=$(stat -c %s "$WORK/nginx/www/$IMG.sif")
now_us() { local t; t=$(date +%s%N); echo $((t / 1000)); }
# One whole-file download per client, all at once: who (ours-fetch|ours-curl|nginx-curl) conns rep.
measure_whole() {
  local who=$1 c=$2 rep=$3 server=${1%%-*} start end errors=0 i rss
  rm -rf "$WORK/caches"; mkdir -p "$WORK/caches"; sync
  rm -f "$WORK/stop"
  sample_rss "$(pids_of "$server")" > "$WORK/rss" &
  local sampler=$! clients=()
  start=$(now_us)
  for i in $(seq "$c"); do
    mkdir -p "$WORK/caches/$i"
    case $who in
      ours-fetch)
        HPC_REGISTRY_URL="http://127.0.0.1:${PORT[ours]}" HPC_REGISTRY_CACHE_DIR="$WORK/caches/$i" \
          "$BIN" fetch --quiet "bench/$IMG:1" \
          >"$WORK/caches/$i.out" 2>"$WORK/caches/$i.err" &
        ;;
      *) curl -fsS -o "$WORK/caches/$i/sif" "${URL[$server]}" 2>"$WORK/caches/$i.err" & ;;
    esac
    clients+=("$!")
  done
  for p in "${clients[@]}"; do wait "$p" || errors=$((errors + 1)); done
  end=$(now_us)
  touch "$WORK/stop"
  wait "$sampler"
  rss=$(cat "$WORK/rss")
  # Every client has the whole file (fetch: at the path it printed).
  for i in $(seq "$c"); do
    local f="$WORK/caches/$i/sif"
    [ "$who" = ours-fetch ] && f=$(cat "$WORK/caches/$i.out" 2>/dev/null)
    [ -n "$f" ] && [ "$(stat -c %s "$f" 2>/dev/null)" = "$SIF_BYTES" ] || errors=$((errors + 1))
  done
  [ "$errors" = 0 ] || cat "$WORK"/caches/*.err >&2
  echo "$who c=$c rep=$rep requests=$c bytes=$((c * SIF_BYTES)) duration_us=$((end - start)) errors=$errors $rss load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$RAW" >&2
  rm -rf "$WORK/caches"
}

echo "# sif-herd ($MODE) $(date -u +%FT%TZ) $(nproc) cores, load at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
for c in $CLIENTS; do
  for rep in $(seq "$REPS"); do
    if [ "$MODE" = fetch ]; then
      order="ours-fetch ours-curl nginx-curl"
      [ $((rep % 2)) = 0 ] && order="nginx-curl ours-curl ours-fetch"
      for who in $order; do measure_whole "$who" "$c" "$rep"; done
      continue
    fi
    order="$SERVERS nginx"
    [ $((rep % 2)) = 0 ] && order="nginx $SERVERS"
    for who in $order; do measure "$who" "$c" "$rep"; done
  done
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

SUFFIX=""; [ "$MODE" = fetch ] && SUFFIX="-fetch"
$PY - "$RAW" <<'EOF' | tee "$OUT/sif-herd$SUFFIX.md"
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
notes = []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        notes.append(line[2:].strip()); continue
    who, c, rep, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    if int(d["errors"]):
        sys.exit(f"errors in {line}")
    runs[(int(c[2:]), who)].append((int(d["bytes"]) / (int(d["duration_us"]) / 1e6) / 1e6,
                                    int(d["rss_anon_kib"]) / 1024, int(d["rss_file_kib"]) / 1024))
print("; ".join(notes))
print()
print("| clients | server | MB/s (median; every run) | vs nginx | peak RssAnon MiB | peak RssFile MiB |")
print("|---|---|---|---|---|---|")
order = ["ours", "baseline", "ours-fetch", "ours-curl", "nginx", "nginx-curl"]
for c in sorted({c for c, _ in runs}):
    ref = next(w for w in ("nginx", "nginx-curl") if (c, w) in runs)
    nginx = statistics.median(r[0] for r in runs[(c, ref)])
    for who in order:
        rs = runs.get((c, who))
        if not rs:
            continue
        mbs = statistics.median(r[0] for r in rs)
        every = "/".join(f"{r[0]:,.0f}" for r in rs)
        print(f"| {c} | {who} | {mbs:,.0f} ({every}) | {mbs / nginx:.2f}× | {max(r[1] for r in rs):,.0f} | {max(r[2] for r in rs):,.0f} |")
EOF
