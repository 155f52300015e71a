#!/usr/bin/env python3
"""Registry benchmark: hpc-registry vs CNCF distribution 2.8 (Debian's docker-registry), each with
authentication off and on, all four side by side on loopback, fresh data dirs, in the same run,
interleaved, medians of REPS repetitions.

    sudo python3 bench/registry.py [--reps 3] [--blob-mib 256] [--duration 10] [--json OUT]

Needs: target/release/hpc-registry (cargo build --release), docker-registry, wrk, htpasswd
(apache2-utils); root for dropping the page cache before each big-blob repetition. Prints a
markdown table on stdout.

The four servers:
- distribution, no auth;
- distribution with htpasswd auth: docker sends Basic credentials on every request to such a
  registry, and distribution checks each against its bcrypt hash (cost 5, `htpasswd -B`);
- hpc-registry with `--dev` (anonymous read-write on loopback);
- hpc-registry with auth on, as a site runs it, driven the way docker and containerd do:
  Docker's token flow, one `GET /token` with Basic credentials per repository per push (or
  per pull session), then `Authorization: Bearer` on every registry request.
Every repository is under `alice/` (the user's own namespace) on every server.

What each figure is (MB = 10^6 bytes):
- push, monolithic: POST /blobs/uploads/ then one PUT ?digest= with the whole 256 MiB body;
  timed from the POST to the PUT's 201 (the server has hashed, verified and stored it).
- push, chunked: POST, 16 PATCHes of 16 MiB with Content-Range, then PUT ?digest=.
- pull: GET of the blob just pushed (so from the page cache), read into memory; then the same
  GET again ("pull again").
- manifest GET by tag: wrk, 64 connections, 1 thread, fixed duration.
- small images: N images (random config + one ~1 KiB-file tar.gz layer + OCI manifest), each in
  its own repository, pushed by 16 threads over keep-alive connections like containers/image
  does: (a token for the repository,) HEAD blob, POST upload, PUT ?digest= with the body, for
  config and layer, then PUT manifest.
- tag list: 1000 tags in one repository. Paging walks ?n=100 following Link (wrk cycles over
  the page URLs); the full list is one GET without n. Catalog is GET /v2/_catalog?n=1000.
- login storm (auth-on servers only): 16 wrk connections GET the manifest with a valid
  credential for a fixed time; one second in, 64 different users log in at once (hpc-registry:
  `GET /token` with Basic, each paying argon2id; distribution: `GET /v2/` with Basic, each paying
  bcrypt). Reported: the manifest p99 with and without the storm, and the server's peak RSS.
- server CPU: utime+stime delta of the server process over the phase, per unit of work.
- memory: VmHWM per phase (reset with clear_refs between phases), and RssAnon / RssFile sampled
  every 20 ms from /proc/PID/status (their peaks per phase), so anonymous memory and mapped file
  pages are told apart.
Every hpc-registry figure here is with SIF workers off ([farm] workers = 0): build jobs are still
enqueued for each pushed image, but no build competes with the registry for the two cores.
"""

import argparse
import base64
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
    start_ours, status_kib, url_path, vmhwm_mib, which_or_die, wrk,
)

MIB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
USER, PASSWORD = "alice", "bench-password-alice"
NS = f"{USER}/"
def storm_users(rep):
    """The 64 users of one repetition's login storm: new ones each time, so that every login
    pays argon2id (a repeated login would be answered from the verified-credential cache)."""
    return [(f"storm{rep}u{i:02d}", f"storm-password-{rep}-{i:02d}") for i in range(64)]


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def scope_of(path):
    """The Docker token scope a client asks for to use `path` (pull and push: one token per
    repository covers a whole push, as docker and containers/image ask for it)."""
    rest = path.split("?", 1)[0][len("/v2/"):]
    if rest.startswith("_catalog"):
        return "registry:catalog:*"
    for marker in ("/blobs/", "/manifests/", "/tags/"):
        i = rest.rfind(marker)
        if i > 0:
            return f"repository:{rest[:i]}:pull,push"
    return None


class NoAuth:
    def header(self, conn, path):
        return None


class BasicAuth:
    """Basic credentials on every request (how docker talks to an htpasswd registry)."""

    def __init__(self, user, password):
        self.value = basic(user, password)

    def header(self, conn, path):
        return self.value


