#!/usr/bin/env python3
"""Server CPU per `HEAD /sif/<name>:<tag>` with Basic auth and a password (a batch script that
curls with a password), with the verified-password memory off (`[auth] credential_cache_secs = 0`:
argon2id on every request, as before it existed) and on (the default 60 s). Not a test: nothing
here asserts timings.

    python3 bench/basic-auth.py [REQUESTS]     # HPC_REGISTRY_BIN=... to pick the binary

The server runs without --dev on loopback, a user made by the offline CLI, SIF workers off (the
HEAD answers 202 "queued": the authentication and the lookup are what is measured). Requests are
sequential on one keep-alive connection; server CPU is utime+stime from /proc/PID/stat.
"""

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OURS_BIN, Server, cpu_seconds, free_port, loadavg, log, machine_info, wait_http  # noqa: E402

PASSWORD = "bench-password-123"


def start(workdir, cache_secs):
    data = os.path.join(workdir, f"data-{cache_secs}")
    os.makedirs(data)
    subprocess.run(
        [OURS_BIN, "user", "add", "alice", "--password-stdin", "--data-dir", data],
        input=PASSWORD.encode(), check=True, capture_output=True,
    )
    cfg = os.path.join(workdir, f"cfg-{cache_secs}.toml")
    with open(cfg, "w") as f:
        f.write(f"[auth]\ncredential_cache_secs = {cache_secs}\n[farm]\nworkers = 0\n")
    port = free_port()
    logfile = open(os.path.join(workdir, f"server-{cache_secs}.log"), "w")
    proc = subprocess.Popen(
        [OURS_BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--config", cfg],
        stdout=logfile, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
    )
    wait_http(port, proc=proc)
    return Server(f"cache={cache_secs}s", port, proc, data, logfile)


def request(conn, method, path, body=None, content_type=None, headers=None):
    h = dict(headers or {})
    if content_type:
        h["Content-Type"] = content_type
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r.status, r.getheader("Location"), data


def push_tiny_image(conn, auth):
    """config + one layer + manifest, monolithic uploads, as alice."""
    layer = os.urandom(1024)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    descs = []
    for blob, media in [(config, "application/vnd.oci.image.config.v1+json"),
                        (layer, "application/vnd.oci.image.layer.v1.tar")]:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, loc, _ = request(conn, "POST", "/v2/alice/bench/blobs/uploads/", headers=auth)
        assert status == 202, status
        sep = "&" if "?" in loc else "?"
        status, _, body = request(conn, "PUT", f"{loc}{sep}digest={digest}", body=blob,
                                  content_type="application/octet-stream", headers=auth)
        assert status == 201, (status, body)
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[0], "layers": descs[1:]}).encode()
    status, _, body = request(conn, "PUT", "/v2/alice/bench/manifests/1", body=manifest,
                              content_type="application/vnd.oci.image.manifest.v1+json", headers=auth)
    assert status == 201, (status, body)


def measure(server, n):
    auth = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    # The first request of the password (nothing remembered yet): 404, the image is not there.
    c0 = cpu_seconds(server.pid)
    request(conn, "HEAD", "/sif/alice/bench:1", headers=auth)
    first_ms = (cpu_seconds(server.pid) - c0) * 1000
    push_tiny_image(conn, auth)
    statuses = set()
    c0 = cpu_seconds(server.pid)
    for _ in range(n):
        status, _, _ = request(conn, "HEAD", "/sif/alice/bench:1", headers=auth)
        statuses.add(status)
    per_ms = (cpu_seconds(server.pid) - c0) * 1000 / n
    conn.close()
    return first_ms, per_ms, statuses


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    log(f"binary {OURS_BIN}; machine: {machine_info()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-basic-auth-") as work:
        for cache_secs in (0, 60):
            server = start(work, cache_secs)
            try:
                load_before = loadavg()
                first_ms, per_ms, statuses = measure(server, n)
                rows.append((cache_secs, first_ms, per_ms, sorted(statuses), load_before, loadavg()))
            finally:
                server.stop()
    print(f"| credential_cache_secs | first request, server CPU ms | next {n} requests, server CPU ms each | statuses | load before → after |")
    print("|---|---|---|---|---|")
    for cache_secs, first_ms, per_ms, statuses, l0, l1 in rows:
        print(f"| {cache_secs} | {first_ms:.1f} | {per_ms:.3f} | {statuses} | {l0} → {l1} |")


if __name__ == "__main__":
    main()
