"""Shutting down in ContainerPilot's order within the global ``stop_timeout``.

``before_shutdown`` (the election's hand-over) → the ``shutdown`` event and the jobs hooked
on it → every job stopped (``stopping``/``stopped`` hooks in order) → the components in
reverse order. At the deadline (or a second signal) every remaining process is killed.

A mixin of `autopilot.supervisor.Supervisor`, kept apart like `autopilot/reload.py`: one
procedure with its own order and deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from autopilot.component import HandsOver
from autopilot.events import EXIT_FAILED, EXIT_SUCCESS, GLOBAL, SHUTDOWN, STOPPED, STOPPING, Event
from autopilot.logs import get_logger

if TYPE_CHECKING:
    from autopilot.component import Component
    from autopilot.context import Context
    from autopilot.jobs.job import Job

log = get_logger("autopilot.supervisor")

#: how long each component may take to stop once the global deadline has passed
LATE_STOP = 1.0


class ShuttingDown:
    # what it uses of the supervisor
    ctx: Context
    jobs: dict[str, Job]
    components: list[Component]
    shutting_down: bool
    _reason: str
    _shutdown_event: asyncio.Event | None
    _force_event: asyncio.Event | None
    _reload_lock: asyncio.Lock | None
    # and its _stop_component(comp, timeout)

    def request_shutdown(self, reason: str = "requested") -> None:
        """Begin the graceful shutdown (idempotent)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._reason = reason
        if self._shutdown_event is not None:
            self._shutdown_event.set()

    async def _shutdown(self) -> None:
        """before_shutdown → shutdown hooks → stop jobs (stopping/stopped hooks in order) →
        stop components in reverse; all within the global stop_timeout."""
        assert self._force_event is not None
        self.shutting_down = True
        budget = float(self.ctx.config.stop_timeout or 5.0)
        graceful = asyncio.ensure_future(self._graceful())
        force = asyncio.ensure_future(self._force_event.wait())
        done, _ = await asyncio.wait({graceful, force}, timeout=budget,
                                     return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        if graceful in done:
            if graceful.exception() is not None:
                log.error("shutdown failed", error=repr(graceful.exception()))
            else:
                return
        log.warning("shutdown deadline: killing every remaining process",
                    stop_timeout=budget, forced=self._force_event.is_set())
        graceful.cancel()
        for job in self.jobs.values():
            job.kill_all()
        await asyncio.gather(graceful, return_exceptions=True)
        for comp in reversed(self.components):
            await self._stop_component(comp, LATE_STOP)
        self._close_consul()

    async def _graceful(self) -> None:
        if self._reload_lock is not None:
            async with self._reload_lock:  # a reload in progress finishes first
                pass
        for comp in self.components:
            if not isinstance(comp, HandsOver):
                continue
            try:
                await comp.before_shutdown()
            except Exception as exc:  # noqa: BLE001 - shutdown must go on
                log.error("before_shutdown failed", component=comp.key, error=str(exc))
        await self._run_shutdown_hooks()
        hooks = [j for j in self.jobs.values() if self._is_stop_hook(j)]
        others = [j for j in self.jobs.values() if j not in hooks]
        await asyncio.gather(*(j.stop() for j in others),
                             *(j.finish_as_hook() for j in hooks))
        for comp in reversed(self.components):
            await self._stop_component(comp)
        self._close_consul()

    def _is_stop_hook(self, job: Job) -> bool:
        return (job.trigger.code in (STOPPING, STOPPED)
                and any(s in self.jobs for s in job.trigger.sources))

    async def _run_shutdown_hooks(self) -> None:
        """Publish `shutdown`; wait for the jobs hooked on it (each bounded by its timeout)."""
        hooks = [j for j in self.jobs.values()
                 if j.trigger.hooks(GLOBAL, SHUTDOWN) and j.cfg.exec and not j.halting]
        sub = self.ctx.bus.subscribe("supervisor:shutdown")
        try:
            self.ctx.bus.publish(Event(SHUTDOWN, GLOBAL))
            if not hooks:
                return
            bound = max((j.cfg.timeout or j.cfg.stop_timeout) for j in hooks) + 1.0
            pending = {j.name for j in hooks}
            deadline = time.monotonic() + bound
            while pending and time.monotonic() < deadline:
                try:
                    ev = await asyncio.wait_for(sub.get(), deadline - time.monotonic())
                except TimeoutError:
                    break
                if ev.source in pending and ev.code in (EXIT_SUCCESS, EXIT_FAILED, STOPPED):
                    pending.discard(ev.source)
            if pending:
                log.warning("shutdown hooks still running; stopping them", jobs=sorted(pending))
        finally:
            sub.close()

    def _close_consul(self) -> None:
        consul = self.ctx.consul
        if consul is not None:
            try:
                consul.close()
            except Exception:  # noqa: BLE001
                pass
