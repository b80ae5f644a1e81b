"""A small HTTP/1.1 server on asyncio streams, for the control socket and telemetry.

Why not a web framework: autopilot runs in every container, and aiohttp alone cost the
supervisor about 13 MB of memory and 0.3 s of start-up for two tiny JSON APIs. This module
serves exactly what they need, with the limits a long-lived PID 1 needs:

- request line and headers bounded (``MAX_HEAD``), a body bounded by the caller's
  ``max_body`` (413 past it, the rest of the body drained so the client reads the answer);
- keep-alive (HTTP/1.1 default, HTTP/1.0 on ``Connection: keep-alive``), pipelined requests
  answered in order, ``Expect: 100-continue``, chunked request bodies, ``HEAD`` on ``GET``
  routes;
- timeouts: an idle keep-alive connection is closed after ``IDLE_TIMEOUT``, a slow request
  head or body after ``READ_TIMEOUT``;
- bad input is a 4xx JSON answer (and the connection closed when its framing is unusable),
  never an exception out of the server; at most ``MAX_CONNECTIONS`` at once.

Routing: ``Router.add(method, "/v3/jobs/{name}/{action}", handler)``; a handler takes a
``Request`` and returns a ``Response``. ``HTTPError`` raised anywhere becomes its JSON answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 16 * 1024  # request line + headers
MAX_HEADERS = 100
IDLE_TIMEOUT = 30.0  # keep-alive: an idle connection is closed after this
READ_TIMEOUT = 15.0  # a started request must arrive within this
MAX_CONNECTIONS = 256
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read and discarded up to this

Handler = Callable[["Request"], Awaitable["Response"]]


def unquote(text: str) -> str:
    """``urllib.parse.unquote``, loaded only for a path with a ``%`` escape (urllib.parse
    costs 0.4 MB of every supervisor with a control socket otherwise)."""
    if "%" not in text:
        return text
    from urllib.parse import unquote as real

    return real(text)


class HTTPError(Exception):
    """An answer with ``{"error": message}``; ``close`` ends the connection after it."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close


@dataclass
class Request:
    """A parsed HTTP/1.1 request."""

    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes = b""
    #: ``{name}`` parts of the matched route, and the route's pattern (a bounded label)
    match_info: dict[str, str] = field(default_factory=dict)
    route: str | None = None


@dataclass
class Response:
    """An answer to send."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  dumps: Callable[[Any], str] | None = None) -> Response:
    """A JSON answer (``dumps``: the encoder, ``json.dumps`` by default; ``json`` is
    imported with the first answer, not by a supervisor that serves none: 0.2 MB)."""
    if dumps is None:
        import json

        dumps = json.dumps
    return Response(status, dumps(data).encode(), "application/json; charset=utf-8",
                    dict(headers or {}))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


class Router:
    """Exact paths and ``{name}`` segment patterns; 404 and 405 (with ``Allow``) built in."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], dict[str, Handler]]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        parts = tuple(pattern.strip("/").split("/"))
        for pat, _, methods in self._routes:
            if pat == pattern:
                methods[method] = handler
                return
        self._routes.append((pattern, parts, {method: handler}))

    def resolve(self, request: Request) -> Handler:
        """The handler for the request (``match_info``/``route`` filled in) or HTTPError."""
        segments = request.path.strip("/").split("/")
        for pattern, parts, methods in self._routes:
            params = _match(parts, segments)
            if params is None:
                continue
            request.match_info, request.route = params, pattern
            method = "GET" if request.method == "HEAD" else request.method
            handler = methods.get(method)
            if handler is None:
                allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
                raise HTTPError(405, f"method {request.method} not allowed on {request.path} "
                                f"(allowed: {', '.join(allowed)})", {"Allow": ", ".join(allowed)})
            return handler
        raise HTTPError(404, f"no such route: {request.path}")


