"""A counting HTTP proxy for scripts/bench-prefect: forwards every request to
UPSTREAM (e.g. a Prefect server's root) byte for byte and counts them by
method and path (ids replaced by `{id}`), and the answers >= 400 by status,
method and path (they are counted among the requests too), and the log
records and events sent (Prefect Cloud's second budget), for `GET /counts` (JSON) and
`POST /counts/reset`. With TRACE=FILE set, every request also appends one line
to FILE: seconds since the last reset when it arrived, seconds it took
upstream, status, method and path. Stdlib only.

  [TRACE=FILE] python3 scripts/count_proxy.py PORT UPSTREAM
"""
import http.client
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from collections import Counter

UPSTREAM = urllib.parse.urlsplit(sys.argv[2])
COUNTS = Counter()
LOCK = threading.Lock()
TRACE = os.environ.get("TRACE")
SINCE = [time.monotonic()]
ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAME = re.compile(r"(/block_documents/name|/block_types/slug/[^/]+/block_documents/name|/v2/concurrency_limits/filter|/work_pools)/[^/?]+")


def shape(method, path):
    path = path.split("?")[0]
    path = ID.sub("/{id}", path)
    path = NAME.sub(lambda m: m.group(1) + "/{name}", path)
    return f"{method} {path}"


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK, 40 ms on every request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self):
        if self.path == "/counts":
            with LOCK:
                return self.reply(200, json.dumps(dict(COUNTS)).encode())
        if self.path == "/counts/reset":
            with LOCK:
                COUNTS.clear()
                SINCE[0] = time.monotonic()
                if TRACE:
                    with open(TRACE, "a") as f:
                        f.write("--- reset\n")
            return self.reply(200, b"{}")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        with LOCK:
            COUNTS[shape(self.command, self.path)] += 1
            # Prefect Cloud's second budget counts log records and events, not requests.
            kind = {"/api/logs/": "(log records)", "/api/events": "(events)"}.get(self.path.split("?")[0])
            if kind and body:
                try:
                    COUNTS[kind] += len(json.loads(body))
                except ValueError:
                    pass
        began = time.monotonic()
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if TRACE:
            with LOCK, open(TRACE, "a") as f:
                took = time.monotonic() - began
                f.write(f"{began - SINCE[0]:8.3f} {took:6.3f} {r.status} {shape(self.command, self.path)}\n")
        if r.status >= 400:
            # Answers that were not a success, e.g. `503 PATCH …`: retries and refusals.
            with LOCK:
                COUNTS[f"{r.status} {shape(self.command, self.path)}"] += 1
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy).serve_forever()
