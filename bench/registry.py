#!/usr/bin/env python3
"""Registry benchmark: CNCF distribution 2.8 (Debian's docker-registry) vs hpc-registry, side by
side on loopback, fresh data dirs, in the same run, interleaved, medians of REPS repetitions.

    sudo python3 bench/registry.py [--reps 3] [--blob-mib 256] [--duration 10] [--json OUT]

Needs: target/release/hpc-registry (cargo build --release), docker-registry, wrk; root for
dropping the page cache before each big-blob repetition. Prints a markdown table on stdout.

What each figure is (MB = 10^6 bytes):
- push, monolithic: POST /blobs/uploads/ then one PUT ?digest= with the whole 256 MiB body;
  timed from the POST to the PUT's 201 (the server has hashed, verified and stored it).
- push, chunked: POST, 16 PATCHes of 16 MiB with Content-Range, then PUT ?digest=.
- pull: GET of the blob just pushed (so from the page cache), read into memory.
- manifest GET by tag: wrk, 64 connections, 1 thread, fixed duration.
- small images: N images (random config + one ~1 KiB-file tar.gz layer + OCI manifest), each in
  its own repository, pushed by 16 threads over keep-alive connections like containers/image
  does: HEAD blob, POST upload, PUT ?digest= with the body, for config and layer, then PUT manifest.
- tag list: 1000 tags in one repository. Paging walks ?n=100 following Link (wrk cycles over
  the page URLs); the full list is one GET without n. Catalog is GET /v2/_catalog?n=1000.
- server CPU per GB pushed: utime+stime delta of the server process over the big-blob pushes.
- peak RSS: VmHWM of each server at the end of the whole run.
Every hpc-registry figure here is with SIF workers off ([farm] workers = 0): build jobs are still
enqueued for each pushed image, but no build competes with the registry for the two cores.
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import queue
import resource
import shutil
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    add_query, cpu_seconds, drop_caches, loadavg, log, machine_info, median, start_distribution,
    start_ours, url_path, vmhwm_mib, which_or_die, wrk,
)

MIB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Conn:
    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=120, blocksize=MIB)

    def req(self, method, path, body=None, headers=None, expect=None, into=None):
        h = dict(headers or {})
        if body is not None:
            h.setdefault("Content-Length", str(len(body)))
        elif method in ("PUT", "POST", "PATCH"):
            h.setdefault("Content-Length", "0")
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        if into is not None and r.status == 200:
            n = 0
            while True:
                k = r.readinto(into[n:])
                if not k:
                    break
                n += k
            data = n
        else:
            data = r.read()
        if expect and r.status not in expect:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return r, data

    def close(self):
        self.c.close()


def push_blob(conn, repo, data, digest, chunk=None):
    r, _ = conn.req("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    loc = url_path(r.getheader("Location"))
    if chunk is None:
        conn.req("PUT", add_query(loc, "digest", digest), body=data,
                 headers={"Content-Type": "application/octet-stream"}, expect=(201,))
        return
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        part = view[start:start + chunk]
        r, _ = conn.req("PATCH", loc, body=part, expect=(202,), headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(part) - 1}"})
        loc = url_path(r.getheader("Location"))
    conn.req("PUT", add_query(loc, "digest", digest), expect=(201,))


def fresh_blob(buf, tag):
    """Makes the shared buffer a new blob (new first bytes) and returns its digest."""
    stamp = hashlib.sha256(tag.encode()).digest()
    buf[0:32] = stamp
    return sha256(buf)


def bench_big_blob(server, buf, rep, mode, chunk_mib):
    drop_caches()
    repo = f"big/{mode}"
    digest = fresh_blob(buf, f"{server.name}-{mode}-{rep}-{time.time()}")
    conn = Conn(server.port)
    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    push_blob(conn, repo, buf, digest, chunk=None if mode == "mono" else chunk_mib * MIB)
    secs = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    conn.close()
    return {"mbps": len(buf) / secs / 1e6, "secs": secs, "cpu": cpu, "bytes": len(buf), "repo": repo, "digest": digest}


def bench_pull(server, repo, digest, size, into):
    conn = Conn(server.port)
    into = memoryview(into)
    t0 = time.perf_counter()
    _, n = conn.req("GET", f"/v2/{repo}/blobs/{digest}", expect=(200,), into=into)
    secs = time.perf_counter() - t0
    conn.close()
    if n != size:
        raise RuntimeError(f"pull got {n} bytes, expected {size}")
    if sha256(into[:n]) != digest:
        raise RuntimeError("pulled blob does not match its digest")
    return {"mbps": size / secs / 1e6, "secs": secs}


def make_layer(seed):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        payload = hashlib.sha256(seed.encode()).digest() * 32  # 1 KiB
        info = tarfile.TarInfo(f"data/{seed}.bin")
        info.size, info.mtime, info.mode = len(payload), 1700000000, 0o644
        tf.addfile(info, io.BytesIO(payload))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), sha256(tar)


def make_image(seed):
    layer, diff_id = make_layer(seed)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"bench.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer), "size": len(layer)}],
    }, separators=(",", ":")).encode()
    return config, layer, manifest


def push_small_image(conn, repo, tag, image):
    config, layer, manifest = image
    for blob in (config, layer):
        d = sha256(blob)
        r, _ = conn.req("HEAD", f"/v2/{repo}/blobs/{d}", expect=(200, 404))
        if r.status == 404:
            r, _ = conn.req("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
            conn.req("PUT", add_query(url_path(r.getheader("Location")), "digest", d), body=blob,
                     headers={"Content-Type": "application/octet-stream"}, expect=(201,))
    conn.req("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
             headers={"Content-Type": OCI_MANIFEST}, expect=(201,))


def run_parallel(port, jobs, workers, fn):
    """Runs fn(conn, job) for every job on `workers` threads with one keep-alive connection each."""
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    errors = []

    def worker():
        conn = Conn(port)
        try:
            while True:
                try:
                    j = q.get_nowait()
                except queue.Empty:
                    return
                fn(conn, j)
        except Exception as e:  # noqa: BLE001 - reported after the run
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return secs


def bench_small_images(server, rep, count, workers):
    images = [make_image(f"{server.name}-{rep}-{i}") for i in range(count)]
    cpu0 = cpu_seconds(server.pid)
    secs = run_parallel(server.port, list(enumerate(images)), workers,
                        lambda c, j: push_small_image(c, f"small{rep}/img{j[0]:03d}", "v1", j[1]))
    return {"ips": count / secs, "secs": secs, "cpu_ms_per_image": (cpu_seconds(server.pid) - cpu0) / count * 1000}


def setup_tags(server, count):
    image = make_image(f"tags-{server.name}")
    conn = Conn(server.port)
    push_small_image(conn, "tags/many", "t0000", image)
    conn.close()
    t0 = time.perf_counter()
    run_parallel(server.port, [f"t{i:04d}" for i in range(1, count)], 8,
                 lambda c, tag: c.req("PUT", f"/v2/tags/many/manifests/{tag}", body=image[2],
                                      headers={"Content-Type": OCI_MANIFEST}, expect=(201,)))
    return {"tag_puts_per_s": (count - 1) / (time.perf_counter() - t0)}


def walk_tags(server, n):
    """Follows Link from ?n=N; returns the page paths and the tags seen."""
    conn = Conn(server.port)
    path = f"/v2/tags/many/tags/list?n={n}"
    pages, tags = [], []
    while path and len(pages) < 1000:
        pages.append(path)
        r, body = conn.req("GET", path, expect=(200,))
        tags += json.loads(body)["tags"] or []
        link = r.getheader("Link")
        path = url_path(link.split(";")[0].strip().strip("<>")) if link else None
    conn.close()
    return pages, tags


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`), so each phase gets its own peak."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5\n")


def wrk_cpu(server, *args, **kw):
    """wrk() plus the server's CPU time per request, in microseconds."""
    cpu0 = cpu_seconds(server.pid)
    r = wrk(*args, **kw)
    r["cpu_us_per_req"] = (cpu_seconds(server.pid) - cpu0) / max(r["requests"], 1) * 1e6
    return r


