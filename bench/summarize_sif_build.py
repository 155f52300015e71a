#!/usr/bin/env python3
"""Turns bench/sif-build.sh's raw lines into markdown tables (medians, with every repetition)."""

import re
import statistics
import sys
from collections import defaultdict

GOALS = {
    ("minbase", "gzip-9"): "≤ 4.9 s, RSS < 256 MiB",
    ("minbase", "zstd-3"): "≤ 0.58 s, RSS < 256 MiB",
    ("multilayer", "gzip-9"): "≤ 20 s, RSS < 256 MiB",
    ("multilayer", "zstd-3"): "≤ 2.0 s, RSS < 256 MiB",
}

runs = defaultdict(list)
ready = []
images, header = {}, []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("# image "):
        _, _, name, rest = line.split(" ", 3)
        images[name] = rest
    elif line.startswith("#"):
        header.append(line[2:])
    elif line.startswith(("ours ", "pipeline ")):
        tool, img, comp, *kv = line.split()
        d = dict(x.split("=", 1) for x in kv)
        runs[(img, comp, tool)].append(d)
    elif line.startswith("push-to-ready"):
        d = dict(x.split("=", 1) for x in line.split()[2:])
        ready.append(d)


def med(rs, key, digits=2):
    xs = [float(r[key]) for r in rs]
    return f"{statistics.median(xs):.{digits}f}", "/".join(f"{x:.{digits}f}" for x in xs), statistics.median(xs)


print("Loads while running: " + "; ".join(header))
print()
print("| image | compression | ours: push returned → SIF ready, s | pipeline, s | speedup | ours CPU, s | pipeline CPU, s | ours peak RSS, MiB | pipeline peak RSS, MiB | SIF size ours / pipeline, MB | goal |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (img, comp) in dict.fromkeys((i, c) for (i, c, _) in runs):
    o, p = runs.get((img, comp, "ours"), []), runs.get((img, comp, "pipeline"), [])
    if not o or not p:
        continue
    om, oa, ov = med(o, "build_s")
    pm, pa, pv = med(p, "build_s")
    orss = med(o, "rss_mib", 0)
    prss = med(p, "rss_mib", 0)
    osz = statistics.median(float(r["sif_bytes"]) for r in o) / 1e6
    psz = statistics.median(float(r["sif_bytes"]) for r in p) / 1e6
    ocpu = med(o, "cpu_s")[0] if all("cpu_s" in r for r in o) else "n/a"
    pcpu = med(p, "cpu_s")[0] if all("cpu_s" in r for r in p) else "n/a"
    print(f"| {img} ({images.get(img, '')}) | {comp} | {om} ({oa}) | {pm} ({pa}) | {pv / ov:.2f}× | {ocpu} | {pcpu} | "
          f"{orss[0]} ({orss[1]}) | {prss[0]} ({prss[1]}) | {osz:.1f} / {psz:.1f} | {GOALS.get((img, comp), '')} |")

print()
print("Pipeline step times (skopeo copy, umoci raw unpack, mksquashfs, siftool new, siftool add), medians, s:")
print()
for (img, comp, tool), rs in runs.items():
    if tool != "pipeline":
        continue
    steps = list(zip(*[[float(x) for x in r["steps_s"].split(",")] for r in rs]))
    print(f"- {img} {comp}: " + ", ".join(f"{statistics.median(s):.2f}" for s in steps))
print()
print("Ours: time for skopeo to push the image (before the clock starts), and the build's own duration as the worker logs it (claim → SIF written; the rest of push → ready is queueing, hashing the SIF into the store and recording it), medians, s:")
print()
for (img, comp, tool), rs in runs.items():
    if tool == "ours":
        worker = statistics.median(float(r["worker_ms"]) / 1000 for r in rs if r.get("worker_ms"))
        print(f"- {img} {comp}: push {med(rs, 'push_s')[0]}, worker {worker:.2f}")
if ready:
    print()
    m, a, _ = med(ready, "ready_after_push_s", 3)
    pm, _, _ = med(ready, "push_s", 3)
    print(f"Push → ready, busybox, gzip-9: median {m} s after `skopeo copy` returned (all: {a}); the push itself took {pm} s. Goal: < 1 s.")
