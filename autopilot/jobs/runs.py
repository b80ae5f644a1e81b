"""A job's runs: start its process, wait for it, restart per ``restarts``/backoff, and
the ``when.interval`` timer.

Part of :class:`~autopilot.jobs.job.Job` (a mixin: the state is the job's own, set in
``Job.__init__``). Each run publishes ``exitSuccess``/``exitFailed``; a service whose
process exits stops being healthy at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import time

from autopilot.aio import backoff_delay
from autopilot.config.model import UNLIMITED
from autopilot.events import ERROR, EXIT_FAILED, EXIT_SUCCESS, Event
from autopilot.jobs.process import Process, child_env

#: how long to wait for a process to die after SIGKILL before giving up on it
KILL_WAIT = 5.0


def pid_env_name(name: str) -> str | None:
    """ContainerPilot's CONTAINERPILOT_<NAME>_PID, NAME made from the job's name as its
    ``EnvName`` does: the last path element, an extension dropped, runs of
    non-alphanumerics turned into one ``_``, upper-cased (job ``testpid`` ->
    ``CONTAINERPILOT_TESTPID_PID``; ``check.web`` -> ``CONTAINERPILOT_CHECK_PID``)."""
    if not name:
        return None
    base = name.rsplit("/", 1)[-1]
    if "." in base:
        base = base.replace(base[base.rindex("."):], "", 1)  # Go: Replace(name, Ext, "", 1)
    return "CONTAINERPILOT_" + re.sub(r"[^A-Za-z0-9]+", "_", base).upper() + "_PID"


class Running:
    """Part of :class:`~autopilot.jobs.job.Job`: its process runs and restarts."""

    @property
    def process_running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def busy(self) -> bool:
        """Running, about to run, or with an event not yet handled."""
        if self.done:
            return False
        return (self._run_task is not None or self.process_running
                or (self._sub is not None and not self._sub.queue.empty()))

    def _new_process(self) -> Process:
        """The Process of one run (a function job adds its socket: autopilot/jobs/function.py)."""
        cfg = self.cfg
        assert cfg.exec is not None
        return Process(cfg.exec, env=child_env(None, self.ctx.child_env, cfg.env),
                       cwd=cfg.workdir, user=cfg.user, group=cfg.group, raw=cfg.logging_raw,
                       log_fields={"job": self.name}, capture=False)

    def _spawn_process(self) -> Process | None:
        cfg = self.cfg
        assert cfg.exec is not None
        try:
            proc = self._new_process()
            proc.start()
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
            msg = f"could not start {cfg.exec[0]!r}: {exc}"
            self._log.error(msg)
            self.last_exit = 127
            self.ctx.bus.publish(Event(EXIT_FAILED, self.name, detail=msg))
            self.ctx.bus.publish(Event(ERROR, self.name, detail=msg))
            return None
        self._proc = proc
        self.pid = proc.pid
        self.runs += 1
        self._log.debug("process started", pid=proc.pid, run=self.runs)
        env_name = pid_env_name(self.name)
        if env_name:
            os.environ[env_name] = str(proc.pid)
        self._changed()
        return proc

    async def _run_one(self) -> int | None:
        """One run: spawn, wait (exec timeout kills the group), publish the exit."""
        proc = self._spawn_process()
        if proc is None:
            return None
        code = await proc.wait(self.cfg.timeout)
        if proc.group_alive() and proc.timed_out:
            proc.kill()
        self.last_exit = code
        self.pid = None
        env_name = pid_env_name(self.name)
        if env_name and os.environ.get(env_name) == str(proc.pid):
            del os.environ[env_name]
        level = self._log.info if code != 0 else self._log.debug
        level("process exited", pid=proc.pid, status=code, timed_out=proc.timed_out or None)
        self.ctx.bus.publish(Event(EXIT_SUCCESS if code == 0 else EXIT_FAILED, self.name,
                                   detail=f"exit status {code}"))
        if (self.status == "healthy" and self.health is not None and self.health.cfg.exec
                and not (self.halting or self._manual_stop or self.trigger.periodic)):
            # autopilot: a service whose process is gone is not healthy, whatever its last
            # check said; the next passing check (after a restart) makes it healthy again
            self.health_result(False, f"process exited with status {code}")
        return code

    async def _run_loop(self) -> None:
        """Run, and restart per `restarts`/backoff until told to stop."""
        final_code: int | None = None
        try:
            while True:
                started = time.monotonic()
                code = await self._run_one()
                final_code = 127 if code is None else code
                if self.halting or self._manual_stop:
                    break
                if self._pending:
                    self._pending = False
                    self._restarts_left = self.cfg.restarts
                    continue
                if self._restarts_left == 0:
                    break
                if self._restarts_left != UNLIMITED:
                    self._restarts_left -= 1
                delay = self._next_backoff(time.monotonic() - started)
                if code is None:
                    delay = max(delay, 1.0)  # a command that cannot start would spin
                if delay > 0:
                    self._log.info("restarting after backoff", delay=round(delay, 3))
                    if await self._sleep_or_stop(delay):
                        break
                if self.halting or self._manual_stop:
                    break
                self.restarts += 1
        finally:
            self._run_task = None
            final = not (self.halting or self._manual_stop)
            if self._on_run_end is not None and final_code is not None:
                self._on_run_end(self, final_code, final)
            if final and self._starts_left == 0 and not self._pending:
                self.quit()  # a `once` job that will not run again is complete
            self._changed()

    def _next_backoff(self, ran_for: float) -> float:
        b = self.cfg.backoff
        if b.initial <= 0:
            return 0.0
        if ran_for >= b.reset_after:
            self._restart_failures = 0
        self._restart_failures += 1
        return backoff_delay(self._restart_failures, b.initial,
                             b.max if b.max > 0 else math.inf, jitter=False)

    async def _sleep_or_stop(self, delay: float) -> bool:
        """Sleep; True if a stop arrived meanwhile."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
            return True
        except TimeoutError:
            return self.halting or self._manual_stop

    async def _periodic(self) -> None:
        """`when.interval`: run now and every interval; `restarts` counts the extra runs."""
        interval = float(self.cfg.when.interval or 0) or 1.0
        restarts_left = self.cfg.restarts
        first = True
        nxt = time.monotonic()
        # a run may outlive the interval only when an explicit timeout says so; then the
        # tick is skipped (not counted) and the run's own timeout ends it
        overlap_allowed = self.cfg.timeout is not None and self.cfg.timeout > interval
        while not self.halting:
            busy = self._proc is not None and self._proc.running
            if busy and overlap_allowed:
                pass
            else:
                if not first:
                    if restarts_left == 0:
                        break
                    if restarts_left != UNLIMITED:
                        restarts_left -= 1
                first = False
                if busy:
                    # the previous run outlived its interval (timeout defaults to it): end it
                    self._proc.kill()
                    await asyncio.wait([asyncio.ensure_future(self._proc.wait())],
                                       timeout=KILL_WAIT)
                if self._manual_stop:
                    pass
                elif self._run_task is None:
                    self._run_task = self._spawn(self._periodic_run(), "run")
            nxt += interval
            now = time.monotonic()
            if nxt < now:
                nxt = now + interval
            await asyncio.sleep(nxt - now)
        self._periodic_task = None
        if not self.halting:
            # wait for the last run, then the job is complete
            while self._run_task is not None:
                await asyncio.sleep(0.02)
            self.quit()

    async def _periodic_run(self) -> None:
        try:
            await self._run_one()
        finally:
            self._run_task = None
            self._changed()
