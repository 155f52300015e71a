#!/usr/bin/env python3
"""Storage benchmark: two hpc-registry builds (a baseline, e.g. main, and a candidate) and
CNCF distribution 2.8 side by side on loopback, fresh data dirs, in the same run, interleaved,
medians of REPS repetitions. It measures what the storage layer decides: verified blob pushes
(throughput and server CPU per GB, monolithic and chunked), blob downloads (one client, and 64
clients with wrk) and SIF downloads (`/sif/<digest>`, 1 and 64 clients).

    sudo python3 bench/storage-ab.py --base BIN --new BIN [--reps 3] [--json OUT]

MB = 10^6 bytes. Push figures as in bench/registry.py (POST to the PUT's 201, page cache dropped
first; server CPU = utime+stime of the server process over the push). "pull, 1 client" reads a
256 MiB blob just pushed (page cache warm) into memory and checks its digest. The 64-client
figures are wrk (2 threads) against one 64 MiB blob and one SIF (an image whose one layer holds
64 MiB of random bytes, built by the server's own farm, zstd level 3), for DURATION seconds each.
Distribution serves no SIFs; it is in the push and blob columns only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import cpu_seconds, drop_caches, loadavg, log, machine_info, median, which_or_die, wrk  # noqa: E402
from registry import OCI_MANIFEST, Conn, NoAuth, push_blob, sha256  # noqa: E402

MIB = 1 << 20


def fresh(buf, tag):
    buf[0:32] = hashlib.sha256(tag.encode()).digest()
    return sha256(buf)


def push(server, buf, tag, chunk):
    drop_caches()
    digest = fresh(buf, tag)
    conn = Conn(server)
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    push_blob(conn, "big/blob", buf, digest, chunk=chunk)
    secs = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    conn.close()
    return digest, len(buf) / secs / 1e6, cpu / (len(buf) / 1e9)


def pull(server, digest, into):
    conn = Conn(server)
    t0 = time.perf_counter()
    _, n = conn.req("GET", f"/v2/big/blob/blobs/{digest}", expect=(200,), into=memoryview(into))
    secs = time.perf_counter() - t0
    conn.close()
    if n != len(into) or sha256(memoryview(into)[:n]) != digest:
        raise RuntimeError(f"{server.name}: pulled blob does not match")
    return len(into) / secs / 1e6


def sif_image(seed, mib):
    """An image whose single layer is a tar.gz holding `mib` MiB of random bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        payload = os.urandom(mib * MIB)
        info = tarfile.TarInfo("data/random.bin")
        info.size, info.mtime, info.mode = len(payload), 1700000000, 0o644
        tf.addfile(info, io.BytesIO(payload))
    tar = raw.getvalue()
    layer = gzip.compress(tar, compresslevel=1, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"bench.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer), "size": len(layer)}],
    }, separators=(",", ":")).encode()
    return config, layer, manifest


def push_image(server, repo, image):
    conn = Conn(server)
    config, layer, manifest = image
    for blob in (config, layer):
        push_blob(conn, repo, blob, sha256(blob))
    conn.req("PUT", f"/v2/{repo}/manifests/1", body=manifest, headers={"Content-Type": OCI_MANIFEST}, expect=(201,))
    conn.close()
    return sha256(manifest)


