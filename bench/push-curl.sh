#!/usr/bin/env bash
# One verified monolithic push of a 1 GiB blob by curl (C, not Python: the client's own CPU is
# small) into a fresh `serve --dev` server, N times per binary, binaries interleaved:
# POST → PUT ?digest= → 201, page cache dropped before each push; prints MB/s (MB = 10^6 bytes)
# and the server's CPU (utime+stime over the push) per GB.
#
#   sudo bash bench/push-curl.sh N BIN [BIN...]     e.g. bash bench/push-curl.sh 2 /tmp/base target/release/hpc-registry
#
# The blob is random bytes in /dev/shm/push-curl.blob (made once, removed with the server's data).
set -euo pipefail
N=${1:?usage: push-curl.sh N BIN [BIN...]}
shift
[ $# -gt 0 ] || { echo "usage: push-curl.sh N BIN [BIN...]" >&2; exit 1; }
BLOB=/dev/shm/push-curl.blob
SIZE=1073741824
if [ ! -f "$BLOB" ] || [ "$(stat -c %s "$BLOB")" != "$SIZE" ]; then
  head -c "$SIZE" /dev/urandom > "$BLOB"
  sha256sum "$BLOB" | cut -d' ' -f1 > "$BLOB.sha256"
fi
SHA=$(cat "$BLOB.sha256")

push_with() { # BIN
  local bin=$1 d port pid loc sep c0 c1 t0 t1
  d=$(mktemp -d /var/tmp/push-curl.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" serve --dev --data-dir "$d" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.05; done
  for r in $(seq "$N"); do
    sync; echo 3 > /proc/sys/vm/drop_caches
    loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$port/v2/bench/b$r/blobs/uploads/" \
      | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
    case $loc in http*) ;; *) loc="http://127.0.0.1:$port$loc" ;; esac
    sep='?'; [[ $loc == *\?* ]] && sep='&'
    c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    t0=$(date +%s.%N)
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$BLOB" "${loc}${sep}digest=sha256:$SHA"
    t1=$(date +%s.%N)
    c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    awk -v b="$bin" -v t="$(echo "$t1 - $t0" | bc -l)" -v c="$(( c1 - c0 ))" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s %.0f MB/s, server CPU %.2f s/GB, load %s\n", b, 1073.741824 / t, c / 100 / 1.073741824, l }'
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$d"
}

for round in 1 2; do
  for bin in "$@"; do push_with "$bin"; done
done
