#!/usr/bin/env python3
"""Polls /sif/<ref>/status on one keep-alive connection (every 5 ms) until the SIF is ready.

    python3 bench/wait_ready.py PORT REF [TIMEOUT_S]

Start it *before* the push (it keeps polling through the 404s until the image exists), so that
the interpreter's start-up never delays the measurement. When the status says ready it prints
`<epoch seconds when ready was seen> <server VmHWM MiB, or -> <server CPU s, or -> <status JSON>` on one line; exits 1
if the build failed or timed out. SERVER_PID set: VmHWM and utime+stime are read from /proc/SERVER_PID.
"""

import http.client
import json
import os
import sys
import time

port, ref = int(sys.argv[1]), sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 1800
deadline = time.time() + timeout
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
status = {}
while time.time() < deadline:
    conn.request("GET", f"/sif/{ref}/status")
    r = conn.getresponse()
    body = r.read()
    if r.status == 200:
        status = json.loads(body)
        if status.get("state") == "ready":
            seen = time.time()
            rss = cpu = "-"
            pid = os.environ.get("SERVER_PID")
            if pid:
                with open(f"/proc/{pid}/status") as f:
                    rss = next(str(int(l.split()[1]) // 1024) for l in f if l.startswith("VmHWM:"))
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu = f"{(int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'):.2f}"
            print(f"{seen:.6f} {rss} {cpu} {json.dumps(status, separators=(',', ':'))}")
            sys.exit(0)
        if status.get("state") == "failed":
            print(f"failed {json.dumps(status)}", file=sys.stderr)
            sys.exit(1)
    time.sleep(0.005)
print(f"timeout; last status {status}", file=sys.stderr)
sys.exit(1)
