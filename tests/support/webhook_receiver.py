#!/usr/bin/env python3
"""A webhook receiver on loopback for the notification tests.

Verifies each POST as a site's receiver would (README, "Notifications"): the HMAC-SHA256 of
`<X-Hpc-Registry-Timestamp>.<exact body>` with the key in SECRET_FILE (its first line) must equal
`X-Hpc-Registry-Signature: sha256=<hex>` (compared in constant time), and the timestamp must be
within 300 s of this clock. A verified event is stored as OUTDIR/<id>.json (once per CloudEvents
id; a repeated id is counted in OUTDIR/duplicates and answered 200, since at-least-once delivery
may repeat an event) and answered 204. A bad signature or stale timestamp is counted in
OUTDIR/rejected and answered 401. Prints `listening on PORT` once it accepts connections.
"""
import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def bump(path):
    with LOCK:
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path + ".tmp", "w") as f:
            f.write(str(n + 1))
        os.rename(path + ".tmp", path)


def make_handler(secret, outdir):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            ts = self.headers.get("X-Hpc-Registry-Timestamp", "")
            sig = self.headers.get("X-Hpc-Registry-Signature", "")
            expected = "sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
            if not (fresh and hmac.compare_digest(sig, expected)):
                bump(os.path.join(outdir, "rejected"))
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            name = os.path.join(outdir, os.path.basename(event["id"]) + ".json")
            with LOCK:
                seen = os.path.exists(name)
                if not seen:
                    record = {
                        "event": event,
                        "content_type": self.headers.get("Content-Type"),
                        "signature": sig,
                    }
                    with open(name + ".tmp", "w") as f:
                        json.dump(record, f)
                    os.rename(name + ".tmp", name)
            if seen:
                bump(os.path.join(outdir, "duplicates"))
                self.send_response(200)
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, fmt, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    secret = open(args.secret_file, "rb").read().splitlines()[0]
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(secret, args.outdir))
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
