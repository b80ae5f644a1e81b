"""HTTP/1.1 to the Consul agent on an asyncio protocol, with keep-alive: no thread per call.

`http.request` (the one request helper) sends through here. Idle connections are kept for
the next request, so a steady heartbeat costs one connection rather than a TCP (and TLS)
handshake each time; every request in flight has a connection of its own, so a watch parked
in a long poll never holds up a heartbeat. A request that finds its kept connection closed
by the agent before any answer is sent again once on a fresh connection.

Heartbeats (``send_nowait``) asked for in one loop iteration -- the services whose checks
exited together -- are pipelined on one kept connection: written in one ``send``, their
answers read in order as they come (HTTP/1.1 pipelining; Consul's agent and the embedded
catalog answer pipelined requests in order). One system call and one read callback for five
heartbeats instead of five of each.

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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autopilot import lazyssl
from autopilot.config.model import ConsulConfig
from autopilot.discovery.connection import split_address
from autopilot.discovery.http import Params, Response, encode_body
from autopilot.logs import get_logger

log = get_logger("autopilot.discovery")

#: kept connections; more in flight at once are closed after their answer. Five services
#: whose checks run in step heartbeat together: 4 made two new connections every round
MAX_IDLE = 8
MAX_HEADER = 64 * 1024
INITIAL_BUFFER = 4096  # a connection's read buffer; doubled for a larger answer
SHRINK_ABOVE = 64 * 1024  # a buffer grown past this is let go after its answer

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


class _Answer:
    """One answer being read: the parser's state between reads."""

    __slots__ = ("method", "waiter", "head_end", "code", "headers", "keep", "length",
                 "chunked", "pos", "parts", "to_eof")

    def __init__(self, method: str,
                 waiter: asyncio.Future[tuple[Response, bool]] | _Piped) -> None:
        self.method = method
        self.waiter = waiter
        self.head_end = -1  # where the body starts (-1: head not complete yet)
        self.code = 0
        self.headers: dict[str, str] = {}
        self.keep = False
        self.length = -1  # Content-Length (-1: none)
        self.chunked = False
        self.pos = 0  # chunked: where the next chunk-size line starts
        self.parts: list[bytes] = []
        self.to_eof = False  # neither length nor chunks: the body ends at EOF


