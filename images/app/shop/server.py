"""HTTP layer: stdlib ThreadingHTTPServer, JSON in and out, one log line per request."""

from __future__ import annotations

import json
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from shop.primary import Primary
from shop.settings import Settings
from shop.store import Store, Unavailable

CART = re.compile(r"^/cart/(?P<user>[\w.-]{1,64})(?:/items/(?P<item>[\w.-]{1,64}))?$")


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        super().__init__((settings.bind, settings.port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: ShopServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # stdout, one line (factor XI)
        pass

    def _reply(self, status: int, body: dict, started: float) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        ms = (time.monotonic() - started) * 1000
        print(f"{self.command} {self.path} {status} {ms:.1f}ms", flush=True)

    def _base(self, primary: Primary | None = None) -> dict:
        body: dict = {"instance": self.server.settings.instance}
        if primary is not None:
            body["redis"] = f"{primary.host}:{primary.port}"
        return body

    def _route(self) -> tuple[int, dict]:
        store = self.server.store
        url = urlsplit(self.path)
        path, method = url.path, self.command
        if path == "/health" and method in ("GET", "HEAD"):
            return 200, self._base() | {"status": "ok"}
        if path in ("/", "/count") and method in ("GET", "HEAD"):
            count, primary = store.visits()
            return 200, self._base(primary) | {"count": count}
        if path == "/visit":
            if method != "POST":
                return 405, {"error": "use POST /visit"}
            count, primary = store.visit()
            return 200, self._base(primary) | {"count": count}
        m = CART.match(path)
        if m:
            user, item = m["user"], m["item"]
            if item and method == "POST":
                qty = parse_qs(url.query).get("qty", ["1"])[0]
                if not re.fullmatch(r"-?\d{1,6}", qty):
                    return 400, {"error": "qty must be an integer"}
                cart, primary = store.add_to_cart(user, item, int(qty))
                return 200, self._base(primary) | {"user": user, "cart": cart}
            if not item and method == "GET":
                cart, primary = store.cart(user)
                return 200, self._base(primary) | {"user": user, "cart": cart}
            if not item and method == "DELETE":
                primary = store.clear_cart(user)
                return 200, self._base(primary) | {"user": user, "cart": {}}
            return 405, {"error": f"{method} not allowed on {path}"}
        return 404, {"error": f"no route {path}"}

    def _handle(self) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))  # bodies are ignored; drain them
        try:
            status, body = self._route()
        except Unavailable as exc:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, self._base() | {"error": str(exc)}
        self._reply(int(status), body, started)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle
