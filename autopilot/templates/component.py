"""The template component: render, keep one blocking query per dependency, re-render
(debounced) when one of them changes, write atomically, run the reload command.

The render itself runs in a worker thread (Jinja2 is synchronous); it reads values the
watches already hold, and fetches only what it has not seen before, through the shared
transport on the loop (`discovery.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from autopilot import events as ev
from autopilot.aio import Backoff, backoff_delay, cancel_all
from autopilot.config.model import TemplateConfig
from autopilot.context import Context
from autopilot.discovery.poll import BlockingQuery
from autopilot.jobs.hooks import run_hook
from autopilot.jobs.process import child_env
from autopilot.logs import get_logger
from autopilot.templates.debounce import Debouncer
from autopilot.templates.deps import Dep, FetchError
from autopilot.templates.render import make_environment, node_facts, render
from autopilot.templates.write import write_if_changed

log = get_logger("autopilot.templates")

WATCH_WAIT = 10.0  # seconds a blocking query may park
FETCH_TIMEOUT = 5.0  # a plain (non-blocking) read during a render
RENDER_TIMEOUT = 30.0
FIRST_RENDER_TIMEOUT = 5.0  # start() waits this long for the first file


class Template:
    """Component: ``start()``, ``stop()``; ``render_now()`` for tests and reloads."""

    fatal = False  # a failure to start is logged; autopilot runs on

    def __init__(self, ctx: Context, cfg: TemplateConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.key = f"template.{cfg.destination}"
        self.source_name = f"template.{os.path.basename(cfg.destination)}"
        self.debouncer = Debouncer(cfg.wait_min, cfg.wait_max)
        self.values: dict[Dep, Any] = {}
        self.watches: dict[Dep, asyncio.Task] = {}
        self.renders = 0  # successful renders
        self.writes = 0  # renders that changed the file
        self.last_error: str | None = None
        self._env = make_environment(cfg.source)
        self._node = node_facts(ctx.hostname)
        self._wake = asyncio.Event()
        self._retry_at: float | None = None
        self._failures = 0
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.closed = False  # loops end (a cancel can be swallowed: see autopilot/aio.py)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.render_now()), FIRST_RENDER_TIMEOUT)
        self._task = asyncio.create_task(self._loop(), name=self.key)

    async def stop(self) -> None:
        self.closed = True
        await cancel_all([self._task, *self.watches.values()])
        self._task = None
        self.watches.clear()

    # ---- the loop ----------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self.closed:
            now = time.monotonic()
            due = [t for t in (self.debouncer.due(), self._retry_at) if t is not None]
            timeout = max(0.0, min(due) - now) if due else None
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
            now = time.monotonic()
            if self.debouncer.ready(now) or (self._retry_at is not None and now >= self._retry_at):
                self.debouncer.fire()
                await self.render_now()

    async def render_now(self) -> bool:
        """Render, write if changed, run the command; False (file kept) on any error."""
        async with self._lock:
            fetched: dict[Dep, tuple[int, Any]] = {}
            try:
                text, used = await self._render(fetched)
            except Exception as exc:  # noqa: BLE001 - any render failure keeps the old file
                self._watch_new(fetched)  # a change of what it read may fix it: watch that
                self._failed(f"render failed: {exc}")
                return False
            self._watch_new(fetched)
            for dep in list(self.watches):
                if dep not in used:
                    self.watches.pop(dep).cancel()  # and it ends: it is no longer listed
                    self.values.pop(dep, None)
            try:
                written = await asyncio.to_thread(
                    write_if_changed, self.cfg.destination, text, self.cfg.mode,
                    self.cfg.owner, self.cfg.group)
            except Exception as exc:  # noqa: BLE001 - e.g. no such owner, read-only fs
                self._failed(f"write failed: {exc}")
                return False
            self.renders += 1
            self._failures = 0
            self._retry_at = None
            self.last_error = None
            if not written:
                return True
            self.writes += 1
            log.info("template rendered", destination=self.cfg.destination)
            self.ctx.bus.publish(ev.Event(ev.CHANGED, self.source_name,
                                          detail=self.cfg.destination))
            if self.cfg.command:
                await self._run_command()
            return True

    def _watch_new(self, fetched: dict[Dep, tuple[int, Any]]) -> None:
        for dep, (index, value) in list(fetched.items()):
            self.values[dep] = value
            if dep not in self.watches:
                self.watches[dep] = asyncio.create_task(self._watch(dep, index),
                                                        name=f"{self.key}:{dep}")

    async def _render(self, fetched: dict[Dep, tuple[int, Any]]) -> tuple[str, set[Dep]]:
        """Render in a worker thread; ``fetched`` receives what had to be read afresh."""
        known = dict(self.values)

        consul = self.ctx.consul
        loop = asyncio.get_running_loop()

        def read(dep: Dep) -> tuple[int, Any]:
            """From the render thread: the request runs on the loop (the shared transport,
            no py-consul client per thread) while this thread waits for its answer."""
            assert consul is not None
            path, params = dep.query()
            resp = asyncio.run_coroutine_threadsafe(
                consul.request("GET", path, params=params, timeout=FETCH_TIMEOUT),
                loop).result(FETCH_TIMEOUT + 1)
            return resp.index, dep.parse(resp)

        def work() -> tuple[str, set[Dep]]:
            def fetch(dep: Dep) -> Any:
                if dep in known:
                    return known[dep]
                if dep not in fetched:
                    if consul is None:
                        raise FetchError("no catalog configured (consul is off)")
                    fetched[dep] = read(dep)
                return fetched[dep][1]

            return render(self._env, self.cfg.source, fetch, node=self._node)

        text, used = await asyncio.wait_for(asyncio.to_thread(work), RENDER_TIMEOUT)
        return text, used

    def _failed(self, message: str) -> None:
        self.last_error = message
        self._failures += 1
        delay = backoff_delay(self._failures, 0.5, 30.0, jitter=False)
        self._retry_at = time.monotonic() + delay
        log.error(message, destination=self.cfg.destination, retry_in=delay)
        self.ctx.bus.publish(ev.Event(ev.ERROR, self.source_name, detail=message))

    async def _run_command(self) -> None:
        assert self.cfg.command
        env = child_env(dict(os.environ), self.ctx.child_env)
        result = await run_hook(list(self.cfg.command), env, self.cfg.command_timeout,
                                name=self.source_name)
        if not result.ok:
            msg = (f"command timed out after {self.cfg.command_timeout}s" if result.timed_out
                   else f"command failed: exit {result.rc} {result.error}".strip())
            log.error(msg, destination=self.cfg.destination)
            self.ctx.bus.publish(ev.Event(ev.ERROR, self.source_name, detail=msg))

    # ---- one blocking query per dependency ---------------------------------------------

    async def _watch(self, dep: Dep, index: int) -> None:
        assert self.ctx.consul is not None
        path, params = dep.query()
        query = BlockingQuery(self.ctx.consul, path, params, wait=WATCH_WAIT,
                              timeout=FETCH_TIMEOUT, retry=Backoff(0.5, 10.0, jitter=False))
        query.index = index  # the render read it at this index: wait for what comes next
        try:
            while not self.closed and self.watches.get(dep) is asyncio.current_task():
                try:
                    value = dep.parse(await query.poll())
                except Exception as exc:  # noqa: BLE001 - unreachable: the query backs off
                    log.warning("template watch failed", dependency=str(dep), error=str(exc))
                    continue
                if value != self.values.get(dep, _MISSING):
                    self.values[dep] = value
                    self.debouncer.change(time.monotonic())
                    self._wake.set()
        finally:
            query.close()


_MISSING = object()
