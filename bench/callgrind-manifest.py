#!/usr/bin/env python3
"""Instruction counts per manifest GET, anonymous (--dev) and with a bearer token (Docker's token
flow), by running each server under `valgrind --tool=callgrind` and counting only a window of N
keep-alive GETs on one connection (callgrind_control zeroes the counters before it and dumps
after). Instruction counts do not depend on the machine's load, so this compares two binaries (or
two code paths) on a busy machine. Not a test.

    python3 bench/callgrind-manifest.py BINARY [N] [OUTDIR]

Prints Ir per request for each server, and leaves the callgrind files (annotate them with
`callgrind_annotate --inclusive=yes FILE`) in OUTDIR (default a temp dir).
"""
import http.client, os, subprocess, sys, tempfile, time, glob
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry as R
from common import start_ours

binary = os.path.abspath(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
out = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="callgrind-")
os.makedirs(out, exist_ok=True)
work = tempfile.mkdtemp(prefix="cgwork-")
wrapper = os.path.join(work, "vg-hpc-registry")
with open(wrapper, "w") as f:
    # Only `serve` runs under valgrind; the offline `user add` calls run natively.
    f.write(f"""#!/bin/sh
if [ "$1" = serve ]; then
  exec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.$NAME.%p --dump-instr=no --separate-threads=no "{binary}" "$@"
fi
exec "{binary}" "$@"
""")
os.chmod(wrapper, 0o755)
path = "/v2/alice/small0/img000/manifests/v1"


def probe(name, users, auth):
    s = start_ours(work, farm={"workers": 0}, binary=wrapper, name=name, users=users,
                   auth=auth, env={"NAME": name})
    s.auth = R.TokenAuth(R.USER, R.PASSWORD) if users else R.NoAuth()
    # start_ours waited for /healthz; give the valgrinded start-up's first requests room.
    c = R.Conn(s)
    R.push_small_image(c, "alice/small0/img000", "v1", R.make_image("x"))
    headers = {"Accept": R.ACCEPT.split(": ", 1)[1]}
    h = c.auth_header(path)
    if h:
        headers["Authorization"] = h.split(": ", 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)

    def get(k):
        for _ in range(k):
            conn.request("GET", path, headers=headers)
            r = conn.getresponse(); r.read()
            assert r.status == 200, r.status
    get(200)  # warm: the principal cache, SQLite's statement cache, allocator arenas
    time.sleep(0.5)  # let the audit writer drain the warm-up
    subprocess.run(["callgrind_control", "-z", str(s.pid)], check=True, stdout=subprocess.DEVNULL)
    get(n)
    time.sleep(1.0)  # the audit writer's batch for these requests belongs to their cost
    subprocess.run(["callgrind_control", "-d", f"{name}-window", str(s.pid)], check=True, stdout=subprocess.DEVNULL)
    conn.close(); c.close()
    s.stop()
    files = sorted(glob.glob(f"{out}/callgrind.{name}.*"))
    window = [f for f in files if f.endswith("-window") or "window" in open(f, errors="replace").read(4000)]
    ir = None
    for f in window:
        for line in open(f, errors="replace"):
            if line.startswith("summary:") or line.startswith("totals:"):
                ir = int(line.split()[1])
    print(f"{name:5} {ir / n:10.0f} Ir/request over {n} GETs   ({window[-1] if window else '?'})", flush=True)


probe("anon", None, None)
probe("auth", [(R.USER, R.PASSWORD)], {"token_ttl_secs": 3600})
print(f"callgrind files in {out}")