class TokenAuth:
    """Docker's token flow: a bearer token per scope, fetched once per connection with Basic
    credentials from /token, then sent on every request."""

    def __init__(self, user, password):
        self.basic = basic(user, password)

    def token(self, conn, scope):
        q = "/token?service=hpc-registry" + (f"&scope={scope}" if scope else "")
        conn.c.request("GET", q, headers={"Authorization": self.basic})
        r = conn.c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"/token {scope}: {r.status} {body[:200]!r}")
        return json.loads(body)["token"]

    def header(self, conn, path):
        scope = scope_of(path)
        if scope not in conn.tokens:
            conn.tokens[scope] = self.token(conn, scope)
        return "Bearer " + conn.tokens[scope]


class Conn:
    def __init__(self, server):
        self.port = server.port
        self.auth = server.auth
        self.tokens = {}
        self.c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120, blocksize=MIB)

    def req(self, method, path, body=None, headers=None, expect=None, into=None):
        h = dict(headers or {})
        cred = self.auth.header(self, path)
        if cred:
            h["Authorization"] = cred
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

    def auth_header(self, path):
        """The Authorization header line for wrk, or None."""
        cred = self.auth.header(self, path)
        return f"Authorization: {cred}" if cred else None

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
    repo = f"{NS}big/{mode}"
    digest = fresh_blob(buf, f"{server.name}-{mode}-{rep}-{time.time()}")
    conn = Conn(server)
    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    push_blob(conn, repo, buf, digest, chunk=None if mode == "mono" else chunk_mib * MIB)
    secs = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    conn.close()
    return {"mbps": len(buf) / secs / 1e6, "secs": secs, "cpu": cpu, "bytes": len(buf), "repo": repo, "digest": digest}


def sqlite_heap_bytes(server):
    """The server's `hpc_registry_sqlite_memory_bytes` gauge (heap over all its connections)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith("hpc_registry_sqlite_memory_bytes "):
            return float(line.split()[1])
    raise RuntimeError("no hpc_registry_sqlite_memory_bytes in /metrics")


def bench_pull(server, repo, digest, size, into):
    conn = Conn(server)
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


def run_parallel(server, jobs, workers, fn):
    """Runs fn(conn, job) for every job on `workers` threads with one keep-alive connection each."""
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    errors = []

    def worker():
        conn = Conn(server)
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
    secs = run_parallel(server, list(enumerate(images)), workers,
                        lambda c, j: push_small_image(c, f"{NS}small{rep}/img{j[0]:03d}", "v1", j[1]))
    return {"ips": count / secs, "secs": secs, "cpu_ms_per_image": (cpu_seconds(server.pid) - cpu0) / count * 1000}


def setup_tags(server, count):
    image = make_image(f"tags-{server.name}")
    conn = Conn(server)
    push_small_image(conn, f"{NS}tags/many", "t0000", image)
    conn.close()
    t0 = time.perf_counter()
    run_parallel(server, [f"t{i:04d}" for i in range(1, count)], 8,
                 lambda c, tag: c.req("PUT", f"/v2/{NS}tags/many/manifests/{tag}", body=image[2],
                                      headers={"Content-Type": OCI_MANIFEST}, expect=(201,)))
    return {"tag_puts_per_s": (count - 1) / (time.perf_counter() - t0)}


def walk_tags(server, n):
    """Follows Link from ?n=N; returns the page paths and the tags seen."""
    conn = Conn(server)
    path = f"/v2/{NS}tags/many/tags/list?n={n}"
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


class RssSampler(threading.Thread):
    """Samples RssAnon and RssFile of each server every 20 ms; `take()` returns the peaks since
    the last call (the kernel keeps a peak only of their sum, VmHWM)."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.lock = threading.Lock()
        self.peaks = {s.name: {"anon": 0, "file": 0} for s in servers}
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.02):
            for s in self.servers:
                try:
                    anon, file = status_kib(s.pid, "RssAnon"), status_kib(s.pid, "RssFile")
                except OSError:
                    continue
                with self.lock:
                    p = self.peaks[s.name]
                    p["anon"], p["file"] = max(p["anon"], anon), max(p["file"], file)

    def take(self, server):
        with self.lock:
            p = self.peaks[server.name]
            out = (p["anon"] / 1024, p["file"] / 1024)
            p["anon"], p["file"] = 0, 0
        return out


def wrk_cpu(server, *args, **kw):
    """wrk() plus the server's CPU time per request, in microseconds."""
    cpu0 = cpu_seconds(server.pid)
    r = wrk(*args, **kw)
    r["cpu_us_per_req"] = (cpu_seconds(server.pid) - cpu0) / max(r["requests"], 1) * 1e6
    return r


