#!/usr/bin/env python3
"""Turns bench/sif-serve.sh's raw lines into a markdown table (medians, with every repetition)."""

import statistics, sys
from collections import defaultdict
r = defaultdict(list)
notes = []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        notes.append(line[2:].strip()); continue
    who, img, c, rep, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    if int(d["errors"]):
        sys.exit(f"errors in {line}")
    r[(img, c, who)].append(int(d["bytes"]) / (int(d["duration_us"]) / 1e6) / 1e6)
print("; ".join(notes))
print()
print("| SIF | clients | hpc-registry /sif/<digest>, MB/s | nginx (sendfile), MB/s | ours / nginx | goal |")
print("|---|---|---|---|---|---|")
for img in ("minbase", "busybox"):
    for c in ("c=1", "c=32"):
        o, n = r[(img, c, "ours")], r[(img, c, "nginx")]
        if not o:
            continue
        om, nm = statistics.median(o), statistics.median(n)
        fmt = lambda xs: "/".join(f"{x:,.0f}" for x in xs)
        print(f"| {img} | {c[2:]} | {om:,.0f} ({fmt(o)}) | {nm:,.0f} ({fmt(n)}) | {om / nm:.0%} | ≥ 90% |")
