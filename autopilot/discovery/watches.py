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
from typing import Any

from autopilot import events as ev
from autopilot.aio import Backoff, cancel_all
from autopilot.config.model import WatchConfig
from autopilot.context import Context
from autopilot.discovery.entries import normalise_service
from autopilot.discovery.poll import BlockingQuery
from autopilot.logs import get_logger

log = get_logger("autopilot.discovery")

WAIT = 30.0  # seconds a blocking query parks in Consul
CALL_TIMEOUT = 5.0  # a non-blocking query
RETRY_MIN = 0.25
RETRY_CAP = 5.0  # the retry delay when `interval` is not set


class Watch:
    """A component: one `watches[]` entry."""

    fatal = False  # a failure to start is logged; autopilot runs on

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
        #: the raw last answer (health entries or KV entries)
        self.entries: list[dict[str, Any]] = []
        self.failing = False
        self._state: Any = ()  # the starting state: nothing
        self._task: asyncio.Task | None = None
        self._query: BlockingQuery | None = None

    @property
    def index(self) -> int:
        """The Consul index of the last answer (0: none yet)."""
        return self._query.index if self._query is not None else 0

    async def start(self) -> None:
        if self.ctx.consul is None:
            log.warning("watch ignored: discovery is off", watch=self.name)
            return
        cap = self.cfg.interval if self.cfg.interval > 0 else RETRY_CAP
        path, params = self._request()
        self._query = BlockingQuery(
            self.ctx.consul, path, params, wait=self.wait, timeout=CALL_TIMEOUT,
            retry=Backoff(RETRY_MIN, cap, jitter_at_cap=False), block=self.blocking,
            interval=self.cfg.interval)
        self._task = asyncio.create_task(self._run(), name=self.key)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_all([task])
        if self._query is not None:
            self._query.close()

    # ---- queries -------------------------------------------------------------------------------
    def _request(self) -> tuple[str, list[tuple[str, Any]]]:
        """The Consul path and parameters this watch reads."""
        cfg = self.cfg
        params: list[tuple[str, Any]] = [("dc", cfg.dc)] if cfg.dc else []
        if cfg.kind == "service":
            params.append(("passing", "1"))
            if cfg.tag:
                params.append(("tag", cfg.tag))
            return f"/v1/health/service/{cfg.name}", params
        key = cfg.key if cfg.key is not None else cfg.name
        if cfg.kind == "keyprefix":
            params.append(("recurse", "1"))
        return f"/v1/kv/{key}", params

    def _summarise(self, data: Any) -> tuple[Any, int, list[dict[str, Any]]]:
        """(comparable state, instance count, entries) for one answer."""
        kind = self.cfg.kind
        if kind == "service":
            entries = list(data or [])
            rows = sorted(normalise_service(entries), key=lambda s: s["ID"])
            return tuple((s["Address"], s["Port"]) for s in rows), len(rows), entries
        if kind == "keyprefix":
            entries = list(data or [])
            state = tuple(sorted((e.get("Key"), e.get("ModifyIndex")) for e in entries))
            return state, len(entries), entries
        if not data:
            return (), 0, []
        entry = data[0]
        return (entry.get("ModifyIndex"), entry.get("Value")), 1, [entry]

    # ---- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        query = self._query
        assert query is not None
        while True:
            if not self.blocking:
                await asyncio.sleep(self.cfg.interval or 1.0)
            try:
                resp = await query.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed query emits nothing
                if not self.failing:
                    self.failing = True
                    log.warning("watch query failed; polling until it succeeds",
                                watch=self.name, error=str(exc) or type(exc).__name__)
                continue
            if self.failing:
                self.failing = False
                log.info("watch query succeeds again", watch=self.name)
            self.observe(resp.json() if resp.code == 200 else None)

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
