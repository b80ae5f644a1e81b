"""Ending a job: ``stopping``, the hooks that wait on it, the process stopped, ``stopped``.

Part of :class:`~autopilot.jobs.job.Job` (a mixin: the state is the job's own).
``stopped`` is published only after the process has really exited; the wait for the
``stopping`` hooks ends at the job's ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import time

from autopilot.events import EXIT_FAILED, EXIT_SUCCESS, STOPPED, STOPPING, Event
from autopilot.jobs.runs import KILL_WAIT


class Ending:
    """Part of :class:`~autopilot.jobs.job.Job`: halting it and the global shutdown."""

    async def _halt(self) -> None:
        self.halting = True
        self._wake.set()
        for t in (self._timeout_task, self._periodic_task):
            if t is not None:
                t.cancel()
        await self._stopping_with_hooks()
        await self._stop_current()
        if self._run_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._run_task), KILL_WAIT)
            except TimeoutError:
                self._run_task.cancel()
        if self.health is not None:
            await self.health.stop()
        self.status = "stopped"
        self._log.debug("job stopped", runs=self.runs, last_exit=self.last_exit)
        self.ctx.bus.publish(Event(STOPPED, self.name))
        self.done = True
        self.done_event.set()
        if self._sub is not None:
            self._sub.close()
        if self._events_task is not None:
            self._events_task.cancel()
        self._changed()

    async def _stopping_with_hooks(self) -> None:
        """Publish `stopping` and wait (at most stop_timeout) for the jobs hooked on it."""
        hooks = [j for j in self._peers()
                 if j is not self and not j.halting and j.cfg.exec is not None
                 and j.trigger.hooks(self.name, STOPPING)]
        if not hooks:
            self.ctx.bus.publish(Event(STOPPING, self.name))
            return
        sub = self.ctx.bus.subscribe(f"job:{self.name}:stopping-wait")
        try:
            self.ctx.bus.publish(Event(STOPPING, self.name))
            pending = {j.name for j in hooks}
            deadline = time.monotonic() + self.cfg.stop_timeout
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._log.warning("stopping hooks still running at stop_timeout",
                                      hooks=sorted(pending), stop_timeout=self.cfg.stop_timeout)
                    break
                try:
                    ev = await asyncio.wait_for(sub.get(), remaining)
                except TimeoutError:
                    continue
                if ev.source in pending and ev.code in (EXIT_SUCCESS, EXIT_FAILED, STOPPED):
                    pending.discard(ev.source)
        finally:
            sub.close()

    async def _stop_current(self) -> None:
        proc = self._proc
        if proc is not None and (proc.running or proc.group_alive()):
            self._log.debug("stopping process", pid=proc.pid, signal=self.stop_signal.name)
            await proc.stop(self.stop_signal, self.cfg.stop_timeout, KILL_WAIT)

    async def finish_as_hook(self) -> None:
        """Shutdown, for a job hooked on other jobs' stopping/stopped: stay armed until its
        sources have ended, then end. A `stopped` hook may finish its run first (bounded by
        its own timeout and the global stop_timeout); a `stopping` hook had its window while
        its source waited (the source's stop_timeout) and is stopped now."""
        sources = [j for j in self._peers() if j is not self and j.name in self.trigger.sources]
        for src in sources:
            await src.done_event.wait()
        if self.trigger.code != STOPPING:
            while self.busy:
                if self._run_task is not None:
                    await asyncio.wait([self._run_task])
                else:
                    await asyncio.sleep(0.01)
        elif self.process_running:
            self._log.warning("stopping hook outlived its source's stop_timeout; stopping it")
        await self.stop()

    def kill_all(self) -> None:
        """The global shutdown deadline: SIGKILL whatever is left, without waiting."""
        if self._proc is not None:
            self._proc.kill()
        if self.health is not None and self.health._proc is not None:
            self.health._proc.kill()
