#!/usr/bin/env python3
"""The issue 15 profile probe: an anonymous (--dev) and an auth-on server of BINARY, one small image
pushed to each, wrk at c=64 on the manifest by tag (bearer token from /token for the auth-on one),
twice each; prints req/s, p99, server CPU per request, VmHWM, RssAnon, RssFile and thread count.
With `perf`, records the auth-on server's second run (perf record -F 999 -g) into
/tmp/perf-<binary name>.data. Not a test.

    python3 bench/auth-profile.py BINARY [SECONDS] [perf]
"""
import os, sys, json, subprocess, time, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry as R
from common import start_ours, wrk, cpu_seconds, status_kib, vmhwm_mib, loadavg
binary = sys.argv[1]
dur = int(sys.argv[2]) if len(sys.argv) > 2 else 5
do_perf = len(sys.argv) > 3 and sys.argv[3] == "perf"
work = tempfile.mkdtemp(prefix="perfprof-")
anon = start_ours(work, farm={"workers": 0}, binary=binary, name="anon")
auth = start_ours(work, farm={"workers": 0}, binary=binary, name="auth", users=[(R.USER, R.PASSWORD)], auth={"token_ttl_secs": 3600})
anon.auth, auth.auth = R.NoAuth(), R.TokenAuth(R.USER, R.PASSWORD)
try:
    for s in (anon, auth):
        c = R.Conn(s); R.push_small_image(c, "alice/small0/img000", "v1", R.make_image("x")); c.close()
    path = "/v2/alice/small0/img000/manifests/v1"
    for rep in range(2):
        for s in (anon, auth):
            h = R.wrk_headers(s, path, [R.ACCEPT])
            perf = None
            if do_perf and s is auth and rep == 1:
                perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", f"/tmp/perf-{os.path.basename(binary)}.data", "-p", str(s.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            t0 = time.time()
            r = R.wrk_cpu(s, f"http://127.0.0.1:{s.port}{path}", 64, dur, headers=h, workdir=work)
            if perf:
                perf.send_signal(2); perf.wait()
            thr = len(os.listdir(f"/proc/{s.pid}/task"))
            print(f"{s.name:5} rep{rep} {r['rps']:8.0f} req/s p99 {r['p99_ms']:6.2f} ms cpu {r['cpu_us_per_req']:5.0f} us/req errors {r['errors']} hwm {vmhwm_mib(s.pid):.1f} anon {status_kib(s.pid,'RssAnon')/1024:.1f} file {status_kib(s.pid,'RssFile')/1024:.1f} threads {thr} load {loadavg()}", flush=True)
finally:
    anon.stop(); auth.stop()
