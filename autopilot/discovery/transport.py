"""HTTP/1.1 to the Consul agent on asyncio streams, with keep-alive: no thread per call.

`http.request` (the one request helper) sends through here. Idle connections are kept for
the next request, so a steady heartbeat costs one connection rather than a TCP (and TLS)
handshake each time; every request in flight has a connection of its own, so a watch parked
in a long poll never holds up a heartbeat. A request that finds its kept connection closed
by the agent before any answer is sent again once on a fresh connection.

TLS follows the same settings as the py-consul client (`connection.requests_tls`): the CA
file or directory, verification on unless turned off, a client certificate (one PEM or a
certificate and a key), and the server name the certificate is checked against. ``ssl`` is
imported only for an https agent (`autopilot.lazyssl`): about 4 MB a plain-http supervisor
does not carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from typing import TYPE_CHECKING, Any

from autopilot import lazyssl
from autopilot.config.model import ConsulConfig
from autopilot.discovery.connection import split_address
from autopilot.discovery.http import Params, Response, encode_body

#: kept connections; more in flight at once are closed after their answer. Five services
#: whose checks run in step heartbeat together: 4 made two new connections every round
MAX_IDLE = 8
MAX_HEADER = 64 * 1024

if TYPE_CHECKING:
    import ssl


def tls_context(cfg: ConsulConfig) -> ssl.SSLContext:
    ssl = lazyssl.require()
    tls = cfg.tls
    ctx = ssl.create_default_context(cafile=tls.cafile or None, capath=tls.capath or None)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.clientcert:
        ctx.load_cert_chain(tls.clientcert, tls.clientkey or None)
    return ctx


class _Stale(ConnectionError):
    """A kept connection was closed before it answered (safe to send again)."""


class Transport:
    """Connections to one agent (resolved settings, see `connection.resolve`)."""

    def __init__(self, cfg: ConsulConfig) -> None:
        scheme, host, port = split_address(cfg.address, cfg.scheme)
        self.scheme = cfg.scheme or scheme
        self.host, self.port = host, port
        self.token = cfg.token
        self.ssl = tls_context(cfg) if self.scheme == "https" else None
        self.server_hostname = (cfg.tls.servername or host) if self.ssl else None
        self.host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0  # connections opened so far (a measure of keep-alive)

    async def request(self, method: str, path: str, *, params: Params = (), body: Any = None,
                      timeout: float) -> Response:
        """One request and its answer; TimeoutError after ``timeout``, OSError (or
        IncompleteReadError) when the agent cannot be reached or hangs up."""
        target = path + ("?" + urllib.parse.urlencode(list(params)) if params else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}",
                "User-Agent: autopilot", "Accept: application/json"]
        if self.token:
            head.append(f"X-Consul-Token: {self.token}")
        data = encode_body(body)
        if data or method in ("PUT", "POST"):
            head.append(f"Content-Length: {len(data)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        async with asyncio.timeout(timeout):
            while self._idle:
                conn = self._idle.pop()
                try:
                    return await self._exchange(conn, raw, method)
                except _Stale:
                    continue  # the agent closed it meanwhile: try the next, then a new one
            conn = await self._open()
            try:
                return await self._exchange(conn, raw, method)
            except _Stale as exc:
                raise ConnectionResetError("consul closed the connection") from exc

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.opened += 1
        return await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname,
            limit=MAX_HEADER)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        raw: bytes, method: str) -> Response:
        reader, writer = conn
        keep = False
        try:
            try:
                writer.write(raw)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _Stale() from exc
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale() from exc
                raise
            except asyncio.LimitOverrunError as exc:
                raise ValueError(f"answer head over {MAX_HEADER} bytes") from exc
            resp, keep = await self._read(reader, head, method)
            return resp
        finally:
            if keep and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
            else:
                writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader, head: bytes,
                    method: str) -> tuple[Response, bool]:
        """The answer whose head (status line and headers, read at once: one read per
        answer rather than one per header line) is ``head``."""
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.strip().partition(" ")
        code = int(rest.split(" ", 1)[0])
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().title()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("Connection", "").lower() != "close"
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            body = b""
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif "Content-Length" in headers:
            body = await reader.readexactly(int(headers["Content-Length"]))
        else:
            body = await reader.read()
            keep = False
        index = int(headers.get("X-Consul-Index", "0") or 0)
        return Response(code, index, body.decode("utf-8", "replace"), headers), keep

    def close(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            with contextlib.suppress(Exception):
                writer.close()
