#!/usr/bin/env python3
"""A function handler, socket-activated: it serves HTTP on the socket it inherits at fd 3.

autopilot starts it on the first connection to the function's port (docs/functions.md) with
LISTEN_FDS=1, LISTEN_PID=<this pid> and LISTEN_FDNAMES=<name>, the way systemd does. Run by
hand (no LISTEN_PID) it binds PORT itself, so it can be tried without autopilot.

GET /anything -> JSON: a greeting, this handler's pid and how it got its socket.
?sleep=SECONDS makes it slow (to watch the concurrency cap); it answers requests in threads.
``--stdio``: one request per process, the OpenFaaS classic watchdog's way (query string in
``Http_Query``, the answer on stdout); bench/functions compares both models with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STARTED = time.time()
lock = threading.Lock()
busy = 0
peak = 0


def inherited_socket() -> socket.socket | None:
    """The systemd protocol: fds start at 3, and only if LISTEN_PID is us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    return socket.socket(fileno=3)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        global busy, peak
        with lock:
            busy += 1
            peak = max(peak, busy)
        try:
            query = parse_qs(urlparse(self.path).query)
            time.sleep(min(float(query.get("sleep", ["0"])[0]), 10.0))
            body = json.dumps({
                "hello": query.get("name", ["world"])[0],
                "pid": os.getpid(),
                "listen_pid": os.environ.get("LISTEN_PID"),
                "listen_fds": os.environ.get("LISTEN_FDS"),
                "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
                "peak_concurrency": peak,
                "uptime": round(time.time() - STARTED, 3),
            }).encode() + b"\n"
        finally:
            with lock:
                busy -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "function"

    def log_message(self, fmt: str, *args: object) -> None:
        print("hello:", fmt % args, flush=True)  # one line per request, to stdout


def stdio() -> None:
    """The watchdog model: this process lives for one request."""
    query = parse_qs(os.environ.get("Http_Query", ""))
    print(json.dumps({"hello": query.get("name", ["world"])[0], "pid": os.getpid()}),
          flush=True)


def main() -> None:
    if "--stdio" in sys.argv[1:]:
        stdio()
        return
    sock = inherited_socket()
    if sock is None:
        server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    else:
        server = ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    server.daemon_threads = False  # server_close() waits for the requests in flight
    # SIGTERM (autopilot's idle stop): finish the requests in flight, then exit
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