def wait_sif(server, digest, timeout=600):
    out = subprocess.run([sys.executable, os.path.join(common.BENCH_DIR, "wait_ready.py"), str(server.port),
                          digest, str(timeout)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.split(" ", 3)[3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="baseline hpc-registry binary")
    ap.add_argument("--new", required=True, help="candidate hpc-registry binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--wrk-blob-mib", type=int, default=64)
    ap.add_argument("--sif-mib", type=int, default=64)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    which_or_die("docker-registry", "wrk")
    info = machine_info()
    log(f"machine: {info}")
    work = tempfile.mkdtemp(prefix="bench-storage-")
    servers, res = [], {}
    farm = {"workers": 1, "compression": "zstd", "compression_level": 3}
    try:
        common.OURS_BIN = args.base
        base = common.start_ours(work, farm=farm, name="base")
        common.OURS_BIN = args.new
        new = common.start_ours(work, farm=farm, name="new")
        dist = common.start_distribution(work)
        servers = [base, new, dist]
        for s in servers:
            s.auth = NoAuth()  # anonymous: both builds run --dev, distribution without auth
        for s in servers:
            res[s.name] = {}

        def add(s, k, v):
            res[s.name].setdefault(k, []).append(v)

        def order(rep):
            return servers if rep % 2 == 0 else servers[::-1]

        # The SIF images first: their builds finish before anything is timed.
        sif_paths = {}
        for s in (base, new):
            digest = push_image(s, "bench/sif", sif_image(s.name, args.sif_mib))
            status = wait_sif(s, digest)
            sif_paths[s.name] = f"/sif/{digest}"
            log(f"{s.name}: SIF ready: {json.dumps(status)[:200]}")
        buf = bytearray(os.urandom(args.blob_mib * MIB))
        pullbuf = bytearray(len(buf))
        wbuf = bytearray(os.urandom(args.wrk_blob_mib * MIB))
        wrk_blob = {}
        for s in servers:
            d = fresh(wbuf, f"wrk-{s.name}")
            conn = Conn(s)
            push_blob(conn, "big/blob", wbuf, d)
            conn.close()
            wrk_blob[s.name] = f"/v2/big/blob/blobs/{d}"
        del wbuf
        res["loads"] = [("start", loadavg())]
        for rep in range(args.reps):
            for s in order(rep):
                for mode, chunk in (("mono", None), ("chunked", args.chunk_mib * MIB)):
                    digest, mbps, cpu_gb = push(s, buf, f"{s.name}-{mode}-{rep}-{time.time()}", chunk)
                    add(s, f"push_{mode}", mbps)
                    add(s, f"push_{mode}_cpu_gb", cpu_gb)
                    log(f"rep {rep} {s.name:12} push {mode:7} {mbps:6.0f} MB/s  {cpu_gb:.2f} CPU-s/GB")
                add(s, "pull_1", pull(s, digest, pullbuf))
                log(f"rep {rep} {s.name:12} pull 1 client {res[s.name]['pull_1'][-1]:6.0f} MB/s")
        res["loads"].append(("downloads", loadavg()))
        for rep in range(args.reps):
            for s in order(rep):
                for c in (1, 64):
                    paths = [("blob", wrk_blob[s.name])]
                    if s.name in sif_paths:
                        paths.append(("sif", sif_paths[s.name]))
                    for what, path in paths:
                        if c == 1 and what == "blob":
                            continue  # the python pull above is the 1-client blob figure
                        cpu0 = cpu_seconds(s.pid)
                        r = wrk(f"http://127.0.0.1:{s.port}{path}", c, args.duration, threads=1 if c == 1 else 2)
                        errors = sum(r[k] for k in ("errors_status", "errors_connect", "errors_read", "errors_timeout"))
                        if errors:
                            raise RuntimeError(f"{s.name} {what} c={c}: wrk errors {r}")
                        add(s, f"{what}_{c}", r["mbps"])
                        add(s, f"{what}_{c}_cpu_gb", (cpu_seconds(s.pid) - cpu0) / (r["bytes"] / 1e9))
                        log(f"rep {rep} {s.name:12} {what} c={c:2} {r['mbps']:6.0f} MB/s")
        res["loads"].append(("end", loadavg()))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, **res}, f, indent=1)
    rows = [
        ("blob push 256 MiB monolithic, MB/s", "push_mono", 0),
        ("… server CPU, s/GB", "push_mono_cpu_gb", 2),
        (f"blob push 256 MiB chunked ({args.chunk_mib} MiB PATCHes), MB/s", "push_chunked", 0),
        ("… server CPU, s/GB", "push_chunked_cpu_gb", 2),
        ("blob pull 256 MiB, 1 client, MB/s", "pull_1", 0),
        (f"blob GET {args.wrk_blob_mib} MiB, 64 clients (wrk), MB/s", "blob_64", 0),
        ("… server CPU, s/GB", "blob_64_cpu_gb", 2),
        (f"SIF GET (~{args.sif_mib} MiB), 1 client (wrk), MB/s", "sif_1", 0),
        (f"SIF GET (~{args.sif_mib} MiB), 64 clients (wrk), MB/s", "sif_64", 0),
        ("… server CPU, s/GB", "sif_64_cpu_gb", 2),
    ]
    print(f"\nmachine: {info}; loads: {res['loads']}\n")
    print("| figure | baseline | candidate | distribution 2.8 |")
    print("|---|---|---|---|")
    for label, k, dig in rows:
        cells = []
        for name in ("base", "new", "distribution"):
            v = res[name].get(k, [])
            cells.append(f"{median(v):,.{dig}f} ({'/'.join(f'{x:.{dig}f}' for x in v)})" if v else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
