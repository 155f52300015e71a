#!/usr/bin/env bash
# SIF serving benchmark: GET /sif/<manifest digest> from hpc-registry vs nginx serving the very
# same SIF file (copied into its docroot; sendfile on, access log off, worker_processes auto),
# both on loopback, page cache warm, with 1 and with 32 concurrent clients (wrk, fixed duration),
# interleaved, median of REPS. MB = 10^6 bytes of response (headers included, as wrk counts).
#
#   bash bench/sif-serve.sh [REPS] [DURATION_S]
#   SIF_SERVE_IMAGES=busybox bash bench/sif-serve.sh 5 10   # one image only
#
# Images come from bench/images.sh (cached in BENCH_CACHE); the minbase SIF (~90 MB) is the main
# figure, the busybox SIF (~1 MB) shows per-request overhead.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REPS=${1:-3}
DUR=${2:-10}
IMAGES=${SIF_SERVE_IMAGES:-minbase busybox}
BIN=${HPC_REGISTRY_BIN:-$REPO/target/release/hpc-registry}
CACHE=${BENCH_CACHE:-/var/tmp/hpc-registry-bench}
OUT=${BENCH_OUT:-$REPO/bench/results}
mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d /var/tmp/bench-sif-serve.XXXXXX)
RAW=$OUT/sif-serve.raw
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
log() { echo "[$(date +%T)] $*" >&2; }
PY=${PYTHON:-/usr/bin/python3}
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
source bench/images.sh

# hpc-registry with the two SIFs built (zstd-3: quicker to build; the bytes served are what counts)
OPORT=$(free_port)
mkdir -p "$WORK/ours"
printf '[farm]\ncompression = "zstd"\ncompression_level = 3\n' > "$WORK/ours.toml"
"$BIN" serve --listen "127.0.0.1:$OPORT" --data-dir "$WORK/ours" --dev --config "$WORK/ours.toml" >"$WORK/ours.log" 2>&1 &
OURS_PID=$!
PIDS+=("$OURS_PID")
for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$OPORT/v2/" && break; sleep 0.05; done

NPORT=$(free_port)
mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
chmod 755 "$WORK" "$WORK/nginx" "$WORK/nginx/www"   # nginx's workers run as www-data
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
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
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NPORT/" && break; sleep 0.05; done

WRKLUA=$WORK/report.lua
cat > "$WRKLUA" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d bytes=%d duration_us=%d errors=%d\n", summary.requests, summary.bytes,
    summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
EOF

declare -A PATHS
for img in $IMAGES; do
  oci_image "$img"
  skopeo copy -q --dest-tls-verify=false "oci:$CACHE/oci:$img" "docker://127.0.0.1:$OPORT/bench/$img:1" >/dev/null
  out=$($PY bench/wait_ready.py "$OPORT" "bench/$img:1" 1800)
  digest=$(echo "$out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().split(" ",3)[3])["image"])')
  PATHS[$img]="/sif/$digest"
  curl -fs -o "$WORK/nginx/www/$img.sif" "http://127.0.0.1:$OPORT/sif/$digest"
  chmod 644 "$WORK/nginx/www/$img.sif"
  etag=$(curl -fsI "http://127.0.0.1:$OPORT/sif/$digest" | tr -d '\r"' | awk 'tolower($1)=="etag:"{print $2}')
  [ "sha256:$(sha256sum "$WORK/nginx/www/$img.sif" | cut -d' ' -f1)" = "$etag" ] || { echo "SIF digest mismatch" >&2; exit 1; }
  echo "# $img SIF $(stat -c %s "$WORK/nginx/www/$img.sif") bytes, ours at ${PATHS[$img]}" | tee -a "$RAW" >&2
done

measure() { # who img conns rep
  local who=$1 img=$2 c=$3 rep=$4 url threads=1
  [ "$c" -gt 1 ] && threads=2
  if [ "$who" = ours ]; then url="http://127.0.0.1:$OPORT${PATHS[$img]}"; else url="http://127.0.0.1:$NPORT/$img.sif"; fi
  local line
  line=$(wrk -t "$threads" -c "$c" -d "${DUR}s" --timeout 30s -s "$WRKLUA" "$url" | grep '^WRK ')
  echo "$who $img c=$c rep=$rep ${line#WRK }" | tee -a "$RAW" >&2
}

echo "# sif-serve $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
for img in $IMAGES; do
  for c in 1 32; do
    for rep in $(seq "$REPS"); do
      if [ $((rep % 2)) = 1 ]; then measure ours "$img" "$c" "$rep"; measure nginx "$img" "$c" "$rep"
      else measure nginx "$img" "$c" "$rep"; measure ours "$img" "$c" "$rep"; fi
    done
  done
done
echo "# ours peak RSS (VmHWM) $(awk '/VmHWM/{print int($2/1024)}' /proc/$OURS_PID/status) MiB; end load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

$PY bench/summarize_sif_serve.py "$RAW" | tee "$OUT/sif-serve.md"
