"""Function jobs: a handler that runs only while there are requests (docs/functions.md).

autopilot listens on the job's ``port`` itself, so the function answers (and is registered
in the catalog) at zero instances. Each accepted connection is one invocation:

- no handler running: start ``exec`` and hand it a listening socket the way systemd's
  socket activation does (fd 3, ``LISTEN_FDS=1``, ``LISTEN_PID`` = the handler's pid,
  ``LISTEN_FDNAMES``). That inner socket is bound by autopilot (loopback, a free port) and
  stays open between handlers, so a connection made while the handler is still starting
  waits in its backlog instead of failing: a scale-from-zero loses no request;
- the connection's bytes are relayed to the inner socket and back. Relaying (instead of
  handing out the public socket) is what lets autopilot count invocations and durations,
  cap concurrency and see the first response of a cold start;
- at most ``maxConcurrency`` connections are relayed at once; autopilot accepts no more
  until one ends, so the others wait in the public socket's backlog;
- ``idleTimeout`` after the last connection ended, the handler gets ``stopSignal`` (SIGKILL at
  ``stopTimeout``). A connection arriving while it stops waits for the stop, then starts a
  fresh handler: a stopping handler is never handed new work.

The handler's pid is the job's pid while it runs; ``ctl`` start/stop/signal work as for any
job. Metrics (``metric_families``) are exposed by the telemetry endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from autopilot.config.model import FunctionConfig, JobConfig
from autopilot.context import Context
from autopilot.jobs.job import Job
from autopilot.jobs.process import Process, child_env
from autopilot.logs import get_logger

log = get_logger("autopilot.function")

#: the fd a socket-activated process finds its first socket at (SD_LISTEN_FDS_START)
LISTEN_FD = 3
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, math.inf)
CHUNK = 65536


class Histogram:
    """Cumulative buckets and a sum, exposed at scrape time (no registry of our own: the
    telemetry endpoint's registry belongs to the telemetry component)."""

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1

    @property
    def count(self) -> int:
        return self.counts[-1]

    def buckets(self) -> list[tuple[str, int]]:
        return [("+Inf" if math.isinf(b) else repr(b), n)
                for b, n in zip(BUCKETS, self.counts, strict=True)]


def activation_argv(argv: list[str], fd: int) -> list[str]:
    """Wrap ``argv`` so the handler finds ``fd`` at fd 3 and ``LISTEN_PID`` is its own pid.

    The pid is only known after the fork, so a shell sets it and then ``exec``s the handler
    (same pid). bash, not sh: dash's redirections take one-digit descriptors only."""
    moves = "" if fd == LISTEN_FD else f"exec {LISTEN_FD}<&{fd} {fd}<&-; "
    script = moves + 'export LISTEN_PID=$$; exec "$@"'
    return ["/bin/bash", "-c", script, "autopilot-function", *argv]


class FunctionJob(Job):
    """A job whose process is started by connections and stopped when idle."""

    def __init__(self, ctx: Context, cfg: JobConfig, **kwargs: Any) -> None:
        super().__init__(ctx, cfg, **kwargs)
        assert cfg.function is not None
        self.fn: FunctionConfig = cfg.function
        self._listener: socket.socket | None = None
        self._inner: socket.socket | None = None
        self.inner_port = 0
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.fn.max_concurrency)
        self._idle: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._spawned_at = 0.0
        self._cold_pending = False
        self._drained = asyncio.Event()
        self._drained.set()
        # figures (see metric_families)
        self.in_flight = 0
        self.cold_starts = 0
        self.scale_downs = 0
        self.invocations = {"ok": 0, "error": 0}
        self.durations = Histogram()
        self.cold_start_seconds = Histogram()

    # -- sockets ------------------------------------------------------------------------------
    def _bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.fn.bind else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((self.fn.bind, self.cfg.port))
            lsock.listen(self.fn.backlog)
            lsock.setblocking(False)
            inner = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            inner.bind(("127.0.0.1", 0))
            inner.listen(self.fn.backlog)
        except OSError:
            lsock.close()
            raise
        self._listener, self._inner = lsock, inner
        self.inner_port = inner.getsockname()[1]

    def _close_listener(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, late: bool = False) -> None:
        if self._sub is not None:
            return
        try:
            self._bind()
        except OSError as exc:
            raise OSError(exc.errno, f"function {self.name}: cannot listen on "
                                     f"{self.fn.bind}:{self.cfg.port}: {exc.strerror}") from exc
        await super().start(late)
        self._accept_task = self._spawn(self._accept_loop(), "accept")
        self._set_status("healthy")
        self._log.info("function listening", address=f"{self.fn.bind}:{self.cfg.port}",
                       idle_timeout=self.fn.idle_timeout, max_concurrency=self.fn.max_concurrency)

    def _fire(self) -> None:
        """Events never start a function: its first connection does."""

    def _new_process(self) -> Process:
        cfg = self.cfg
        assert cfg.exec is not None and self._inner is not None
        fd = self._inner.fileno()
        env = child_env(None, self.ctx.child_env, cfg.env,
                        {"LISTEN_FDS": "1", "LISTEN_FDNAMES": self.fn.fd_name})
        self._spawned_at = time.monotonic()
        self._cold_pending = True
        self.cold_starts += 1
        self._log.info("cold start", cold_starts=self.cold_starts)
        return Process(activation_argv(cfg.exec, fd), env=env, cwd=cfg.workdir,
                       user=cfg.user, group=cfg.group, raw=cfg.logging_raw,
                       log_fields={"job": self.name}, capture=False, pass_fds=(fd,))

    @property
    def instances(self) -> int:
        return 1 if self.process_running else 0

    async def _halt(self) -> None:
        """Stop accepting, let the connections in flight finish (up to stopTimeout), then
        end the job as any other (stopping hooks, the handler's stop, stopped)."""
        self._close_listener()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.cfg.stop_timeout)
        await super()._halt()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def kill_all(self) -> None:
        super().kill_all()
        self._close_listener()

    # -- accepting and relaying -------------------------------------------------------------------
    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        listener = self._listener
        while True:
            await self._slots.acquire()
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE, ENOBUFS…: the socket stays, try again shortly
                self._slots.release()
                self._log.warning("accept failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                self._slots.release()
                raise
            self.in_flight += 1
            self._drained.clear()
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            task = loop.create_task(self._serve(conn), name=f"function:{self.name}:conn")
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _serve(self, conn: socket.socket) -> None:
        started = time.monotonic()
        ok = False
        writers: list[asyncio.StreamWriter] = []
        try:
            await self._ensure_handler()
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.inner_port)
            writers.append(up_w)
            down_r, down_w = await asyncio.open_connection(sock=conn)
            writers.append(down_w)
            ok = await self._relay(down_r, down_w, up_r, up_w)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
            self._log.warning("invocation failed", error=str(exc) or type(exc).__name__)
        finally:
            for w in writers:
                w.close()
            if not writers:
                conn.close()
            self._finish(ok, time.monotonic() - started)

    async def _relay(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter,
                     up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> bool:
        """Copy both ways until the handler has answered and closed; True if it answered."""
        answered = False

        async def request() -> None:
            while data := await down_r.read(CHUNK):
                up_w.write(data)
                await up_w.drain()
            if up_w.can_write_eof():
                up_w.write_eof()

        async def response() -> None:
            nonlocal answered
            while data := await up_r.read(CHUNK):
                if not answered:
                    answered = True
                    self._first_byte()
                down_w.write(data)
                await down_w.drain()

        sending = asyncio.ensure_future(request())
        try:
            await response()
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        with contextlib.suppress(OSError, ConnectionError):
            if down_w.can_write_eof():
                down_w.write_eof()
            await down_w.drain()
        return answered

    def _first_byte(self) -> None:
        if self._cold_pending:
            self._cold_pending = False
            elapsed = time.monotonic() - self._spawned_at
            self.cold_start_seconds.observe(elapsed)
            self._log.info("handler answered after cold start", seconds=round(elapsed, 4))

    async def _ensure_handler(self) -> None:
        """Wait out a scale-down in progress, then make sure a handler runs (start one)."""
        while self._stopping is not None:
            await asyncio.shield(self._stopping)
        if self.halting:
            raise ConnectionAbortedError(f"function {self.name} is stopping")
        if not self.process_running and self._run_task is None:
            self._manual_stop = False
            self._restarts_left = self.cfg.restarts
            self._run_task = self._spawn(self._run_loop(), "run")

    def _finish(self, ok: bool, seconds: float) -> None:
        self.invocations["ok" if ok else "error"] += 1
        self.durations.observe(seconds)
        self.in_flight -= 1
        self._slots.release()
        if self.in_flight == 0:
            self._drained.set()
            if not self.halting:
                self._idle = asyncio.get_running_loop().call_later(self.fn.idle_timeout,
                                                                   self._on_idle)

    # -- scaling to zero ----------------------------------------------------------------------------
    def _on_idle(self) -> None:
        self._idle = None
        if self.in_flight or self.halting or self._stopping is not None:
            return
        if not self.process_running and self._run_task is None:
            return
        self._stopping = self._spawn(self._scale_to_zero(), "scale-to-zero")

    async def _scale_to_zero(self) -> None:
        try:
            self._log.info("idle: stopping the handler", idle_timeout=self.fn.idle_timeout)
            await self.stop_process()
            self.scale_downs += 1
        finally:
            self._stopping = None

    def snapshot(self) -> dict[str, object]:
        return {**super().snapshot(), "function": {
            "instances": self.instances, "in_flight": self.in_flight,
            "cold_starts": self.cold_starts, "invocations": dict(self.invocations)}}


def metric_families(jobs: Iterable[Any]) -> Iterator[Any]:
    """Prometheus families for every function job (label ``function``), for the telemetry
    endpoint's collector."""
    from autopilot.telemetry_metrics import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    fns = [j for j in jobs if isinstance(j, FunctionJob)]
    if not fns:
        return
    cold = CounterMetricFamily("autopilot_function_cold_starts",
                               "Handler starts caused by a connection at zero instances",
                               labels=["function"])
    calls = CounterMetricFamily("autopilot_function_invocations",
                                "Connections relayed to the handler (error: no answer)",
                                labels=["function", "outcome"])
    downs = CounterMetricFamily("autopilot_function_scale_downs",
                                "Handlers stopped after idleTimeout", labels=["function"])
    inst = GaugeMetricFamily("autopilot_function_instances", "Handler processes running (0 or 1)",
                             labels=["function"])
    busy = GaugeMetricFamily("autopilot_function_in_flight", "Connections being relayed now",
                             labels=["function"])
    dur = HistogramMetricFamily("autopilot_function_duration_seconds",
                                "Invocation time, accept to close", labels=["function"])
    start = HistogramMetricFamily("autopilot_function_cold_start_seconds",
                                  "Handler start to its first response byte",
                                  labels=["function"])
    for j in fns:
        cold.add_metric([j.name], j.cold_starts)
        for outcome, n in sorted(j.invocations.items()):
            calls.add_metric([j.name, outcome], n)
        downs.add_metric([j.name], j.scale_downs)
        inst.add_metric([j.name], j.instances)
        busy.add_metric([j.name], j.in_flight)
        dur.add_metric([j.name], j.durations.buckets(), j.durations.sum)
        start.add_metric([j.name], j.cold_start_seconds.buckets(), j.cold_start_seconds.sum)
    yield from (cold, calls, downs, inst, busy, dur, start)