def fmt(x, digits=0):
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--json", help="write all raw figures here")
    ap.add_argument("--workdir", help="keep data here (default: a temp dir, removed)")
    args = ap.parse_args()
    which_or_die("docker-registry", "wrk")

    info = machine_info()
    log(f"machine: {info}")
    work = args.workdir or tempfile.mkdtemp(prefix="bench-registry-")
    os.makedirs(work, exist_ok=True)
    servers = []
    raw = {"machine": info, "loads": [], "dist": {}, "ours": {}}
    try:
        dist = start_distribution(work)
        ours = start_ours(work, farm={"workers": 0})
        servers = [dist, ours]
        key = {dist.name: "dist", ours.name: "ours"}
        res = {k: {} for k in ("dist", "ours")}

        def add(s, figure, value):
            res[key[s.name]].setdefault(figure, []).append(value)

        def order(rep):  # interleave, alternating who goes first
            return servers if rep % 2 == 0 else servers[::-1]

        def phase(name):
            """Records each server's peak RSS since the last phase began, then resets it."""
            for s in servers:
                res[key[s.name]][f"rss_{name}"] = [vmhwm_mib(s.pid)]
                reset_hwm(s.pid)

        phase("startup")

        buf = bytearray(os.urandom(args.blob_mib * MIB))
        pullbuf = bytearray(len(buf))
        cpu_push = {"dist": [0.0, 0], "ours": [0.0, 0]}

        log(f"[big blobs] load {loadavg()}")
        raw["loads"].append(("big blobs", loadavg()))
        for rep in range(args.reps):
            for s in order(rep):
                for mode in ("mono", "chunked"):
                    r = bench_big_blob(s, buf, rep, mode, args.chunk_mib)
                    add(s, f"push_{mode}", r["mbps"])
                    cpu_push[key[s.name]][0] += r["cpu"]
                    cpu_push[key[s.name]][1] += r["bytes"]
                    log(f"  rep {rep} {s.name:13} push {mode:7} {r['mbps']:8.0f} MB/s  cpu {r['cpu']:.2f}s")
                    if mode == "mono":
                        c0 = cpu_seconds(s.pid)
                        p = bench_pull(s, r["repo"], r["digest"], len(buf), pullbuf)
                        add(s, "pull", p["mbps"])
                        add(s, "pull_cpu_per_gb", (cpu_seconds(s.pid) - c0) / (len(buf) / 1e9))
                        log(f"  rep {rep} {s.name:13} pull         {p['mbps']:8.0f} MB/s")
        del buf, pullbuf
        phase("big_blobs")
        for k, (cpu, b) in cpu_push.items():
            res[k]["cpu_per_gb"] = [cpu / (b / 1e9)]

        log(f"[small images] load {loadavg()}")
        raw["loads"].append(("small images", loadavg()))
        for rep in range(args.reps):
            for s in order(rep):
                r = bench_small_images(s, rep, args.images, args.workers)
                add(s, "small_ips", r["ips"])
                add(s, "small_cpu_ms", r["cpu_ms_per_image"])
                log(f"  rep {rep} {s.name:13} {r['ips']:8.1f} images/s  server cpu {r['cpu_ms_per_image']:.2f} ms/image")
        phase("small_images")

        log(f"[manifest GET] load {loadavg()}")
        raw["loads"].append(("manifest GET", loadavg()))
        for rep in range(args.reps):
            for s in order(rep):
                r = wrk_cpu(s, f"http://127.0.0.1:{s.port}/v2/small0/img000/manifests/v1", 64, args.duration,
                            headers=[ACCEPT], workdir=work)
                if r["errors"]:
                    raise RuntimeError(f"{s.name}: wrk errors {r}")
                add(s, "manifest_rps", r["rps"])
                add(s, "manifest_p99", r["p99_ms"])
                add(s, "manifest_cpu_us", r["cpu_us_per_req"])
                log(f"  rep {rep} {s.name:13} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:.2f} ms  server cpu {r['cpu_us_per_req']:.0f} µs/req")
        phase("manifest_get")

        log(f"[tags] load {loadavg()}")
        raw["loads"].append(("tags/catalog", loadavg()))
        paging = {}
        for s in servers:
            r = setup_tags(s, args.tags)
            add(s, "tag_puts_per_s", r["tag_puts_per_s"])
            pages, tags = walk_tags(s, 100)
            if sorted(set(tags)) != [f"t{i:04d}" for i in range(args.tags)]:
                raise RuntimeError(f"{s.name}: paging returned {len(tags)} tags, not the {args.tags} pushed")
            paging[s.name] = pages
            res[key[s.name]]["pages_per_walk"] = [len(pages)]
            res[key[s.name]]["tags_sorted"] = [tags == sorted(tags)]
            log(f"  {s.name:13} tag PUTs {r['tag_puts_per_s']:.0f}/s; ?n=100 walk: {len(pages)} pages, {len(tags)} tags, sorted={tags == sorted(tags)}")
            _, body = Conn(s.port).req("GET", "/v2/tags/many/tags/list", expect=(200,))
            res[key[s.name]]["full_list_len"] = [len(json.loads(body)["tags"])]
            _, body = Conn(s.port).req("GET", "/v2/_catalog?n=1000", expect=(200,))
            res[key[s.name]]["catalog_len"] = [len(json.loads(body)["repositories"])]
        for rep in range(args.reps):
            for s in order(rep):
                base = f"http://127.0.0.1:{s.port}"
                if len(paging[s.name]) > 1:
                    r = wrk_cpu(s, base + paging[s.name][0], 16, args.duration, paths=paging[s.name], workdir=work)
                    add(s, "pages_per_s", r["rps"])
                    add(s, "page_cpu_us", r["cpu_us_per_req"])
                    log(f"  rep {rep} {s.name:13} paging   {r['rps']:8.0f} pages/s  server cpu {r['cpu_us_per_req']:.0f} µs/page")
                r = wrk_cpu(s, base + "/v2/tags/many/tags/list", 16, args.duration, workdir=work)
                add(s, "full_list_per_s", r["rps"])
                add(s, "full_list_cpu_us", r["cpu_us_per_req"])
                c = wrk_cpu(s, base + "/v2/_catalog?n=1000", 16, args.duration, workdir=work)
                add(s, "catalog_per_s", c["rps"])
                add(s, "catalog_cpu_us", c["cpu_us_per_req"])
                log(f"  rep {rep} {s.name:13} full list {r['rps']:7.0f} lists/s ({r['cpu_us_per_req']:.0f} µs cpu)  catalog {c['rps']:7.0f} lists/s ({c['cpu_us_per_req']:.0f} µs cpu)")
        phase("lists")

        for s in servers:
            r = res[key[s.name]]
            r["peak_rss_mib"] = [max(v[0] for k, v in r.items() if k.startswith("rss_"))]
            r["total_cpu_s"] = [cpu_seconds(s.pid)]
        raw["dist"], raw["ours"] = res["dist"], res["ours"]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        raw["loadgen_python_cpu_s"] = ru.ru_utime + ru.ru_stime
        raw["loads"].append(("end", loadavg()))
    finally:
        for s in servers:
            s.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)

    d, o = raw["dist"], raw["ours"]

    def m(r, k):
        return median(r.get(k, []))

    rows = [
        ("blob push, 256 MiB monolithic, MB/s", "push_mono", 0, "≥ 1,000, and ≥ 1.5× distribution", True),
        ("blob push, 256 MiB chunked (16 MiB PATCHes), MB/s", "push_chunked", 0, "≥ 1,000, and ≥ 1.5× distribution", True),
        ("server CPU per GB pushed, s", "cpu_per_gb", 2, "≤ 0.8", False),
        ("blob pull, 256 MiB, MB/s", "pull", 0, "≥ 2,000, and ≥ 1.5× distribution", True),
        ("server CPU per GB pulled, s", "pull_cpu_per_gb", 2, "", False),
        ("manifest GET by tag, c=64, req/s", "manifest_rps", 0, "≥ 12,000, and ≥ 1.5× distribution", True),
        ("manifest GET by tag, c=64, p99 ms", "manifest_p99", 2, "≤ 10, and lower than distribution", False),
        ("server CPU per manifest GET, µs", "manifest_cpu_us", 0, "≈ 110 (Trow)", False),
        (f"{args.images} small images, {args.workers} workers, images/s", "small_ips", 1, "≥ 200, and ≥ 1.5× distribution", True),
        ("server CPU per small image, ms", "small_cpu_ms", 2, "", False),
        (f"tag list paging, n=100 over {args.tags} tags, pages/s", "pages_per_s", 0, "≥ 1,000 (distribution ignores n)", True),
        ("server CPU per page, µs", "page_cpu_us", 0, "", False),
        (f"full tag list of {args.tags} tags, c=16, lists/s", "full_list_per_s", 0, "≥ 1,000, and ≥ 1.5× distribution", True),
        ("server CPU per full tag list, µs", "full_list_cpu_us", 0, "", False),
        ("catalog (n=1000), c=16, lists/s", "catalog_per_s", 0, "≥ 2,000, and ≥ 1.5× distribution", True),
        ("server CPU per catalog list, µs", "catalog_cpu_us", 0, "", False),
        ("server peak RSS over the whole run (VmHWM), MiB", "peak_rss_mib", 1, "≤ 30, and less than distribution", False),
        ("… peak RSS during start-up, MiB", "rss_startup", 1, "", False),
        ("… peak RSS during big-blob push/pull, MiB", "rss_big_blobs", 1, "", False),
        ("… peak RSS during small-image pushes, MiB", "rss_small_images", 1, "", False),
        ("… peak RSS during manifest GETs (c=64), MiB", "rss_manifest_get", 1, "", False),
        ("… peak RSS during tag/catalog lists (c=16), MiB", "rss_lists", 1, "", False),
    ]
    print(f"\nload average at start of each phase: {raw['loads']}")
    print(f"load generator (python) CPU: {raw['loadgen_python_cpu_s']:.1f} s; wrk runs with 1 thread")
    print(f"catalog size: ours {o['catalog_len'][0]}, distribution {d['catalog_len'][0]} repositories; "
          f"full tag list length: ours {o['full_list_len'][0]}, distribution {d['full_list_len'][0]}; "
          f"?n=100 walk: ours {o['pages_per_walk'][0]} pages, distribution {d['pages_per_walk'][0]}; "
          f"tags in lexical order: ours {o['tags_sorted'][0]}, distribution {d['tags_sorted'][0]}")
    print("\n| figure | hpc-registry | distribution 2.8.2 | ours / distribution | goal |")
    print("|---|---|---|---|---|")
    for label, k, dig, goal, higher in rows:
        ov, dv = m(o, k), m(d, k)
        ratio = (ov / dv if higher else dv / ov) if dv == dv and ov == ov and dv and ov else None
        if ratio is None:
            rs = "n/a"
        elif higher:
            rs = f"{ratio:.2f}×"
        else:
            rs = f"{ratio:.2f}× lower" if ratio >= 1 else f"{1 / ratio:.2f}× higher"
        allv = lambda r: "/".join(fmt(x, dig) for x in r.get(k, []))  # noqa: E731
        print(f"| {label} | {fmt(ov, dig)} ({allv(o)}) | {fmt(dv, dig)} ({allv(d)}) | {rs} | {goal} |")


if __name__ == "__main__":
    main()