def wrk_headers(server, path, extra=()):
    conn = Conn(server)
    h = conn.auth_header(path)
    conn.close()
    return list(extra) + ([h] if h else [])


def login_storm(server, users):
    """64 logins at once, each a different user: returns the slowest login's seconds."""
    def login(user, password, out, i):
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        path = ("/token?service=hpc-registry&scope=repository:alice/small0/img000:pull"
                if server.kind == "ours" else "/v2/")
        t0 = time.perf_counter()
        c.request("GET", path, headers={"Authorization": basic(user, password)})
        r = c.getresponse()
        r.read()
        out[i] = (r.status, time.perf_counter() - t0)
        c.close()

    out = [None] * len(users)
    threads = [threading.Thread(target=login, args=(u, p, out, i)) for i, (u, p) in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [o for o in out if o[0] != 200]
    if bad:
        raise RuntimeError(f"{server.name}: storm logins failed: {bad[:3]}")
    return max(o[1] for o in out)


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
    ap.add_argument("--list-duration", type=int, default=5, help="seconds per wrk run of the list phases")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated server keys to run (dist,dist-auth,ours,ours-auth)")
    ap.add_argument("--phases", default="blobs,small,manifest,lists,storm", help="comma-separated phases to run")
    ap.add_argument("--baseline-bin", help="also run this hpc-registry binary (a baseline build), auth on, "
                    "as server key base-auth")
    ap.add_argument("--json", help="write all raw figures here")
    ap.add_argument("--workdir", help="keep data here (default: a temp dir, removed)")
    args = ap.parse_args()
    which_or_die("docker-registry", "wrk", "htpasswd")
    phases = set(args.phases.split(","))

    info = machine_info()
    log(f"machine: {info}")
    work = args.workdir or tempfile.mkdtemp(prefix="bench-registry-")
    os.makedirs(work, exist_ok=True)
    servers, sampler = [], None
    keys = ["dist", "dist-auth", "ours", "ours-auth"]
    if args.baseline_bin:
        keys.append("base-auth")
    if args.only:
        keys = [k for k in keys if k in args.only.split(",") or k == "base-auth"]
    raw = {"machine": info, "loads": [], **{k: {} for k in keys}}
    users = [(USER, PASSWORD)] + [u for rep in range(args.reps) for u in storm_users(rep)]
    try:
        for k in keys:
            if k == "dist":
                s = start_distribution(work)
            elif k == "dist-auth":
                s = start_distribution(work, users=users, name="distribution-htpasswd")
            elif k == "ours":
                s = start_ours(work, farm={"workers": 0})
            elif k == "base-auth":
                s = start_ours(work, farm={"workers": 0}, users=users, name="hpc-registry-baseline-auth",
                               auth={"token_ttl_secs": 3600}, binary=args.baseline_bin)
            else:
                s = start_ours(work, farm={"workers": 0}, users=users, name="hpc-registry-auth",
                               auth={"token_ttl_secs": 3600})
            s.key, s.kind = k, "ours" if k == "base-auth" else k.split("-")[0]
            s.auth = (TokenAuth(USER, PASSWORD) if k in ("ours-auth", "base-auth") else
                      BasicAuth(USER, PASSWORD) if k == "dist-auth" else NoAuth())
            servers.append(s)
        by_key = {s.key: s for s in servers}
        res = {k: {} for k in keys}
        sampler = RssSampler(servers)
        sampler.start()

        def add(s, figure, value):
            res[s.key].setdefault(figure, []).append(value)

        def order(rep):  # interleave, rotating who goes first
            k = rep % len(servers)
            return servers[k:] + servers[:k]

        def phase(name):
            """Records each server's peaks since the last phase began, then resets them."""
            for s in servers:
                anon, file = sampler.take(s)
                res[s.key][f"rss_{name}"] = [vmhwm_mib(s.pid)]
                res[s.key][f"anon_{name}"] = [anon]
                res[s.key][f"file_{name}"] = [file]
                reset_hwm(s.pid)

        time.sleep(0.1)
        phase("startup")

        if "blobs" in phases:
            buf = bytearray(os.urandom(args.blob_mib * MIB))
            pullbuf = bytearray(len(buf))
            cpu_push = {k: [0.0, 0] for k in keys}
            log(f"[big blobs] load {loadavg()}")
            raw["loads"].append(("big blobs", loadavg()))
            for rep in range(args.reps):
                for s in order(rep):
                    for mode in ("mono", "chunked"):
                        r = bench_big_blob(s, buf, rep, mode, args.chunk_mib)
                        add(s, f"push_{mode}", r["mbps"])
                        cpu_push[s.key][0] += r["cpu"]
                        cpu_push[s.key][1] += r["bytes"]
                        log(f"  rep {rep} {s.name:22} push {mode:7} {r['mbps']:8.0f} MB/s  cpu {r['cpu']:.2f}s")
                        if mode == "mono":
                            c0 = cpu_seconds(s.pid)
                            p = bench_pull(s, r["repo"], r["digest"], len(buf), pullbuf)
                            add(s, "pull", p["mbps"])
                            add(s, "pull_cpu_per_gb", (cpu_seconds(s.pid) - c0) / (len(buf) / 1e9))
                            w = bench_pull(s, r["repo"], r["digest"], len(buf), pullbuf)
                            add(s, "pull_warm", w["mbps"])
                            log(f"  rep {rep} {s.name:22} pull         {p['mbps']:8.0f} MB/s, again {w['mbps']:8.0f} MB/s")
            del buf, pullbuf
            phase("big_blobs")
            for k, (cpu, b) in cpu_push.items():
                res[k]["cpu_per_gb"] = [cpu / (b / 1e9)]

        log(f"[small images] load {loadavg()}")
        raw["loads"].append(("small images", loadavg()))
        for rep in range(args.reps if "small" in phases else 1):
            for s in order(rep):
                r = bench_small_images(s, rep, args.images if "small" in phases else 1, args.workers)
                add(s, "small_ips", r["ips"])
                add(s, "small_cpu_ms", r["cpu_ms_per_image"])
                log(f"  rep {rep} {s.name:22} {r['ips']:8.1f} images/s  server cpu {r['cpu_ms_per_image']:.2f} ms/image")
        phase("small_images")

        manifest_path = f"/v2/{NS}small0/img000/manifests/v1"
        if "manifest" in phases:
            log(f"[manifest GET] load {loadavg()}")
            raw["loads"].append(("manifest GET", loadavg()))
            for rep in range(args.reps):
                for s in order(rep):
                    r = wrk_cpu(s, f"http://127.0.0.1:{s.port}{manifest_path}", 64, args.duration,
                                headers=wrk_headers(s, manifest_path, [ACCEPT]), workdir=work)
                    if r["errors"]:
                        raise RuntimeError(f"{s.name}: wrk errors {r}")
                    add(s, "manifest_rps", r["rps"])
                    add(s, "manifest_p99", r["p99_ms"])
                    add(s, "manifest_cpu_us", r["cpu_us_per_req"])
                    log(f"  rep {rep} {s.name:22} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:.2f} ms  server cpu {r['cpu_us_per_req']:.0f} µs/req")
            phase("manifest_get")

        if "lists" in phases:
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
                res[s.key]["pages_per_walk"] = [len(pages)]
                res[s.key]["tags_sorted"] = [tags == sorted(tags)]
                log(f"  {s.name:22} tag PUTs {r['tag_puts_per_s']:.0f}/s; ?n=100 walk: {len(pages)} pages, {len(tags)} tags, sorted={tags == sorted(tags)}")
                c = Conn(s)
                _, body = c.req("GET", f"/v2/{NS}tags/many/tags/list", expect=(200,))
                res[s.key]["full_list_len"] = [len(json.loads(body)["tags"])]
                _, body = c.req("GET", "/v2/_catalog?n=1000", expect=(200,))
                res[s.key]["catalog_len"] = [len(json.loads(body)["repositories"])]
                c.close()
            for rep in range(args.reps):
                for s in order(rep):
                    base = f"http://127.0.0.1:{s.port}"
                    d = args.list_duration
                    if len(paging[s.name]) > 1:
                        r = wrk_cpu(s, base + paging[s.name][0], 16, d, paths=paging[s.name], workdir=work,
                                    headers=wrk_headers(s, paging[s.name][0]))
                        add(s, "pages_per_s", r["rps"])
                        add(s, "page_cpu_us", r["cpu_us_per_req"])
                        log(f"  rep {rep} {s.name:22} paging   {r['rps']:8.0f} pages/s  server cpu {r['cpu_us_per_req']:.0f} µs/page")
                    full = f"/v2/{NS}tags/many/tags/list"
                    r = wrk_cpu(s, base + full, 16, d, workdir=work, headers=wrk_headers(s, full))
                    add(s, "full_list_per_s", r["rps"])
                    add(s, "full_list_cpu_us", r["cpu_us_per_req"])
                    cat = "/v2/_catalog?n=1000"
                    c = wrk_cpu(s, base + cat, 16, d, workdir=work, headers=wrk_headers(s, cat))
                    add(s, "catalog_per_s", c["rps"])
                    add(s, "catalog_cpu_us", c["cpu_us_per_req"])
                    log(f"  rep {rep} {s.name:22} full list {r['rps']:7.0f} lists/s ({r['cpu_us_per_req']:.0f} µs cpu)  catalog {c['rps']:7.0f} lists/s ({c['cpu_us_per_req']:.0f} µs cpu)")
            phase("lists")

        authed = [s for s in servers if s.key.endswith("-auth")]
        if "storm" in phases and authed:
            log(f"[login storm] load {loadavg()}")
            raw["loads"].append(("login storm", loadavg()))
            for rep in range(args.reps):
                for s in [x for x in order(rep) if x in authed]:
                    url = f"http://127.0.0.1:{s.port}{manifest_path}"
                    hdrs = wrk_headers(s, manifest_path, [ACCEPT])
                    calm = wrk(url, 16, args.duration, headers=hdrs, workdir=work)
                    reset_hwm(s.pid)
                    sampler.take(s)
                    result = {}
                    t = threading.Thread(target=lambda: result.update(
                        wrk(url, 16, args.duration, headers=hdrs, workdir=work)))
                    t.start()
                    time.sleep(1)
                    slowest = login_storm(s, storm_users(rep))
                    t.join()
                    anon, file = sampler.take(s)
                    add(s, "storm_calm_p99", calm["p99_ms"])
                    add(s, "storm_p99", result["p99_ms"])
                    add(s, "storm_rps", result["rps"])
                    add(s, "storm_slowest_login_s", slowest)
                    add(s, "storm_peak_rss", vmhwm_mib(s.pid))
                    add(s, "storm_peak_anon", anon)
                    log(f"  rep {rep} {s.name:22} p99 {calm['p99_ms']:.2f} ms calm, {result['p99_ms']:.2f} ms in the storm; "
                        f"slowest login {slowest:.2f} s; peak RSS {vmhwm_mib(s.pid):.1f} MiB (anon {anon:.1f})")
            phase("storm")

        for s in servers:
            r = res[s.key]
            r["peak_rss_mib"] = [max((v[0] for k, v in r.items() if k.startswith("rss_") and k != "rss_storm"), default=0)]
            r["peak_anon_mib"] = [max((v[0] for k, v in r.items() if k.startswith("anon_") and k != "anon_storm"), default=0)]
            r["peak_file_mib"] = [max((v[0] for k, v in r.items() if k.startswith("file_") and k != "file_storm"), default=0)]
            r["total_cpu_s"] = [cpu_seconds(s.pid)]
            if s.kind == "ours":
                # What stays resident after every phase: the whole RssAnon, and SQLite's share.
                time.sleep(11)  # one malloc_trim period (src/memory.rs)
                r["anon_end_mib"] = [status_kib(s.pid, "RssAnon") / 1024]
                r["sqlite_end_mib"] = [sqlite_heap_bytes(s) / MIB]
        for k in keys:
            raw[k] = res[k]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        raw["loadgen_python_cpu_s"] = ru.ru_utime + ru.ru_stime
        raw["loads"].append(("end", loadavg()))
    finally:
        if sampler:
            sampler.stopped.set()
        for s in servers:
            s.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    report(raw, keys, args)


ROWS = [
    ("blob push, {blob} MiB monolithic, MB/s", "push_mono", 0, "≥ 1,000"),
    ("blob push, {blob} MiB chunked ({chunk} MiB PATCHes), MB/s", "push_chunked", 0, "≥ 1,000"),
    ("server CPU per GB pushed, s", "cpu_per_gb", 2, "≤ 0.8"),
    ("blob pull, {blob} MiB, MB/s", "pull", 0, "≥ 2,000"),
    ("server CPU per GB pulled, s", "pull_cpu_per_gb", 2, ""),
    ("blob pull again (page cache), MB/s", "pull_warm", 0, ""),
    ("manifest GET by tag, c=64, req/s", "manifest_rps", 0, "≥ 12,000"),
    ("manifest GET by tag, c=64, p99 ms", "manifest_p99", 2, "≤ 10"),
    ("server CPU per manifest GET, µs", "manifest_cpu_us", 0, "≤ 120"),
    ("{images} small images, {workers} workers, images/s", "small_ips", 1, "≥ 200"),
    ("server CPU per small image, ms", "small_cpu_ms", 2, ""),
    ("tag list paging, n=100 over {tags} tags, pages/s", "pages_per_s", 0, "≥ 1,000"),
    ("server CPU per page, µs", "page_cpu_us", 0, ""),
    ("full tag list of {tags} tags, c=16, lists/s", "full_list_per_s", 0, "≥ 1,000"),
    ("server CPU per full tag list, µs", "full_list_cpu_us", 0, ""),
    ("catalog (n=1000), c=16, lists/s", "catalog_per_s", 0, "≥ 2,000"),
    ("server CPU per catalog list, µs", "catalog_cpu_us", 0, ""),
    ("server peak RSS (VmHWM) over all phases but the storm, MiB", "peak_rss_mib", 1, "≤ 30"),
    ("… peak RssAnon, MiB", "peak_anon_mib", 1, ""),
    ("… peak RssFile (mapped file pages: binary, libraries, downloads), MiB", "peak_file_mib", 1, ""),
    ("… VmHWM during start-up, MiB", "rss_startup", 1, ""),
    ("… VmHWM during big-blob push/pull, MiB", "rss_big_blobs", 1, ""),
    ("… VmHWM during small-image pushes, MiB", "rss_small_images", 1, ""),
    ("… VmHWM during manifest GETs (c=64), MiB", "rss_manifest_get", 1, ""),
    ("… VmHWM during tag/catalog lists (c=16), MiB", "rss_lists", 1, ""),
    ("login storm: manifest p99 at c=16 without the storm, ms", "storm_calm_p99", 2, ""),
    ("login storm: manifest p99 at c=16 during 64 logins, ms", "storm_p99", 2, "≤ 2× calm"),
    ("login storm: slowest of the 64 logins, s", "storm_slowest_login_s", 2, ""),
    ("login storm: server peak RSS (VmHWM), MiB", "storm_peak_rss", 1, "bounded"),
    ("login storm: server peak RssAnon, MiB", "storm_peak_anon", 1, ""),
    ("RssAnon after every phase (and a malloc_trim), MiB", "anon_end_mib", 1, ""),
    ("… of which SQLite's heap (every connection), MiB", "sqlite_end_mib", 1, ""),
]
TITLES = {"dist": "distribution", "dist-auth": "distribution, htpasswd", "ours": "hpc-registry, anonymous",
          "ours-auth": "hpc-registry, auth (token flow)",
          "base-auth": "baseline build, auth"}


def report(raw, keys, args):
    def m(k, fig):
        return median(raw[k].get(fig, []))

    print(f"\nload average at start of each phase: {raw['loads']}")
    print(f"load generator (python) CPU: {raw['loadgen_python_cpu_s']:.1f} s; wrk runs with 1 thread")
    for k in keys:
        r = raw[k]
        if "catalog_len" in r:
            print(f"{TITLES[k]}: catalog {r['catalog_len'][0]} repositories, full tag list {r['full_list_len'][0]}, "
                  f"?n=100 walk {r['pages_per_walk'][0]} pages, tags in lexical order: {r['tags_sorted'][0]}")
    ratio = "ours-auth" in keys and "dist-auth" in keys
    print("\n| figure | " + " | ".join(TITLES[k] for k in keys) + (" | auth: ours / distribution" if ratio else "") + " | goal (auth on) |")
    print("|---|" + "---|" * len(keys) + ("---|" if ratio else "") + "---|")
    for label, fig, dig, goal in ROWS:
        if not any(raw[k].get(fig) for k in keys):
            continue
        label = label.format(blob=args.blob_mib, chunk=args.chunk_mib, images=args.images,
                             workers=args.workers, tags=args.tags)
        cells = []
        for k in keys:
            vals = raw[k].get(fig, [])
            allv = "/".join(fmt(x, dig) for x in vals)
            cells.append(f"{fmt(m(k, fig), dig)}" + (f" ({allv})" if len(vals) > 1 else ""))
        line = f"| {label} | " + " | ".join(cells)
        if ratio:
            o, d = m("ours-auth", fig), m("dist-auth", fig)
            line += " | " + (f"{o / d:.2f}" if o == o and d == d and d else "n/a")
        print(line + f" | {goal} |")


if __name__ == "__main__":
    main()
