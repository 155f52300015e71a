#!/usr/bin/env python3
"""MUNGE on the hot path: server CPU per MUNGE-authenticated `HEAD /sif/alice/bench:1` (sequential,
one keep-alive connection) and the throughput of 64 concurrent connections doing the same (wrk,
every request with a fresh credential), for the two decoders side by side in the same run:
- `unmunge`: `[auth] unmunge = "/usr/bin/unmunge"` (a program named: a fork and exec per request);
- libmunge: the default (`munge_decode` in-process, on a bounded pool).
Not a test: nothing here asserts anything.

    sudo python3 bench/munge-head.py [SEQUENTIAL] [SECONDS]    # HPC_REGISTRY_BIN=... for another binary

Needs munge (munged is started as in ../shared/docs/real-peers.md when it does not answer, and
stopped again by its PID) and wrk. Credentials are made beforehand with libmunge's
`munge_encode` (ctypes), as root, whose uid the registry user `alice` is given; each is used once
(munged refuses a replay). SIF workers are off, so the answer is 202 "queued": authentication
and the lookup are what is measured.
"""

import base64
import ctypes
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OURS_BIN, Server, cpu_seconds, free_port, loadavg, log, machine_info, wait_http, wrk  # noqa: E402

PASSWORD = "bench-password-alice"
PATH = "/sif/alice/bench:1"


class Encoder:
    def __init__(self):
        self.lib = ctypes.CDLL("libmunge.so.2")
        self.lib.munge_encode.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self.libc = ctypes.CDLL("libc.so.6")

    def one(self):
        cred = ctypes.c_char_p()
        rc = self.lib.munge_encode(ctypes.byref(cred), None, None, 0)
        if rc != 0:
            raise RuntimeError(f"munge_encode failed: {rc}")
        return cred.value.decode()


def munged_works():
    try:
        out = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        return out.returncode == 0 and subprocess.run(["unmunge"], input=out.stdout, capture_output=True,
                                                      timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munged():
    if munged_works():
        return None
    os.makedirs("/run/munge", exist_ok=True)
    subprocess.run(["chown", "munge:munge", "/run/munge"], check=True)
    proc = subprocess.Popen(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not munged_works():
        if time.time() > deadline:
            raise RuntimeError("munged did not come up")
        time.sleep(0.1)
    return proc


def start(work, name, unmunge):
    data = os.path.join(work, f"{name}-data")
    os.makedirs(data)
    subprocess.run([OURS_BIN, "user", "add", "alice", "--uid", str(os.getuid()), "--password-stdin",
                    "--data-dir", data], input=PASSWORD.encode(), check=True, capture_output=True)
    cfg = os.path.join(work, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write("[auth]\nmunge = true\n" + (f"unmunge = {json.dumps(unmunge)}\n" if unmunge else "")
                + "[farm]\nworkers = 0\n")
    port = free_port()
    logfile = open(os.path.join(work, f"{name}.log"), "w")
    proc = subprocess.Popen([OURS_BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--config", cfg],
                            stdout=logfile, stderr=subprocess.STDOUT)
    wait_http(port, path="/healthz", proc=proc)
    server = Server(name, port, proc, data, logfile)
    push_tiny_image(server)
    return server


def push_tiny_image(server):
    auth = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def req(method, path, body=None, ctype=None):
        h = dict(auth)
        if ctype:
            h["Content-Type"] = ctype
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        r.read()
        return r

    descs = []
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for blob, media in [(config, "application/vnd.oci.image.config.v1+json"),
                        (os.urandom(1024), "application/vnd.oci.image.layer.v1.tar")]:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        loc = req("POST", "/v2/alice/bench/blobs/uploads/").getheader("Location")
        sep = "&" if "?" in loc else "?"
        assert req("PUT", f"{loc}{sep}digest={digest}", blob, "application/octet-stream").status == 201
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[0], "layers": descs[1:]}).encode()
    assert req("PUT", "/v2/alice/bench/manifests/1", manifest, "application/vnd.oci.image.manifest.v1+json").status == 201
    c.close()


def sequential(server, creds):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    statuses = set()
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    for cred in creds:
        c.request("HEAD", PATH, headers={"Authorization": f"MUNGE {cred}"})
        r = c.getresponse()
        r.read()
        statuses.add(r.status)
    secs = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    # The first credential again: a replay.
    c.request("HEAD", PATH, headers={"Authorization": f"MUNGE {creds[0]}"})
    r = c.getresponse()
    r.read()
    c.close()
    return {"cpu_ms": cpu * 1000 / len(creds), "ms": secs * 1000 / len(creds), "statuses": sorted(statuses),
            "replay": r.status}


def concurrent(server, creds, seconds, work):
    path = os.path.join(work, f"creds-{server.name}.txt")
    with open(path, "w") as f:
        f.write("\n".join(creds) + "\n")
    cpu0 = cpu_seconds(server.pid)
    r = wrk(f"http://127.0.0.1:{server.port}{PATH}", 64, seconds, workdir=work, method_script=f"""
creds = {{}}
for line in io.lines("{path}") do creds[#creds + 1] = line end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("HEAD", nil, {{["Authorization"] = "MUNGE " .. creds[counter]}})
end
""")
    r["cpu_us"] = (cpu_seconds(server.pid) - cpu0) / max(r["requests"], 1) * 1e6
    if r["requests"] > len(creds):
        raise RuntimeError(f"{server.name}: {r['requests']} requests but only {len(creds)} credentials: raise the count")
    return r


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    log(f"binary {OURS_BIN}; machine: {machine_info()}")
    munged = start_munged()
    enc = Encoder()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-munge-") as work:
            servers = [start(work, "unmunge", "/usr/bin/unmunge"), start(work, "libmunge", None)]
            try:
                for s in servers:
                    load0 = loadavg()
                    seq = sequential(s, [enc.one() for _ in range(n)])
                    creds = [enc.one() for _ in range(30000)]
                    conc = concurrent(s, creds, seconds, work)
                    rows.append((s.name, seq, conc, load0))
                    log(f"{s.name}: {seq} / {conc['rps']:.0f} req/s, errors {conc['errors']}")
            finally:
                for s in servers:
                    s.stop()
    finally:
        if munged is not None:
            munged.terminate()
            munged.wait(10)
    print(f"| decoder | sequential: server CPU per HEAD, ms | sequential: latency, ms | replayed credential | "
          f"64 connections: HEADs/s | 64 connections: server CPU per HEAD, µs | p99, ms | non-2xx | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, seq, conc, load0 in rows:
        print(f"| {name} | {seq['cpu_ms']:.2f} | {seq['ms']:.2f} | {seq['replay']} | {conc['rps']:,.0f} | "
              f"{conc['cpu_us']:.0f} | {conc['p99_ms']:.1f} | {conc['errors_status']} | {load0} |")


if __name__ == "__main__":
    main()
