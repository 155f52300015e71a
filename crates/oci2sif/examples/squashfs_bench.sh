#!/usr/bin/env bash
# Interleaved comparison of squashfs writers on one directory: our writer, backhand,
# mksquashfs and tar2sqfs, gzip and zstd-3, wall time + CPU + peak RSS (/usr/bin/time -v).
#
#   crates/oci2sif/examples/squashfs_bench.sh ROOTFS_DIR [REPETITIONS] [WORK_DIR]
#
# A Debian minbase rootfs (`debootstrap --variant=minbase bookworm DIR`, ~200 MB) is the
# reference tree of docs/performance-targets.md. Caches are dropped before each run (root).
set -euo pipefail
src=${1:?usage: $0 ROOTFS_DIR [REPETITIONS] [WORK_DIR]}
reps=${2:-3}
work=${3:-$(mktemp -d)}
repo=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-/work/target-oci2sif}
(cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release -q -p oci2sif --example squashfs_bench)
bench=$target/release/examples/squashfs_bench
tar -C "$src" --numeric-owner -cf "$work/rootfs.tar" .

measure() { # name, command...
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  # warm the inputs, as a real build has them (a freshly written spool or tar)
  cat "$work/rootfs.tar" > /dev/null
  tar -C "$src" -cf - . | cat > /dev/null
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" > "$work/out" 2>&1 || { cat "$work/out"; return 1; }
  read -r wall user sys rss < "$work/time"
  extra=$(grep -o 'write=[0-9.]*s write_cpu=[0-9.]*s' "$work/out" || true)
  size=$(stat -c %s "$work/image" 2>/dev/null || echo 0)
  printf '%-28s wall=%6.2fs cpu=%6.2fs rss=%4d MiB image=%d %s\n' "$name" "$wall" \
    "$(echo "$user + $sys" | bc)" $((rss / 1024)) "$size" "$extra"
  rm -f "$work/image"
}

for rep in $(seq "$reps"); do
  echo "--- repetition $rep"
  measure "ours gzip-9 (2 thr)" "$bench" "$src" "$work/image" --comp gzip --level 9 --threads 2 --work "$work"
  measure "mksquashfs gzip-9" mksquashfs "$src" "$work/image" -noappend -quiet -no-progress -comp gzip -processors 2
  measure "tar2sqfs gzip-9 -j 2" sh -c "tar2sqfs -q -f -c gzip -X level=9 -j 2 '$work/image' < '$work/rootfs.tar'"
  measure "ours zstd-3 (2 thr)" "$bench" "$src" "$work/image" --comp zstd --level 3 --threads 2 --work "$work"
  measure "mksquashfs zstd-3" mksquashfs "$src" "$work/image" -noappend -quiet -no-progress -comp zstd -Xcompression-level 3 -processors 2
  measure "tar2sqfs zstd-3 -j 2" sh -c "tar2sqfs -q -f -c zstd -X level=3 -j 2 '$work/image' < '$work/rootfs.tar'"
  if [ "$rep" = 1 ]; then
    measure "backhand zstd-3" "$bench" "$src" "$work/image" --writer backhand --comp zstd --level 3 --work "$work"
    measure "backhand gzip-9" "$bench" "$src" "$work/image" --writer backhand --comp gzip --level 9 --work "$work"
  fi
done
