#!/usr/bin/env python3
"""Turns bench/sif-build.sh's raw lines into markdown tables (medians, with every repetition)."""

import statistics
import sys
from collections import defaultdict

# Issue 11 point 6: absolute goals for zstd-3, "within 1.2x of the floor" for gzip-9, and a
# peak RSS below 256 MiB per build.
GOALS = {
    ("minbase", "zstd-3"): 1.0,
    ("multilayer", "zstd-3"): 2.5,
}
FLOOR_FACTOR = {"gzip-9": 1.2}
RSS_GOAL_MIB = 256

runs = defaultdict(list)
ready = []
images, header, same = {}, [], []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("# image "):
        _, _, name, rest = line.split(" ", 3)
        images[name] = rest
    elif line.startswith("# same-bytes "):
        same.append(line[len("# same-bytes "):])
    elif line.startswith("#"):
        header.append(line[2:])
    elif line.startswith(("ours ", "pipeline ", "build ", "base ", "floor ")):
        tool, img, comp, *kv = line.split()
        d = dict(x.split("=", 1) for x in kv)
        runs[(img, comp, tool)].append(d)
    elif line.startswith("push-to-ready"):
        d = dict(x.split("=", 1) for x in line.split()[2:])
        ready.append(d)


def med(rs, key, digits=2):
    xs = [float(r[key]) for r in rs if key in r]
    if not xs:
        return "–", "", None
    return f"{statistics.median(xs):.{digits}f}", "/".join(f"{x:.{digits}f}" for x in xs), statistics.median(xs)


def cell(rs, key="build_s", digits=2):
    m, a, _ = med(rs, key, digits)
    return f"{m} ({a})" if rs else "–"


def goal(img, comp, build, floor, rss):
    parts = []
    if (img, comp) in GOALS and build is not None:
        g = GOALS[(img, comp)]
        parts.append(f"≤ {g} s {'✅' if build <= g else '**no**'}")
    if comp in FLOOR_FACTOR and build is not None and floor:
        f = FLOOR_FACTOR[comp]
        parts.append(f"≤ {f}× floor {'✅' if build <= f * floor else '**no**'}")
    if rss is not None:
        parts.append(f"RSS < {RSS_GOAL_MIB} MiB {'✅' if rss < RSS_GOAL_MIB else '**no**'}")
    return "; ".join(parts)


print("Loads while running: " + "; ".join(header))
print()
print("| image | compression | ours (build), s | baseline, s | floor (tar2sqfs -j 2), s | pipeline, s | ours / floor | CPU s ours / base / floor / pipeline | peak RSS MiB ours / base / floor / pipeline | goal |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (img, comp) in dict.fromkeys((i, c) for (i, c, _) in runs):
    b, base, fl, p = (runs.get((img, comp, t), []) for t in ("build", "base", "floor", "pipeline"))
    if not b:
        continue
    bv, flv = med(b, "build_s")[2], med(fl, "build_s")[2]
    ratio = f"{bv / flv:.2f}×" if flv else "–"
    cpu = " / ".join(med(rs, "cpu_s")[0] for rs in (b, base, fl, p))
    rss = " / ".join(med(rs, "rss_mib", 0)[0] for rs in (b, base, fl, p))
    print(f"| {img} ({images.get(img, '')}) | {comp} | **{cell(b)}** | {cell(base)} | {cell(fl)} | {cell(p)} | {ratio} | {cpu} | {rss} | {goal(img, comp, bv, flv, med(b, 'rss_mib')[2])} |")

print()
print("Our build's phases (medians, s): unpack (decompress + apply the layers, compressing the full blocks of large files as they come), squashfs (add /.singularity.d, compress the fragments, write the squashfs in place inside the SIF), SIF (the header and descriptors, then the finished file read back once to hash it):")
print()
for (img, comp, tool), rs in runs.items():
    if tool == "build":
        print(f"- {img} {comp}: unpack {med(rs, 'unpack_s')[0]}, squashfs {med(rs, 'squashfs_s')[0]}, SIF {med(rs, 'sif_s')[0]}")
if same:
    print()
    print("Reproducible zstd-3 SIFs, SHA-256 of ours and of the baseline (equal: the same bytes):")
    print()
    for s in same:
        print(f"- {s}")
print()
print("Pipeline step times (skopeo copy, umoci raw unpack, mksquashfs, siftool new, siftool add), medians, s:")
print()
for (img, comp, tool), rs in runs.items():
    if tool != "pipeline":
        continue
    steps = list(zip(*[[float(x) for x in r["steps_s"].split(",")] for r in rs]))
    print(f"- {img} {comp}: " + ", ".join(f"{statistics.median(s):.2f}" for s in steps))

server = [(k, rs) for k, rs in runs.items() if k[2] == "ours"]
if server:
    print()
    print("Through the server (push returned → /sif status ready; peak RSS is the server's VmHWM), medians, s:")
    print()
    for (img, comp, _), rs in server:
        print(f"- {img} {comp}: {cell(rs)}, RSS {med(rs, 'rss_mib', 0)[0]} MiB, push {med(rs, 'push_s')[0]}")
if ready:
    print()
    m, a, _ = med(ready, "ready_after_push_s", 3)
    pm, _, _ = med(ready, "push_s", 3)
    print(f"Push → ready, busybox, gzip-9: median {m} s after `skopeo copy` returned (all: {a}); the push itself took {pm} s. Goal: < 1 s.")
