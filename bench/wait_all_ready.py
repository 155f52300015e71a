#!/usr/bin/env python3
"""Polls /sif/<ref>/status for many references on one keep-alive connection until every SIF is
ready (bench/farm-queue.sh).

    CPU_PIDS="PID …" python3 bench/wait_all_ready.py PORT TIMEOUT_S INTERVAL_MS REF…

Start it *before* the first push: a reference that does not exist yet answers 404 and is polled
again. One status request every INTERVAL_MS, round-robin over the references not yet ready, so
the server gets a fixed, small request rate whatever the number of images: every request costs
server CPU that the benchmark counts against the builds (200 status requests/s cost an idle
server 4 % of a core; 20/s, INTERVAL_MS = 50, a tenth of that). The last reference's ready is
therefore seen within INTERVAL_MS, an earlier one's within (references pending) × INTERVAL_MS.

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
    pending = list(refs)
    turn = 0
    while pending:
        if time.time() > deadline:
            print(f"timeout: {len(pending)} not ready, e.g. {pending[0]}: {last.get(pending[0])}",
                  file=sys.stderr)
            sys.exit(1)
        turn %= len(pending)
        ref = pending[turn]
        turn += 1
        try:
            conn.request("GET", f"/sif/{ref}/status")
            r = conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException):
            # The server closed the keep-alive connection: open another and go on.
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            time.sleep(interval)
            continue
        if r.status == 200:
            status = json.loads(body)
            last[ref] = status
            if status.get("state") == "ready":
                ready[ref] = (time.time(), status.get("builder") or "-")
                turn -= 1
                pending.remove(ref)
                if not pending:
                    break
            elif status.get("state") == "failed":
                print(f"{ref} failed: {json.dumps(status)}", file=sys.stderr)
                sys.exit(1)
        time.sleep(interval)
    seen = max(t for t, _ in ready.values())
    cpu = ",".join(f"{pid}:{cpu_with_children(pid):.2f}" for pid in pids)
    print(f"all_ready={seen:.6f} cpu={cpu}")
    for ref in refs:
        t, builder = ready[ref]
        print(f"ref={ref} ready={t:.6f} builder={builder.replace(' ', '_')}")


if __name__ == "__main__":
    main()