class _Connection(asyncio.BufferedProtocol):
    """One connection to the agent as a protocol: the kernel copies the answer straight
    into this connection's buffer (``recv_into``), parsed as it arrives, and the request's
    future is resolved from the read callback. Streams cost a ``recv`` of a fresh 256 KB
    object (an ``mmap``/``munmap`` pair per answer: a TLB flush), a reader, a writer and a
    task wake-up per ``readuntil``/``readexactly``; a heartbeat's answer is 150 bytes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(INITIAL_BUFFER)
        self.n = 0  # bytes of the current answer in ``buf``
        self.answer: _Answer | None = None
        self.queue: deque[_Answer] = deque()  # pipelined answers after ``answer``, in order
        self.closed = False

    # -- asyncio's callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes. The buffer is resized only here: while asyncio holds
        the view it handed out (until ``buffer_updated`` returns) it cannot be."""
        if len(self.buf) - self.n < 1024:
            answer = self.answer
            if answer is not None and answer.chunked and answer.pos > answer.head_end:
                # drop the chunks already taken: a long answer does not grow the buffer
                del self.buf[answer.head_end:answer.pos]
                self.n -= answer.pos - answer.head_end
                answer.pos = answer.head_end
            if len(self.buf) - self.n < 1024:
                self.buf.extend(bytes(len(self.buf)))  # double it: a large answer
        return memoryview(self.buf)[self.n:]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        answer = self.answer
        if answer is None:  # nothing asked: the agent may not talk now; drop the link
            self.n = 0
            self.abort()
            return
        try:
            self._parse(answer)
        except Exception as exc:  # noqa: BLE001 - a malformed answer fails this request
            self._fail(exc)

    def eof_received(self) -> bool:
        answer = self.answer
        if answer is not None and answer.to_eof and answer.head_end >= 0:
            body = bytes(self.buf[answer.head_end:self.n])
            self._done(answer, body, False, self.n)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is not None:
            if self.n == 0:  # not a byte of the answer: the agent closed a kept link
                self._fail(_Stale())
            else:
                self._fail(asyncio.IncompleteReadError(bytes(self.buf[:self.n]), None))

    # -- one exchange ----------------------------------------------------------------------
    def send(self, raw: bytes, method: str,
             waiter: asyncio.Future[tuple[Response, bool]] | _Piped) -> None:
        assert self.transport is not None
        self.n = 0
        self.answer = _Answer(method, waiter)
        self.transport.write(raw)

    def send_pipelined(self, requests: list[tuple[bytes, str, _Piped]]) -> None:
        """Several requests in one write; their answers come back in the same order."""
        assert self.transport is not None
        self.n = 0
        self.answer = _Answer(requests[0][1], requests[0][2])
        self.queue.extend(_Answer(method, waiter) for _, method, waiter in requests[1:])
        self.transport.write(b"".join(raw for raw, _, _ in requests))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        """Fail the answer being read and every pipelined one after it; drop the link."""
        answer, self.answer = self.answer, None
        queued, self.queue = self.queue, deque()
        self.abort()
        if answer is not None and not answer.waiter.done():
            answer.waiter.set_exception(exc)
        for later in queued:
            if not later.waiter.done():
                later.waiter.set_exception(exc)

    def _done(self, answer: _Answer, body: bytes, keep: bool, end: int) -> None:
        """``answer`` is complete; its bytes end at ``end`` in the buffer. What follows
        belongs to the next pipelined answer, if one is queued; otherwise bytes the agent
        sent unasked make the link unusable (not kept)."""
        rest = self.n - end
        following = self.queue.popleft() if self.queue else None
        if following is not None and keep:
            if rest:
                self.buf[:rest] = self.buf[end:self.n]  # same length: no resize
            self.n = rest
            self.answer = following
        else:
            keep = keep and not rest
            self.answer = None
            self.n = 0
            if len(self.buf) > SHRINK_ABOVE:
                self.buf = bytearray(INITIAL_BUFFER)  # do not hold a large answer's buffer
        index = int(answer.headers.get("X-Consul-Index", "0") or 0)
        if not answer.waiter.done():
            answer.waiter.set_result((Response(answer.code, index,
                                               body.decode("utf-8", "replace"),
                                               answer.headers), keep))
        if following is None:
            return
        if not keep:  # the agent closes after this answer: the later ones never come
            self.queue.appendleft(following)
            self._fail(_Stale())
        elif self.answer is following and self.n and not self.closed:
            self._parse(following)  # it may already be here, in the same read

    def _parse(self, answer: _Answer) -> None:
        buf, n = self.buf, self.n
        if answer.head_end < 0:
            end = buf.find(b"\r\n\r\n", 0, n)
            if end < 0:
                if n > MAX_HEADER:
                    raise ValueError(f"answer head over {MAX_HEADER} bytes")
                return
            answer.head_end = end + 4
            self._head(answer, bytes(buf[:end]))
            if answer.length == 0 and not answer.chunked and not answer.to_eof:
                self._done(answer, b"", answer.keep, answer.head_end)
                return
        start = answer.head_end
        if answer.length >= 0:
            if n - start >= answer.length:
                body = bytes(buf[start:start + answer.length])
                self._done(answer, body, answer.keep, start + answer.length)
        elif answer.chunked:
            self._chunks(answer)

    @staticmethod
    def _head(answer: _Answer, head: bytes) -> None:
        """The status line and headers (read at once, as one block)."""
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.strip().partition(" ")
        code = int(rest.split(" ", 1)[0])
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().title()] = value.strip()
        answer.code, answer.headers = code, headers
        answer.keep = version == "HTTP/1.1" and headers.get("Connection", "").lower() != "close"
        if answer.method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            answer.length = 0
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            answer.chunked = True
        elif "Content-Length" in headers:
            answer.length = int(headers["Content-Length"])
        else:
            answer.to_eof = True
            answer.keep = False

    def _chunks(self, answer: _Answer) -> None:
        """Chunks complete so far go to ``parts``; done at the last chunk and trailers
        (lines may end in CRLF or LF, as a stream's ``readline`` took them)."""
        buf, n = self.buf, self.n
        pos = answer.pos or answer.head_end
        while True:
            eol = buf.find(b"\n", pos, n)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers, then an empty line
                line = eol + 1
                while True:
                    nxt = buf.find(b"\n", line, n)
                    if nxt < 0:
                        answer.pos = pos
                        return
                    if bytes(buf[line:nxt]).strip() == b"":
                        self._done(answer, b"".join(answer.parts), answer.keep, nxt + 1)
                        return
                    line = nxt + 1
            if n < eol + 1 + size + 2:
                break  # the chunk and its CRLF are not all here yet
            answer.parts.append(bytes(buf[eol + 1:eol + 1 + size]))
            pos = eol + 1 + size + 2
        answer.pos = pos  # get_buffer drops what is before it


