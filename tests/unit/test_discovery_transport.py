"""The Consul transport's HTTP/1.1 reading against a real loopback server that answers
the way agents do: Content-Length, chunked (split across writes, with trailers), a body
that ends at EOF, a kept connection the server closed, a hung server, an oversized head."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from autopilot.config.model import ConsulConfig
from autopilot.discovery.transport import MAX_HEADER, Transport

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return head


async def serve(handler: Handler) -> tuple[asyncio.Server, Transport]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Transport(ConsulConfig(address=f"127.0.0.1:{port}", scheme="http"))


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_content_length_answers_keep_one_connection() -> None:
    async def main() -> None:
        heads: list[bytes] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                try:
                    heads.append(await read_request(r))
                except asyncio.IncompleteReadError:
                    return
                w.write(b"HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nContent-Length: 2\r\n\r\n")
                await w.drain()
                w.write(b"{}")  # the body in a second write
                await w.drain()

        server, t = await serve(handler)
        async with server:
            for _ in range(3):
                resp = await t.request("PUT", "/v1/agent/check/update/x",
                                       body={"Status": "passing"}, timeout=5)
                assert (resp.code, resp.index, resp.body) == (200, 42, "{}")
            assert t.opened == 1
            assert heads[0].startswith(b"PUT /v1/agent/check/update/x HTTP/1.1\r\n")
            assert b"\r\nContent-Length: 21\r\n\r\n" in heads[0]  # {"Status": "passing"}
            t.close()

    run(main())


def test_chunked_answer_split_across_writes_with_trailers() -> None:
    async def main() -> None:
        body = b'[{"Node": "a"}, {"Node": "b"}]' * 300  # several KB: the buffer grows

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    b"X-Consul-Index: 7\r\n\r\n")
            for i in range(0, len(body), 1000):
                part = body[i:i + 1000]
                w.write(f"{len(part):x};ext=1\r\n".encode() + part[:10])
                await w.drain()
                await asyncio.sleep(0.001)
                w.write(part[10:] + b"\r\n")
                await w.drain()
            w.write(b"0\r\nX-Trailer: yes\r\n\r\n")
            await w.drain()
            await read_request(r)  # the connection was kept: a second request comes
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n")
            await w.drain()

        server, t = await serve(handler)
        async with server:
            resp = await t.request("GET", "/v1/health/service/x", params=[("index", 3)],
                                   timeout=5)
            assert (resp.code, resp.index, resp.body) == (200, 7, body.decode())
            resp = await t.request("GET", "/v1/kv/x", timeout=5)
            assert resp.body == "abc"
            assert t.opened == 1
            t.close()

    run(main())


def test_body_until_eof_and_connection_close() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")
            await w.drain()
            w.close()

        server, t = await serve(handler)
        async with server:
            resp = await t.request("GET", "/v1/status/leader", timeout=5)
            assert (resp.code, resp.body) == (200, "all of it")
            resp = await t.request("GET", "/v1/status/leader", timeout=5)
            assert resp.body == "all of it"
            assert t.opened == 2  # not kept: the body ended at EOF
            t.close()

    run(main())


def test_kept_connection_closed_by_the_agent_is_retried_on_a_fresh_one() -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.append(w)
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            if len(writers) == 1:
                try:
                    await read_request(r)  # the second request: hang up without answering
                except asyncio.IncompleteReadError:
                    pass
                w.close()

        server, t = await serve(handler)
        async with server:
            assert (await t.request("GET", "/a", timeout=5)).body == "ok"
            assert (await t.request("GET", "/b", timeout=5)).body == "ok"
            assert t.opened == 2
            t.close()

    run(main())


@pytest.mark.timing
def test_a_hung_agent_times_out_and_its_connection_is_dropped() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")  # never the rest
            await w.drain()
            await asyncio.sleep(10)

        server, t = await serve(handler)
        async with server:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await t.request("GET", "/slow", timeout=0.3)
            assert loop.time() - t0 < 3
            assert t._idle == []  # a half-read connection is never reused
            t.close()

    run(main())


def test_an_oversized_head_fails_the_request() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (MAX_HEADER + 10))
            await w.drain()
            await asyncio.sleep(5)

        server, t = await serve(handler)
        async with server:
            with pytest.raises(ValueError, match="head over"):
                await t.request("GET", "/big", timeout=5)
            t.close()

    run(main())


def test_agent_gone_mid_answer_is_an_incomplete_read() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await w.drain()
            w.close()

        server, t = await serve(handler)
        async with server:
            with pytest.raises(asyncio.IncompleteReadError):
                await t.request("GET", "/cut", timeout=5)
            t.close()

    run(main())
