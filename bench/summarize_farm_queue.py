#!/usr/bin/env python3
"""Turns bench/farm-queue.sh's raw lines into a markdown table (medians, with every repetition).

    python3 bench/summarize_farm_queue.py bench/results/farm-queue.raw
"""

import statistics
import sys
from collections import defaultdict

WHAT = {
    "remote1": "workers = 0 + 1 builder process",
    "remote2": "workers = 0 + 2 builder processes",
    "local1": "local, workers = 1",
    "local2": "local, workers = 2",
}

runs = defaultdict(list)
header = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("#"):
        header.append(line[2:])
    elif line.startswith("queue "):
        _, config, *kv = line.split()
        runs[config].append(dict(x.split("=", 1) for x in kv))


def values(rs, f):
    return [f(r) for r in rs]


def cell(xs, digits=2):
    """Median (every repetition, in run order)."""
    return f"{statistics.median(xs):.{digits}f} ({'/'.join(f'{x:.{digits}f}' for x in xs)})"


def loads(rs):
    ones = [float(r[k].split(",")[0]) for r in rs for k in ("load_before", "load_after")]
    return f"{min(ones):.1f}–{max(ones):.1f}"


for h in header:
    print(f"<!-- {h} -->")
print()
print("| configuration | images | total s, first push → all ready (median; each rep) | images/min | "
      "CPU-s per image: server + builders = total | cores busy | first / median image ready, s | push s | "
      "built by (split) | SIF MB | 1-min load |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
order = [c for c in WHAT if c in runs] + [c for c in runs if c not in WHAT]
for config in order:
    rs = runs[config]
    n = int(rs[0]["images"])
    total = values(rs, lambda r: float(r["total_s"]))
    rate = [n * 60 / t for t in total]
    server = statistics.median(values(rs, lambda r: float(r["server_cpu_s"]) / n))
    builders = statistics.median(values(rs, lambda r: float(r["builders_cpu_s"]) / n))
    both = statistics.median(values(rs, lambda r: (float(r["server_cpu_s"]) + float(r["builders_cpu_s"])) / n))
    # CPU-seconds per wall second over the window: how much of the machine the farm kept busy.
    busy = statistics.median(values(rs, lambda r: (float(r["server_cpu_s"]) + float(r["builders_cpu_s"]))
                                    / float(r["total_s"])))
    first = statistics.median(values(rs, lambda r: float(r["first_ready_s"])))
    mid = statistics.median(values(rs, lambda r: float(r["median_ready_s"])))
    push = statistics.median(values(rs, lambda r: float(r["push_s"])))
    split = ", ".join(r["split"] for r in rs)
    sif = rs[0]["sif_MB"]
    print(f"| {config}: {WHAT.get(config, config)} | {n} | {cell(total)} | {statistics.median(rate):.1f} | "
          f"{server:.3f} + {builders:.3f} = {both:.3f} | {busy:.2f} | {first:.2f} / {mid:.2f} | {push:.2f} | {split} | "
          f"{sif} | {loads(rs)} |")
