#!/usr/bin/env python3
"""Polls /sif/<ref>/status for many references on one keep-alive connection until every SIF is
ready (bench/farm-queue.sh).

    CPU_PIDS="PID …" python3 bench/wait_all_ready.py PORT TIMEOUT_S INTERVAL_MS REF…

Start it *before* the first push: a reference that does not exist yet answers 404 and is polled
again. Each round asks for every reference not yet ready, then sleeps INTERVAL_MS; the rounds
are spaced rather than back to back because every status request costs the server CPU that the
benchmark counts against the builds (the default 100 ms costs well under 1 % of a core).

When all are ready it prints one line
    `all_ready=<epoch s> cpu=<pid>:<s>,…`
where each CPU figure is the process's utime + stime + cutime + cstime (/proc/PID/stat fields
14-17, so the build child processes it has reaped count), read the moment the last ready was
seen; then one line per reference, `ref=<ref> ready=<epoch s> builder=<who built it>`.
Exits 1 if a build failed for good or the timeout passed.
"""

import http.client
import json
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_with_children(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def main():
    port, timeout, interval = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) / 1000
    refs = sys.argv[4:]
    pids = os.environ.get("CPU_PIDS", "").split()
    deadline = time.time() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ready = {}
    last = {}
    while len(ready) < len(refs):
        if time.time() > deadline:
            pending = [r for r in refs if r not in ready]
            print(f"timeout: {len(pending)} not ready, e.g. {pending[0]}: {last.get(pending[0])}",
                  file=sys.stderr)
            sys.exit(1)
        for ref in refs:
            if ref in ready:
                continue
            try:
                conn.request("GET", f"/sif/{ref}/status")
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException):
                # The server closed the keep-alive connection: open another and go on.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if r.status != 200:
                continue
            status = json.loads(body)
            last[ref] = status
            if status.get("state") == "ready":
                ready[ref] = (time.time(), status.get("builder") or "-")
            elif status.get("state") == "failed":
                print(f"{ref} failed: {json.dumps(status)}", file=sys.stderr)
                sys.exit(1)
        if len(ready) == len(refs):
            break
        time.sleep(interval)
    seen = max(t for t, _ in ready.values())
    cpu = ",".join(f"{pid}:{cpu_with_children(pid):.2f}" for pid in pids)
    print(f"all_ready={seen:.6f} cpu={cpu}")
    for ref in refs:
        t, builder = ready[ref]
        print(f"ref={ref} ready={t:.6f} builder={builder.replace(' ', '_')}")


if __name__ == "__main__":
    main()
