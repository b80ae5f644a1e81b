"""Shared pieces for the discovery and watch tests (no tests here).

The components run in-process on a real asyncio loop with a real EventBus and Context; Consul
is the real `autopilot catalog` process over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

from autopilot.config.model import (
    Config,
    ConsulConfig,
    HealthConfig,
    JobConfig,
    TelemetryConfig,
    TLSConfig,
    WatchConfig,
)
from autopilot.context import Context
from autopilot.discovery import connect
from autopilot.events import Event, EventBus
from tests import helpers

HOST = "node1"


def make_ctx(address: str | None, *, jobs: Iterable[JobConfig] = (),
             watches: Iterable[WatchConfig] = (), telemetry: TelemetryConfig | None = None,
             scheme: str = "http", token: str | None = None, tls: TLSConfig | None = None,
             environ: Mapping[str, str] | None = None) -> Context:
    consul_cfg = None if address is None else ConsulConfig(
        address=address, scheme=scheme, token=token, tls=tls or TLSConfig())
    cfg = Config(consul=consul_cfg, jobs=list(jobs), watches=list(watches), telemetry=telemetry)
    return Context(config=cfg, bus=EventBus(), consul=connect(consul_cfg, environ or {}),
                   hostname=HOST)


def job(name: str = "web", *, ttl: float = 5, interval: float = 1, port: int = 8080,
        **kw: Any) -> JobConfig:
    kw.setdefault("interfaces", ["lo"])
    return JobConfig(name=name, port=port, health=HealthConfig(interval=interval, ttl=ttl), **kw)


async def until(cond: Callable[[], Any], timeout: float = 5.0, message: str = "condition", *,
                interval: float = 0.02) -> Any:
    """``tests.helpers.until`` with ``cond`` in a thread: these conditions make blocking
    HTTP requests, and what they ask may be served on this loop (a Forwarder)."""
    return await helpers.until(cond, timeout, message, interval=interval, in_thread=True)


class Recorder:
    """Every bus event with its arrival time (monotonic)."""

    def __init__(self, bus: EventBus) -> None:
        self.sub = bus.subscribe("test-recorder")
        self.events: list[tuple[float, Event]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            e = await self.sub.get()
            self.events.append((time.monotonic(), e))

    def codes(self, source: str) -> list[str]:
        return [e.code for _, e in self.events if e.source == source]

    def first(self, code: str, source: str, after: float = 0.0) -> float | None:
        return next((t for t, e in self.events
                     if e.code == code and e.source == source and t >= after), None)

    def close(self) -> None:
        self.task.cancel()
        self.sub.close()


def agent_services(url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"X-Consul-Token": token} if token else {}
    r = requests.get(url + "/v1/agent/services", headers=headers, timeout=2)
    r.raise_for_status()
    return r.json()


def agent_check(url: str, check_id: str) -> dict[str, Any] | None:
    r = requests.get(url + "/v1/agent/checks", timeout=2)
    r.raise_for_status()
    return r.json().get(check_id)


def put_service(url: str, name: str, sid: str, port: int, *, status: str = "passing",
                tags: list[str] | None = None, address: str = "127.0.0.1",
                ttl: str = "60s") -> None:
    body = {"ID": sid, "Name": name, "Port": port, "Address": address, "Tags": tags or [],
            "Check": {"CheckID": f"service:{sid}", "TTL": ttl, "Status": status}}
    requests.put(url + "/v1/agent/service/register", json=body, timeout=2).raise_for_status()


def set_check(url: str, sid: str, status: str, output: str = "") -> None:
    requests.put(url + f"/v1/agent/check/update/service:{sid}",
                 json={"Status": status, "Output": output}, timeout=2).raise_for_status()


def deregister(url: str, sid: str) -> None:
    requests.put(url + f"/v1/agent/service/deregister/{sid}", timeout=2).raise_for_status()


class Forwarder:
    """A TCP front for the catalog that pipes bytes through; with ``server_ctx`` it is an
    HTTPS front (TLS terminated here). ``freeze()`` makes it go silent without closing
    anything (a network partition that drops packets); ``thaw()`` lets the bytes flow again.
    ``requests`` lists every HTTP request that went through, as ``(monotonic time, method,
    path, body)`` in arrival order: what the client sent, seen from the outside.

    Runs its own loop in a thread."""

    def __init__(self, server_ctx: ssl.SSLContext | None, backend_port: int) -> None:
        self.server_ctx = server_ctx
        self.backend_port = backend_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._gate: asyncio.Event | None = None
        self.requests: list[tuple[float, str, str, bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(lambda: self._gate and self._gate.clear())

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(lambda: self._gate and self._gate.set())

    def start(self) -> Forwarder:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.server_ctx))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       seen: Callable[[bytes], None] | None = None) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    assert self._gate is not None
                    await self._gate.wait()
                    if seen is not None:
                        seen(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w, self._requests_reader()), pipe(up_r, writer))

    def _requests_reader(self) -> Callable[[bytes], None]:
        """Splits one connection's client bytes into HTTP/1.1 requests (Content-Length
        bodies: what our clients send) and records each in ``requests``."""
        buf = bytearray()

        def seen(data: bytes) -> None:
            buf.extend(data)
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head = bytes(buf[:end]).decode("latin-1").split("\r\n")
                length = next((int(h.split(":", 1)[1]) for h in head[1:]
                               if h.lower().startswith("content-length:")), 0)
                if len(buf) < end + 4 + length:
                    return
                method, path = head[0].split(" ")[:2]
                body = bytes(buf[end + 4:end + 4 + length])
                del buf[:end + 4 + length]
                self.requests.append((time.monotonic(), method, path, body))

        return seen

    def stop(self) -> None:
        def close() -> None:
            if self._server:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(5)


TLSForwarder = Forwarder
