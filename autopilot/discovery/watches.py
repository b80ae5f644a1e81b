"""Watches: a service's passing instances, or a Consul KV key / prefix, turned into events.

ContainerPilot polled `/v1/health/service/<name>?passing` every `interval` seconds, so a
change reached a hook after up to one interval. Here a watch parks in a Consul blocking query
(`index` + `wait`) and wakes within milliseconds of the change. The edge semantics are
ContainerPilot's: compare the passing instances (count, and address+port sorted by service
ID); on a change publish `changed`, then `healthy` (count > 0) or `unhealthy`. The starting
state is "no instances", so a first answer with none is no change. A failed query publishes
nothing; the watch then backs off (with jitter) and polls every `interval` until a query
succeeds, and then goes back to blocking queries.

KV watches (autopilot, `kind: "key"` / `"keyprefix"`): `changed` when the key's value or
ModifyIndex changes (prefix: the set of keys and their ModifyIndexes); `healthy` while the
key (or any key under the prefix) exists, `unhealthy` when it is gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from autopilot import events as ev
from autopilot.aio import backoff_delay, cancel_all
from autopilot.config.model import WatchConfig
from autopilot.context import Context

log = structlog.get_logger("autopilot.discovery")

WAIT = 30.0  # seconds a blocking query parks in Consul
CALL_TIMEOUT = 5.0  # a non-blocking query
RETRY_MIN = 0.25
RETRY_CAP = 5.0  # the retry delay when `interval` is not set


class Watch:
    """A component: one `watches[]` entry."""

    def __init__(self, ctx: Context, cfg: WatchConfig, *, blocking: bool = True,
                 wait: float = WAIT) -> None:
        """``blocking=False`` is ContainerPilot's model (a plain poll every ``interval``),
        kept for the benchmark and for agents that mishandle blocking queries."""
        self.ctx = ctx
        self.cfg = cfg
        self.name = cfg.name
        self.source = cfg.source
        self.key = f"watch.{cfg.name}"
        self.blocking = blocking
        self.wait = wait
        #: the instance count (`containerpilot_watch_instances{service}`)
        self.instances = 0
        #: the raw last answer (health entries or KV entries) and its Consul index
        self.entries: list[dict[str, Any]] = []
        self.index = 0
        self.failing = False
        self._state: Any = ()  # the starting state: nothing
        self._task: asyncio.Task | None = None
        self._abandon = asyncio.Event()  # Consul found unreachable: leave the long poll
        self._remove_listener: Any = None

    async def start(self) -> None:
        if self.ctx.consul is None:
            log.warning("watch ignored: discovery is off", watch=self.name)
            return
        self._remove_listener = self.ctx.consul.on_unreachable(self._abandon.set)
        self._task = asyncio.create_task(self._run(), name=self.key)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if self._remove_listener:
            self._remove_listener()
            self._remove_listener = None
        if task is not None:
            await cancel_all([task])

    # ---- queries -------------------------------------------------------------------------------
    def _query(self, index: int | None):
        cfg, wait = self.cfg, f"{self.wait:g}s"
        extra: dict[str, Any] = {"index": index, "wait": wait} if index else {}
        if cfg.dc:
            extra["dc"] = cfg.dc
        if cfg.kind == "service":
            if cfg.tag:
                extra["tag"] = cfg.tag
            return lambda c: c.health.service(cfg.name, passing=True, **extra)
        key = cfg.key if cfg.key is not None else cfg.name
        if cfg.kind == "keyprefix":
            return lambda c: c.kv.get(key, recurse=True, **extra)
        return lambda c: c.kv.get(key, **extra)

    def _summarise(self, data: Any) -> tuple[Any, int, list[dict[str, Any]]]:
        """(comparable state, instance count, entries) for one answer."""
        kind = self.cfg.kind
        if kind == "service":
            entries = list(data or [])
            rows = []
            for entry in entries:
                svc = entry.get("Service") or {}
                node = entry.get("Node") or {}
                rows.append((svc.get("ID", ""), svc.get("Address") or node.get("Address", ""),
                             svc.get("Port", 0)))
            rows.sort()
            return tuple((addr, port) for _, addr, port in rows), len(rows), entries
        if kind == "keyprefix":
            entries = list(data or [])
            state = tuple(sorted((e.get("Key"), e.get("ModifyIndex")) for e in entries))
            return state, len(entries), entries
        if not data:
            return (), 0, []
        return (data.get("ModifyIndex"), data.get("Value")), 1, [data]

    # ---- the loop ------------------------------------------------------------------------------
    def _retry_delay(self, failures: int) -> float:
        cap = self.cfg.interval if self.cfg.interval > 0 else RETRY_CAP
        return backoff_delay(failures, RETRY_MIN, cap, jitter_at_cap=False)

    async def _run(self) -> None:
        assert self.ctx.consul is not None
        failures = 0
        while True:
            blocking = self.blocking and failures == 0 and self.index > 0
            if not self.blocking:
                await asyncio.sleep(self.cfg.interval or 1.0)
            started = time.monotonic()
            try:
                if blocking:
                    index, data = await self._blocking_query()
                else:
                    index, data = await self.ctx.consul.run(self._query(None),
                                                            timeout=CALL_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed query emits nothing
                failures += 1
                if not self.failing:
                    self.failing = True
                    log.warning("watch query failed; polling until it succeeds",
                                watch=self.name, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(self._retry_delay(failures))
                continue
            if self.failing:
                self.failing = False
                log.info("watch query succeeds again", watch=self.name)
            failures = 0
            new_index = int(index or 0)
            if blocking and new_index == self.index and time.monotonic() - started < 0.05:
                await asyncio.sleep(0.1)  # the agent ignored the index: do not spin
            # Consul's rules: an index that goes backwards resets; never block on index 0
            self.index = 0 if new_index < self.index else max(new_index, 1)
            self.observe(data)
            if self.blocking and new_index == 0:
                # no X-Consul-Index at all: this agent cannot block; poll instead of spinning
                await asyncio.sleep(self.cfg.interval or RETRY_CAP)

    async def _blocking_query(self) -> tuple[Any, Any]:
        """One long poll, abandoned early if another call finds Consul unreachable: a poll
        parked on a connection that died silently would otherwise wait out its timeout."""
        assert self.ctx.consul is not None
        timeout = self.wait + self.wait / 16 + CALL_TIMEOUT
        self._abandon.clear()
        query = asyncio.ensure_future(self.ctx.consul.run(self._query(self.index),
                                                          timeout=timeout))
        abandon = asyncio.ensure_future(self._abandon.wait())
        try:
            await asyncio.wait({query, abandon}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abandon.cancel()
            if not query.done():
                query.cancel()
        if query.done() and not query.cancelled():
            return query.result()
        raise ConnectionError("consul unreachable; long poll abandoned")

    def observe(self, data: Any) -> bool:
        """Compare one answer with the last and publish on a change; True if it changed."""
        state, count, entries = self._summarise(data)
        self.entries = entries
        self.instances = count
        if state == self._state:
            return False
        self._state = state
        detail = f"{count} instance{'s' if count != 1 else ''}"
        self.ctx.bus.publish(ev.Event(ev.CHANGED, self.source, detail=detail))
        self.ctx.bus.publish(ev.Event(ev.HEALTHY if count > 0 else ev.UNHEALTHY, self.source,
                                      detail=detail))
        return True