def _expire(waiter: asyncio.Future[tuple[Response, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


Done = Callable[[Response | None, BaseException | None], None]


class _Piped:
    """The waiter of one pipelined request: the connection's read callback (or a failure
    of the whole batch) calls the caller's ``done`` at once, where a future would have
    scheduled its done callback for the next loop iteration. The first outcome wins, as
    with a future."""

    __slots__ = ("batch", "then", "_done")

    def __init__(self, batch: _Batch, then: Done) -> None:
        self.batch = batch
        self.then = then
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: tuple[Response, bool]) -> None:
        if not self._done:
            self._done = True
            self.batch.answered(self, result[0], result[1], None)

    def set_exception(self, exc: BaseException) -> None:
        if not self._done:
            self._done = True
            self.batch.answered(self, None, False, exc)


class _Batch:
    """The ``send_nowait`` requests of one loop iteration: written together, pipelined on
    one kept connection, at the end of the iteration (``call_soon``); one timer for all.
    The connection goes back to the idle list after the last answer if every answer kept
    it; any failure fails the requests not answered yet and drops it."""

    __slots__ = ("transport", "conn", "loop", "timeout", "requests", "left", "keep", "timer")

    def __init__(self, transport: Transport, conn: _Connection,
                 loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.transport = transport
        self.conn = conn
        self.loop = loop
        self.timeout = timeout
        self.requests: list[tuple[bytes, str, _Piped]] = []
        self.left = 0
        self.keep = True
        self.timer: asyncio.TimerHandle | None = None

    def add(self, raw: bytes, method: str, done: Done) -> None:
        self.requests.append((raw, method, _Piped(self, done)))
        self.left += 1

    def flush(self) -> None:
        transport = self.transport
        if transport._batch is self:
            transport._batch = None
        if self.conn.closed:  # the agent closed it meanwhile: the callers send again
            for _, _, waiter in self.requests:
                waiter.set_exception(_Stale())
            return
        self.timer = self.loop.call_at(self.loop.time() + self.timeout, self._expire)
        self.conn.send_pipelined(self.requests)

    def _expire(self) -> None:
        self.timer = None
        self.conn._fail(TimeoutError())

    def answered(self, waiter: _Piped, resp: Response | None, keep: bool,
                 exc: BaseException | None) -> None:
        self.left -= 1
        if not keep:
            self.keep = False
        if self.left == 0:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            conn, idle = self.conn, self.transport._idle
            if self.keep and not conn.closed and len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                conn.abort()
        try:
            waiter.then(resp, exc)
        except Exception:  # noqa: BLE001 - the caller's bug must not break the connection
            log.exception("send_nowait callback failed")


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
        # the request head up to the method and target, and after them: the same bytes
        # for every request (built once, not per heartbeat)
        self._tail = ("".join(f"\r\n{h}" for h in (
            f"Host: {self.host_header}", "User-Agent: autopilot", "Accept: application/json",
            *([f"X-Consul-Token: {self.token}"] if self.token else [])))).encode("latin-1")
        self._idle: list[_Connection] = []
        self._batch: _Batch | None = None  # send_nowait's requests of this loop iteration
        self.opened = 0  # connections opened so far (a measure of keep-alive)

    def encode(self, method: str, target: str, data: bytes) -> bytes:
        """The request's bytes."""
        length = f"\r\nContent-Length: {len(data)}" if data or method in ("PUT", "POST") \
            else ""
        return b"".join((f"{method} {target} HTTP/1.1".encode("latin-1"), self._tail,
                         length.encode("latin-1"), b"\r\n\r\n", data))

    async def request(self, method: str, path: str, *, params: Params = (), body: Any = None,
                      timeout: float) -> Response:
        """One request and its answer; TimeoutError after ``timeout``, OSError (or
        IncompleteReadError) when the agent cannot be reached or hangs up."""
        target = path + ("?" + urllib.parse.urlencode(list(params)) if params else "")
        raw = self.encode(method, target, encode_body(body))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue  # the agent closed it while it was idle
            try:
                return await self._exchange(loop, conn, raw, method, deadline)
            except _Stale:
                continue  # the agent closed it meanwhile: try the next, then a new one
        async with asyncio.timeout_at(deadline):
            conn = await self._open(loop)
        try:
            return await self._exchange(loop, conn, raw, method, deadline)
        except _Stale as exc:
            raise ConnectionResetError("consul closed the connection") from exc

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        self.opened += 1
        _, conn = await loop.create_connection(
            _Connection, self.host, self.port, ssl=self.ssl,
            server_hostname=self.server_hostname)
        return conn

    async def _exchange(self, loop: asyncio.AbstractEventLoop, conn: _Connection, raw: bytes,
                        method: str, deadline: float) -> Response:
        """Send ``raw`` on ``conn`` and wait for its answer: one future, resolved by the
        connection's read callback or failed by one timer at ``deadline``."""
        waiter: asyncio.Future[tuple[Response, bool]] = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        keep = False
        try:
            conn.send(raw, method, waiter)
            resp, keep = await waiter
            return resp
        finally:
            timer.cancel()
            if keep and not conn.closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.abort()

    def send_nowait(self, method: str, path: str, body: Any, timeout: float, done: Done,
                    loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Send on a kept idle connection without waiting (False: none is idle, nothing
        sent); ``done(response, None)`` or ``done(None, error)`` is called on the loop
        with the answer: no coroutine, task or wake-up of the caller. The requests of one
        loop iteration are pipelined on one connection, written once at its end (see
        ``_Batch``). A kept connection the agent closed meanwhile is an error here
        (``_Stale``), not retried; so is any failure of the batch."""
        batch = self._batch
        if batch is None:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    break
            else:
                return False
            if loop is None:
                loop = asyncio.get_running_loop()
            batch = self._batch = _Batch(self, conn, loop, timeout)
            loop.call_soon(batch.flush)
        batch.add(self.encode(method, path, encode_body(body)), method, done)
        return True

    def close(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.conn.abort()  # its flush fails the requests (the callers send again)
        while self._idle:
            with contextlib.suppress(Exception):
                self._idle.pop().abort()