def _match(parts: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            if not seg:
                return None
            params[part[1:-1]] = unquote(seg)
        elif part != seg:
            return None
    return params


class HTTPServer:
    """Serves ``app`` (a Request -> Response coroutine) on asyncio stream listeners."""

    def __init__(self, app: Handler, max_body: int, name: str = "http") -> None:
        self.app = app
        self.max_body = max_body
        self.name = name
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[asyncio.Task, bool] = {}  # task -> busy (inside a request)

    async def listen_unix(self, sock: Any) -> None:
        self._servers.append(await asyncio.start_unix_server(self._serve, sock=sock,
                                                             limit=MAX_HEAD))

    def protocol(self) -> asyncio.StreamReaderProtocol:
        """One connection's protocol, made as ``asyncio.start_unix_server`` makes it: for a
        listener created before this server (``loop.create_unix_server(factory, sock=…)``,
        then `adopt`), as the control socket does so that this module loads with its
        first connection (autopilot/control/server.py)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
        return asyncio.StreamReaderProtocol(reader, self._serve, loop=loop)

    def adopt(self, server: asyncio.AbstractServer) -> None:
        """Serve ``server``'s connections as one of ours (`close_listeners` closes it)."""
        self._servers.append(server)

    async def listen_tcp(self, host: str, port: int) -> None:
        self._servers.append(await asyncio.start_server(self._serve, host, port,
                                                        limit=MAX_HEAD, reuse_address=True))

    @property
    def busy(self) -> bool:
        return any(self._conns.values())

    def close_listeners(self) -> None:
        """Accept no new connection; idle keep-alive connections are closed now."""
        for server in self._servers:
            server.close()
        self._servers = []
        for task, busy in list(self._conns.items()):
            if not busy:
                task.cancel()

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, let requests in flight finish within ``grace``, then cut them."""
        self.close_listeners()
        deadline = asyncio.get_running_loop().time() + grace
        while self.busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # -- one connection ---------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= MAX_CONNECTIONS:
            await _send(writer, error_response(503, "too many connections"), close=True)
            await _close(writer)
            return
        self._conns[task] = False
        try:
            await self._requests(task, reader, writer)
        except (asyncio.CancelledError, ConnectionError, TimeoutError,
                asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - a bug must never take the server down
            with contextlib.suppress(Exception):
                await _send(writer, error_response(500, "internal error"), close=True)
        finally:
            self._conns.pop(task, None)
            await _close(writer)

    async def _requests(self, task: asyncio.Task, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        while True:
            self._conns[task] = False
            try:
                first = await asyncio.wait_for(reader.readexactly(1), IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, TimeoutError):
                return  # the client hung up, or stayed idle too long
            self._conns[task] = True
            try:
                request = await asyncio.wait_for(self._read(first, reader, writer), READ_TIMEOUT)
            except HTTPError as exc:
                await _send(writer, error_response(exc.status, exc.message, exc.headers),
                            close=True)
                return
            except TimeoutError:
                await _send(writer, error_response(408, "request not received in time"),
                            close=True)
                return
            keep = _keep_alive(request)
            response = await self.app(request)
            await _send(writer, response, close=not keep, head=request.method == "HEAD")
            if not keep:
                return

    async def _read(self, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> Request:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HTTPError(431, f"request head larger than {MAX_HEAD} bytes", close=True) from exc
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("client closed mid-request") from exc
        request = parse_head(head)
        te = request.headers.get("transfer-encoding", "").lower()
        length = request.headers.get("content-length")
        if te and length is not None:
            raise HTTPError(400, "both Transfer-Encoding and Content-Length", close=True)
        if te:
            if te != "chunked":
                raise HTTPError(501, f"transfer-encoding {te!r} not supported", close=True)
            await _continue(request, writer)
            request.body = await self._chunked(reader)
        elif length is not None:
            if not length.isdigit():
                raise HTTPError(400, f"bad Content-Length {length!r}", close=True)
            size = int(length)
            if size > self.max_body:
                if request.headers.get("expect", "").lower() != "100-continue":
                    await _drain(reader, size)
                raise HTTPError(413, f"request body too large (limit {self.max_body} bytes)",
                                close=True)
            await _continue(request, writer)
            request.body = await reader.readexactly(size) if size else b""
        return request

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise HTTPError(400, "bad chunk size", close=True) from exc
            if size < 0:
                raise HTTPError(400, "bad chunk size", close=True)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: ignored
                return bytes(body)
            if len(body) + size > self.max_body:
                raise HTTPError(413, f"request body too large (limit {self.max_body} bytes)",
                                close=True)
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise HTTPError(400, "bad chunk framing", close=True)


def parse_head(head: bytes) -> Request:
    """Request line and headers; HTTPError(400) for anything malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise HTTPError(400, "undecodable request head", close=True) from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/") \
            or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(400, f"bad request line {lines[0][:100]!r}", close=True)
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, f"bad header line {line[:100]!r}", close=True)
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if len(headers) > MAX_HEADERS:
            raise HTTPError(431, f"more than {MAX_HEADERS} headers", close=True)
    path, _, query = target.partition("?")
    return Request(method.upper(), unquote(path), query, version, headers)


def _keep_alive(request: Request) -> bool:
    conn = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


async def _continue(request: Request, writer: asyncio.StreamWriter) -> None:
    if request.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _drain(reader: asyncio.StreamReader, size: int) -> None:
    """Read and drop an oversized body (bounded) so the client can read our 413."""
    left = min(size, DRAIN_LIMIT)
    while left > 0:
        chunk = await reader.read(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


async def _send(writer: asyncio.StreamWriter, response: Response, close: bool,
                head: bool = False) -> None:
    try:
        from http import HTTPStatus  # loaded by the first answer, not at start

        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    if close:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(response.body)
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
