# Sourced by bench/sif-build.sh, bench/sif-serve.sh and bench/sif-herd.sh: builds the benchmark
# images once into the OCI layout $CACHE/oci (tags busybox, minbase, multilayer, and randomN:
# busybox plus N MiB of incompressible random bytes, so the SIF is about N MiB whatever the
# compression). Needs $CACHE, $WORK and log().
oci_image() { # name: makes $CACHE/oci:<name> (an OCI layout holding all images)
  local name=$1 b=$WORK/bundle-$1
  if [ -f "$CACHE/$name.done" ]; then return; fi
  [ -d "$CACHE/oci" ] || umoci init --layout "$CACHE/oci"
  log "building image $name (once; cached in $CACHE)"
  case $name in
    random[0-9]*)
      local mib=${name#random}
      umoci new --image "$CACHE/oci:$name"
      umoci unpack --rootless --image "$CACHE/oci:$name" "$b"
      mkdir -p "$b/rootfs/bin" "$b/rootfs/data"
      cp /bin/busybox "$b/rootfs/bin/busybox"; ln -s busybox "$b/rootfs/bin/sh"
      head -c "$((mib << 20))" /dev/urandom > "$b/rootfs/data/random.bin"
      umoci repack --image "$CACHE/oci:$name" "$b"
      umoci config --image "$CACHE/oci:$name" --config.cmd /bin/sh --config.env PATH=/bin --architecture amd64 --os linux
      ;;
    busybox)
      umoci new --image "$CACHE/oci:busybox"
      umoci unpack --rootless --image "$CACHE/oci:busybox" "$b"
      mkdir -p "$b/rootfs/bin"
      cp /bin/busybox "$b/rootfs/bin/busybox"; ln -s busybox "$b/rootfs/bin/sh"
      umoci repack --image "$CACHE/oci:busybox" "$b"
      umoci config --image "$CACHE/oci:busybox" --config.cmd /bin/sh --config.env PATH=/bin --architecture amd64 --os linux
      ;;
    minbase)
      local src=${MINBASE_DIR:-$CACHE/minbase-rootfs}
      if [ ! -x "$src/bin/bash" ]; then
        command -v debootstrap >/dev/null || apt-get install -y debootstrap
        log "debootstrap --variant=minbase bookworm $src"
        debootstrap --variant=minbase bookworm "$src" >"$CACHE/debootstrap.log" 2>&1
      fi
      umoci new --image "$CACHE/oci:minbase"
      umoci unpack --rootless --image "$CACHE/oci:minbase" "$b"
      cp -a "$src/." "$b/rootfs/"
      umoci repack --image "$CACHE/oci:minbase" "$b"
      umoci config --image "$CACHE/oci:minbase" --config.cmd /bin/bash --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --architecture amd64 --os linux
      ;;
    multilayer)
      oci_image minbase
      umoci tag --image "$CACHE/oci:minbase" multilayer-wip
      for dirs in "/usr/include" "/usr/lib/gcc" "/usr/share/locale" "/usr/lib/python3.11 /usr/lib/python3" "/usr/libexec /usr/share/perl"; do
        rm -rf "$b"
        umoci unpack --rootless --image "$CACHE/oci:multilayer-wip" "$b"
        for d in $dirs; do mkdir -p "$b/rootfs$(dirname "$d")"; rm -rf "$b/rootfs$d"; cp -a "$d" "$b/rootfs$d"; done
        umoci repack --image "$CACHE/oci:multilayer-wip" "$b"
      done
      # a last layer of whiteouts: delete part of what earlier layers added
      rm -rf "$b"
      umoci unpack --rootless --image "$CACHE/oci:multilayer-wip" "$b"
      rm -rf "$b/rootfs/usr/share/locale/"[a-f]* "$b/rootfs/usr/include/linux" "$b/rootfs/var/cache/apt"
      umoci repack --image "$CACHE/oci:multilayer-wip" "$b"
      umoci config --image "$CACHE/oci:multilayer-wip" --tag multilayer --config.cmd /bin/bash --architecture amd64 --os linux
      umoci rm --image "$CACHE/oci:multilayer-wip"
      ;;
  esac
  umoci gc --layout "$CACHE/oci"
  rm -rf "$b"
  touch "$CACHE/$name.done"
}

image_stats() { # name → "layers=N compressed=MB"
  python3 - "$CACHE/oci" "$1" <<'EOF'
import json, sys, os
layout, tag = sys.argv[1], sys.argv[2]
idx = json.load(open(os.path.join(layout, "index.json")))
desc = next(m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
man = json.load(open(blob(desc["digest"])))
print(f"layers={len(man['layers'])} compressed_MB={sum(l['size'] for l in man['layers'])/1e6:.0f}")
EOF
}

