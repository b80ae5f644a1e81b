"""The asyncio-streams HTTP/1.1 server behind the control socket and telemetry: keep-alive,
limits, timeouts and bad input (a 4xx answer, never a crash), over a real unix socket."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from autopilot.control import httpd
from autopilot.control.httpd import HTTPServer, Request, Response, Router, json_response
from tests.unit.control_standins import LoopThread

pytestmark = pytest.mark.timeout(30)


async def echo(request: Request) -> Response:
    return json_response({"len": len(request.body), "match": request.match_info})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(httpd, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(httpd, "READ_TIMEOUT", 0.5)
    d = tempfile.mkdtemp(prefix="aphttp", dir="/tmp")
    path = os.path.join(d, "s.sock")
    router = Router()
    router.add("GET", "/a", echo)
    router.add("POST", "/a", echo)
    router.add("POST", "/j/{name}", echo)

    async def app(request: Request) -> Response:
        try:
            return await router.resolve(request)(request)
        except httpd.HTTPError as exc:
            return httpd.error_response(exc.status, exc.message, exc.headers)

    lt = LoopThread()
    server = HTTPServer(app, max_body=1000)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    sock.setblocking(False)
    lt.run(server.listen_unix(sock))
    yield path
    lt.run(server.close(1.0))
    lt.close()
    os.unlink(path)
    os.rmdir(d)


def talk(path: str, data: bytes, wait_close: bool = True) -> bytes:
    """Send raw bytes; read until the server closes the connection (or 5 s pass)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(data)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    finally:
        s.close()
    return out


def test_keep_alive_and_pipelining(served: str) -> None:
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    out = talk(served, req * 3)  # the server closes after its idle timeout
    assert out.count(b"HTTP/1.1 200 OK") == 3 and b"Connection: close" not in out


def test_http10_closes_and_head_has_no_body(served: str) -> None:
    out = talk(served, b"GET /a HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out
    out = talk(served, b"HEAD /a HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n")


def test_bodies_chunked_and_continue(served: str) -> None:
    out = talk(served, b"POST /j/a%20b HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n"
               b"\r\nabc")
    assert b'"len": 3' in out and b'"name": "a b"' in out
    out = talk(served, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close"
               b"\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    assert b'"len": 5' in out
    out = talk(served, b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
               b"Connection: close\r\n\r\nab")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")


@pytest.mark.parametrize("data, status", [
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET nopath HTTP/1.1\r\n\r\n", b"400"),
    (b"GET /a HTTP/2.0\r\n\r\n", b"400"),
    (b"GET /a HTTP/1.1\r\nbad header\r\n\r\n", b"400"),
    (b"GET /a HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n", b"431"),
    (b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, b"413"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", b"413"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", b"408"),  # body never completes
    (b"GET /a HTTP/1.1\r\nHost: x", b"408"),  # head never completes
    (b"GET /zzz HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
    (b"PUT /a HTTP/1.1\r\nConnection: close\r\n\r\n", b"405"),
])
def test_bad_input_is_a_4xx_then_the_server_still_answers(served: str, data: bytes,
                                                          status: bytes) -> None:
    out = talk(served, data)
    assert out.split(b"\r\n", 1)[0].split(b" ")[1] == status, out[:200]
    assert b'"error"' in out
    assert b"200 OK" in talk(served, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")


def test_405_lists_allowed_methods(served: str) -> None:
    out = talk(served, b"DELETE /a HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert b"Allow: GET, HEAD, POST" in out


def test_client_hanging_up_mid_request(served: str) -> None:
    for data in (b"GET /a HT", b"POST /a HTTP/1.1\r\nContent-Length: 50\r\n\r\nabc"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(served)
        s.sendall(data)
        s.close()
    assert b"200 OK" in talk(served, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")
