#!/usr/bin/env python3
"""Markdown tables from bench/node-fanout.sh's raw lines (bench/results/node-fanout*.raw):
median and every run of each figure.

    python3 bench/summarize_node_fanout.py bench/results/node-fanout.raw > bench/results/node-fanout.md
"""
import statistics, sys
rows = []
header = []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        header.append(line[2:].strip())
        continue
    f = line.split()
    kv = dict(p.split("=", 1) for p in f[2:] if "=" in p)
    rows.append((f[1], kv))

def runs(kind, mode, key):
    return [float(kv[key]) for k, kv in rows if k == kind and kv.get("mode") == mode and key in kv]

def cell(xs):
    if not xs:
        return "n/a"
    # Sub-second figures (warm starts) need milliseconds.
    fmt = ".3f" if max(xs) < 1 else ".2f"
    return f"**{statistics.median(xs):{fmt}}** ({'/'.join(f'{x:{fmt}}' for x in xs)})"

print("\n".join(f"- {h}" for h in header))
for k, kv in rows:
    if k == "info":
        print(f"- {kv['bench']}: SIF {int(kv['sif_bytes'])/1e6:.1f} MB ({kv['layer_mib']} MiB random layer), push + build {kv['push_and_build_s']} s")
print()
def main_tables():
    print("| benchmark | mode | in the job, s: median (every run) | driver, s: submit → end | downloads |")
    print("|---|---|---|---|---|")
    for kind, key, modes in [("fanout", "job_s", ["all-nodes", "independent"]),
                             ("startup", "first_command_s", ["cold", "warm"])]:
        for mode in modes:
            d = sorted({kv["downloads"] for k, kv in rows if k == kind and kv.get("mode") == mode})
            print(f"| {kind} | {mode} | {cell(runs(kind, mode, key))} | {cell(runs(kind, mode, 'driver_s'))} | {','.join(d) or 'n/a'} |")
    print()
    print("fan-out phases of `--all-nodes` (in the job, s):")
    print()
    print("| phase | median (every run) |")
    print("|---|---|")
    for key, what in [("download_s", "download + verify + publish on the batch node"),
                      ("init_sbcast_s", "`srun cache init` + `sbcast`"),
                      ("adopt_s", "`srun cache adopt` (sha256 on every node)")]:
        print(f"| {what} | {cell(runs('fanout', 'all-nodes', key))} |")
    print()
    print("independent fetches, each node's own fetch (s):")
    print()
    for k, kv in rows:
        if k == "fanout" and kv.get("mode") == "independent":
            print(f"- rep {kv['rep']}: {kv['per_node_s']}")

if any(k in ("fanout", "startup") for k, _ in rows):
    main_tables()
pieces = [kv for k, kv in rows if k == "pieces"]
if pieces:
    print()
    print("pieces of `--all-nodes`, timed one by one in one 3-node job (s):")
    print()
    print("| piece | median (every run) |")
    print("|---|---|")
    for mode in dict.fromkeys(kv["mode"] for kv in pieces):
        print(f"| {mode} | {cell(runs('pieces', mode, 's'))} |")
