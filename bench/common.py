"""Shared helpers for the benchmark scripts in bench/ (not tests: nothing here asserts timings).

Servers run on loopback only; every load loop is bounded in requests or time.
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
OURS_BIN = os.environ.get("HPC_REGISTRY_BIN", os.path.join(REPO_DIR, "target/release/hpc-registry"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_caches():
    """Flush dirty pages and drop the page cache (root only; noise advice in performance-targets.md)."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        log(f"warning: cannot drop caches ({e}); figures will be noisier")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def vmhwm_mib(pid):
    return status_kib(pid, "VmHWM") / 1024


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def wait_http(port, path="/v2/", timeout=30.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s")


class Server:
    """A server process we started; stopped by its own PID only."""

    def __init__(self, name, port, proc, data_dir, logfile):
        self.name, self.port, self.proc, self.data_dir, self.logfile = name, port, proc, data_dir, logfile

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_distribution(workdir, port=None, users=None, name="distribution"):
    """Debian's docker-registry (CNCF distribution 2.8.2) with its packaged config's storage
    settings (inmemory blob-descriptor cache, delete enabled), filesystem storage in a fresh
    directory, loopback only, and request logging off (its best case). `users`: a list of
    (name, password) turns on its htpasswd auth (bcrypt, cost 5 as `htpasswd -B` makes it: Basic
    credentials checked on every request, which is how docker talks to such a registry)."""
    port = port or free_port()
    root = os.path.join(workdir, f"{name}-data")
    os.makedirs(root, exist_ok=True)
    auth = ""
    if users:
        htpasswd = os.path.join(workdir, f"{name}.htpasswd")
        with open(htpasswd, "w") as f:
            for user, password in users:
                line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                      capture_output=True, text=True).stdout.strip()
                f.write(line + "\n")
        auth = f"""auth:
  htpasswd:
    realm: bench
    path: {htpasswd}
"""
    cfg = os.path.join(workdir, f"{name}.yml")
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
{auth}http:
  addr: 127.0.0.1:{port}
""")
    logfile = open(os.path.join(workdir, f"{name}.log"), "w")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=logfile, stderr=subprocess.STDOUT)
    wait_http(port, proc=proc)
    return Server(name, port, proc, root, logfile)


def add_user(data_dir, user, password, binary=None):
    """A registry user made with the offline CLI (before the server starts: it locks the store)."""
    subprocess.run([binary or OURS_BIN, "user", "add", user, "--password-stdin", "--data-dir", data_dir],
                   input=password.encode(), check=True, capture_output=True)


def start_ours(workdir, port=None, farm=None, env=None, name="hpc-registry", auth=None, users=None,
               binary=None):
    """hpc-registry on a fresh data dir, on loopback. Without `auth`/`users`: `--dev` (anonymous
    read-write). With `users` (list of (name, password), made by the offline CLI before the start):
    authentication on, as a site runs it, and `auth` a dict of `[auth]` settings. `farm` is a dict
    of `[farm]` settings."""
    port = port or free_port()
    data = os.path.join(workdir, f"{name}-data")
    os.makedirs(data, exist_ok=True)
    for user, password in users or []:
        add_user(data, user, password, binary)
    args = [binary or OURS_BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data]
    if users is None:
        args.append("--dev")
    sections = {k: v for k, v in (("farm", farm), ("auth", auth)) if v}
    if sections:
        cfg = os.path.join(workdir, f"{name}.toml")
        with open(cfg, "w") as f:
            for section, settings in sections.items():
                f.write(f"[{section}]\n")
                for k, v in settings.items():
                    f.write(f"{k} = {json.dumps(v)}\n")
        args += ["--config", cfg]
    logfile = open(os.path.join(workdir, f"{name}.log"), "w")
    proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    # /healthz needs no credentials, whatever the server's auth.
    wait_http(port, path="/healthz", proc=proc)
    return Server(name, port, proc, data, logfile)


WRK_REPORT = r"""
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %d, "bytes": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, "errors_read": %d, "errors_timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.bytes, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk(url, connections, duration_s=10, threads=1, headers=None, paths=None, workdir=None,
        method_script=None):
    """Runs wrk for a fixed duration and returns its summary as a dict (req/s, MB/s, p99 ms).
    `paths` rotates requests through several paths (e.g. the pages of a tag list);
    `method_script` is Lua defining wrk's `request()` some other way."""
    script = (method_script or "") + WRK_REPORT
    if paths:
        script = "paths = {" + ", ".join(json.dumps(p) for p in paths) + "}\n" + r"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, paths[(counter % #paths) + 1])
end
""" + script
    fd, path = tempfile.mkstemp(suffix=".lua", dir=workdir)
    with os.fdopen(fd, "w") as f:
        f.write(script)
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "10s", "-s", path]
    for h in headers or []:
        args += ["-H", h]
    args.append(url)
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    os.unlink(path)
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON "):])
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["mbps"] = r["bytes"] / secs / 1e6
    r["p99_ms"] = r["p99_us"] / 1000
    r["errors"] = r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_timeout"]
    return r


def url_path(location):
    """Path and query of a Location header, which may be absolute (distribution) or relative."""
    u = urllib.parse.urlsplit(location)
    return u.path + (("?" + u.query) if u.query else "")


def add_query(path, key, value):
    return path + ("&" if "?" in path else "?") + f"{key}={urllib.parse.quote(value, safe=':')}"


def machine_info():
    def sh(cmd):
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    return {
        "nproc": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "sha_ni": "yes" if " sha_ni" in sh("grep -m1 flags /proc/cpuinfo") else "no",
        "mem": sh("free -h | awk '/Mem:/{print $2}'"),
        "disk": sh("df -hT /tmp | tail -1 | awk '{print $1\" \"$2\" \"$3}'"),
        "kernel": sh("uname -r"),
        "date": sh("date -u +%Y-%m-%dT%H:%MZ"),
        "load": loadavg(),
    }


def which_or_die(*names):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        sys.exit(f"missing tools: {' '.join(missing)} (apt-get install -y wrk hyperfine docker-registry nginx ...)")
