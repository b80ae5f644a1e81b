"""The Consul transport's HTTP/1.1 reading against a real loopback server that answers
the way agents do: Content-Length, chunked (split across writes, with trailers), a body
that ends at EOF, a kept connection the server closed, a hung server, an oversized head."""

from __future__ import annotations

import asyncio
import re
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


async def nowait(t: Transport, paths: list[str]
                 ) -> list[asyncio.Future[tuple[object, BaseException | None]]]:
    """``send_nowait`` for each path in one loop iteration; a future per answer."""
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[tuple[object, BaseException | None]]] = []
    for path in paths:
        fut: asyncio.Future[tuple[object, BaseException | None]] = loop.create_future()
        futs.append(fut)

        def done(resp: object, exc: BaseException | None,
                 fut: asyncio.Future[tuple[object, BaseException | None]] = fut) -> None:
            fut.set_result((resp, exc))

        assert t.send_nowait("PUT", path, {"Status": "passing"}, 5, done, loop)
    return futs


def test_heartbeats_of_one_iteration_are_pipelined_in_one_write() -> None:
    """Three ``send_nowait`` calls in one loop iteration leave in one ``send`` on one kept
    connection; the answers (all in one write, then one by one, split mid-head, and one
    chunked) reach each caller in order, and the connection is kept."""
    async def main() -> None:
        reads: list[bytes] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)  # the first request opens the connection
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            for rnd in range(3):
                data = await r.read(65536)  # one pipelined batch arrives in one segment
                reads.append(data)
                paths = re.findall(rb"PUT (\S+) HTTP/1.1\r\n", data)
                answers = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(p), p) for p in paths]
                if rnd == 2:  # a chunked answer in the middle
                    answers[1] = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"%x\r\n%s\r\n0\r\n\r\n" % (len(paths[1]), paths[1]))
                if rnd == 0:
                    w.write(b"".join(answers))
                else:
                    blob = b"".join(answers)
                    for i in range(0, len(blob), 17):  # split anywhere, heads included
                        w.write(blob[i:i + 17])
                        await w.drain()
                        await asyncio.sleep(0)
                await w.drain()
            await r.read(1)

        server, t = await serve(handler)
        async with server:
            assert (await t.request("GET", "/open", timeout=5)).body == "ok"
            for rnd in range(3):
                paths = [f"/v1/agent/check/update/r{rnd}s{i}" for i in range(3)]
                futs = await nowait(t, paths)
                results = await asyncio.wait_for(asyncio.gather(*futs), 5)
                for path, (resp, exc) in zip(paths, results, strict=True):
                    assert exc is None
                    assert (resp.code, resp.body) == (200, path)  # type: ignore[attr-defined]
                assert len(t._idle) == 1  # kept for the next batch
            assert t.opened == 1
            assert [data.count(b"PUT ") for data in reads] == [3, 3, 3]
            t.close()

    run(main())


def test_a_pipelined_batch_cut_short_fails_every_unanswered_request() -> None:
    """The agent answers the first of three pipelined requests with ``Connection: close``
    and hangs up: the first gets its answer, the other two an error (their callers send
    again), and the connection is not kept. A batch whose agent hangs up at once fails
    them all."""
    async def main() -> None:
        state = {"round": 0}

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await r.read(65536)
            if state["round"] == 0:
                w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
                await w.drain()
            w.close()

        server, t = await serve(handler)
        async with server:
            for rnd in range(2):
                state["round"] = rnd
                assert (await t.request("GET", "/open", timeout=5)).body == "ok"
                futs = await nowait(t, ["/a", "/b", "/c"])
                results = await asyncio.wait_for(asyncio.gather(*futs), 5)
                errors = [exc for _, exc in results]
                if rnd == 0:
                    assert errors[0] is None and results[0][0].body == "ok"  # type: ignore
                    assert all(isinstance(e, ConnectionError) for e in errors[1:])
                else:
                    assert all(isinstance(e, (ConnectionError, asyncio.IncompleteReadError))
                               for e in errors), errors
                assert t._idle == []
            t.close()

    run(main())


@pytest.mark.timing
def test_a_pipelined_batch_times_out_as_one() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await r.read(65536)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # one of two
            await w.drain()
            await asyncio.sleep(10)

        server, t = await serve(handler)
        async with server:
            assert (await t.request("GET", "/open", timeout=5)).body == "ok"
            loop = asyncio.get_running_loop()
            futs = []
            for path in ("/a", "/b"):
                fut = loop.create_future()
                futs.append(fut)
                assert t.send_nowait("PUT", path, None, 0.3,
                                     lambda resp, exc, f=fut: f.set_result((resp, exc)), loop)
            t0 = loop.time()
            (first, e1), (_, e2) = await asyncio.wait_for(asyncio.gather(*futs), 5)
            assert e1 is None and first.body == "ok"
            assert isinstance(e2, TimeoutError)
            assert loop.time() - t0 < 3
            assert t._idle == []
            t.close()

    run(main())


def test_send_nowait_without_an_idle_connection_sends_nothing() -> None:
    async def main() -> None:
        server, t = await serve(lambda r, w: asyncio.sleep(0))
        async with server:
            assert not t.send_nowait("PUT", "/a", None, 5, lambda resp, exc: None)
            assert t.opened == 0
            t.close()

    run(main())
