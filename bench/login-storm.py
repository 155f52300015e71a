#!/usr/bin/env python3
"""Server memory under a login storm: 64 concurrent `/token` logins with passwords (two users),
each paying argon2id (19 MiB of working memory). Prints the server's RSS before, its peak
(VmHWM) and its RssAnon after. Not a test: nothing here asserts anything.

    python3 bench/login-storm.py [LOGINS]          # HPC_REGISTRY_BIN=... to pick the binary
    STORM_CONFIG='' python3 bench/login-storm.py   # for a binary without the [auth] keys below

By default the server runs with `[auth] credential_cache_secs = 0` (every login verifies) and the
default hashing pool (half the cores).
"""

import base64
import http.client
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OURS_BIN, Server, free_port, loadavg, log, status_kib, wait_http  # noqa: E402

CONFIG = os.environ.get("STORM_CONFIG", "[auth]\ncredential_cache_secs = 0\n")


def main():
    logins = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    with tempfile.TemporaryDirectory(prefix="bench-login-storm-") as work:
        data = os.path.join(work, "data")
        os.makedirs(data)
        for user in ("alice", "bob"):
            subprocess.run([OURS_BIN, "user", "add", user, "--password-stdin", "--data-dir", data],
                           input=f"{user}-password".encode(), check=True, capture_output=True)
        cfg = os.path.join(work, "cfg.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG + "[farm]\nworkers = 0\n")
        port = free_port()
        logfile = open(os.path.join(work, "server.log"), "w")
        proc = subprocess.Popen(
            [OURS_BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--config", cfg],
            stdout=logfile, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        server = Server("hpc-registry", port, proc, data, logfile)
        try:
            wait_http(port, proc=proc)
            path = "/token?service=hpc-registry&scope=repository:alice/x:pull"

            def login(user, out, i):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                auth = base64.b64encode(f"{user}:{user}-password".encode()).decode()
                c.request("GET", path, headers={"Authorization": f"Basic {auth}"})
                r = c.getresponse()
                r.read()
                out[i] = r.status
                c.close()

            first = [None]
            login("alice", first, 0)
            before = status_kib(server.pid, "VmRSS")
            statuses = [None] * logins
            threads = [threading.Thread(target=login, args=("alice" if i % 2 else "bob", statuses, i))
                       for i in range(logins)]
            load = loadavg()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = status_kib(server.pid, "VmHWM")
            anon = status_kib(server.pid, "RssAnon")
            ok = sum(1 for s in statuses if s == 200)
            log(f"binary {OURS_BIN}, load {load}")
            print(f"{logins} logins, {ok} answered 200; RSS before {before / 1024:.1f} MiB, "
                  f"peak {peak / 1024:.1f} MiB, RssAnon after {anon / 1024:.1f} MiB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
