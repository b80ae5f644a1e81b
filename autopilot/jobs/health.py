"""Health checks: each check is its own task, so a slow check never holds up its job.

Every ``interval`` the checker decides whether to start a check: not in maintenance, not
while the job's process is down (a job with an exec), and never while the previous check is
still running (that tick is skipped, not queued). A check is killed as a process group at its
``timeout`` (default: the interval) and counts as failed. A ``health`` without ``exec`` is a
blind heartbeat: every interval counts as a pass (ContainerPilot's telemetry job works so).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import TYPE_CHECKING, Protocol

from autopilot.aio import next_tick
from autopilot.config.model import JobConfig
from autopilot.context import Context
from autopilot.events import EXIT_FAILED, EXIT_SUCCESS, Event
from autopilot.init import Reaper, get_reaper
from autopilot.jobs.process import (
    RESTORED_SIGNALS,
    OutputPipe,
    Process,
    child_env,
    find_executable,
    spawns_light,
)
from autopilot.jobs.status import JobStatus
from autopilot.logs import get_logger

if TYPE_CHECKING:
    from autopilot.jobs.spawn import PreparedSpawn

log = get_logger("autopilot.health")

class CheckedJob(Protocol):
    """What a health checker needs of its job. `autopilot.jobs.job.Job` provides it; the
    checker depends on this, not on the job module, so the two do not import each other."""

    name: str
    cfg: JobConfig
    ctx: Context
    halting: bool
    status: JobStatus

    @property
    def process_running(self) -> bool: ...

    def health_result(self, ok: bool, detail: str) -> None: ...


class HealthChecker:
    """One job's checks, driven by loop callbacks: a timer per interval and the reaper's
    callback when the check exits. No task, coroutine or future per check, and, with the
    default timeout (the interval), no timer either: the next tick times out a check
    still running. A check's output is read at its exit, or from the loop once it has
    outlived a tick."""

    def __init__(self, job: CheckedJob) -> None:
        assert job.cfg.health is not None
        self.job = job
        self.cfg = job.cfg.health
        self.source = f"check.{job.name}"
        self.checks_run = 0
        self.skipped_busy = 0
        self.failures = 0  # consecutive failed checks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: Reaper | None = None  # the loop's, kept (see Process.start)
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the check in flight times out (loop time)
        self._proc: Process | None = None  # the check in flight
        self._env: dict[str, str] | None = None
        self._env_from: tuple[object, dict[str, str]] | None = None
        #: the pipe every check writes to, kept from one check to the next (see
        #: ``process.OutputPipe``); only for checks spawned light with their output logged
        self._pipe: OutputPipe | None = None
        #: how the check is spawned, prepared once for the kept pipe (``jobs.spawn``)
        self._prepared: PreparedSpawn | None = None
        jcfg = job.cfg
        self._keeps_pipe = not self.cfg.logging_raw and spawns_light(
            jcfg.workdir, jcfg.user, jcfg.group)

    def start(self) -> None:
        if self._timer is None:
            loop = self._loop = asyncio.get_running_loop()
            self._reaper = get_reaper()
            self._next = next_tick(loop.time(), self.interval)  # about an interval after start
            self._timer = loop.call_at(self._next, self._fire)

    @property
    def interval(self) -> float:
        return self.cfg.interval if self.cfg.interval and self.cfg.interval > 0 else 1.0

    @property
    def timeout(self) -> float:
        return self.cfg.timeout if self.cfg.timeout and self.cfg.timeout > 0 else self.interval

    def _fire(self) -> None:
        loop = self._loop
        assert loop is not None
        interval = self.interval
        now = self._next  # this tick's time: a timeout equal to the interval ends here
        nxt = next_tick(now, interval)
        if nxt < loop.time():  # we fell behind (suspended): do not fire a burst of checks
            nxt = next_tick(loop.time(), interval)
        self._next = nxt
        self._timer = loop.call_at(nxt, self._fire)
        try:
            self._tick(now)
        except Exception:  # noqa: BLE001 - the checker must keep ticking
            log.exception("health tick failed", job=self.job.name)

    def _tick(self, now: float) -> None:
        job = self.job
        proc = self._proc
        if proc is not None:  # still running at a tick: watch its output from now on
            proc.watch_output()
            if self._deadline is None and not proc.timed_out:
                if now >= self._due:
                    proc.time_out(self.timeout)
                else:  # a tick moved earlier (next_tick): the timeout is still its own
                    assert self._loop is not None
                    self._deadline = self._loop.call_at(self._due, proc.time_out,
                                                        self.timeout)
        if job.halting or job.status == "maintenance":
            return
        if self.cfg.exec is None:
            job.health_result(True, "ok")
            return
        if job.cfg.exec is not None and not job.process_running:
            return
        if proc is not None:
            self.skipped_busy += 1
            log.debug("previous health check still running; skipping", job=job.name)
            return
        self._start_check(now)

    def _child_env(self) -> dict[str, str]:
        """The check's environment, built again only when what it is made of changed
        (the supervisor's environment, or ``child_env`` that registration and election
        write); the job's own ``env`` is fixed. posix_spawn only reads it."""
        ctx_env = self.job.ctx.child_env
        raw = os.environ._data  # type: ignore[attr-defined]
        if self._env is None or self._env_from is None or self._env_from[0] != raw \
                or self._env_from[1] != ctx_env:
            self._env = child_env(None, ctx_env, self.job.cfg.env)
            self._env_from = (dict(raw), dict(ctx_env))
        return self._env

    def _start_check(self, now: float) -> None:
        job, cfg = self.job, self.cfg
        assert cfg.exec is not None
        jcfg = job.cfg
        pipe = self._pipe
        if pipe is None and self._keeps_pipe:
            try:
                pipe = self._pipe = OutputPipe()
            except OSError:  # out of descriptors: a pipe of its own, as Process makes it
                pipe = None
        env = self._child_env()
        prepared = self._prepared
        if pipe is not None and (prepared is None or not prepared.fits(env, pipe.write_fd)):
            prepared = self._prepare(cfg.exec, env, pipe.write_fd)
        proc = Process(cfg.exec, env=env, cwd=jcfg.workdir, user=jcfg.user,
                       group=jcfg.group, raw=cfg.logging_raw,
                       log_fields={"check": self.source}, light=True, output=pipe,
                       prepared=prepared)
        self.checks_run += 1
        try:
            proc.start(self._finished, watch_output=False, reaper=self._reaper)
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
            msg = f"health check could not start: {exc}"
            log.error(msg, job=job.name)
            job.ctx.bus.publish(Event(EXIT_FAILED, self.source, detail=msg))
            self._report(False, msg)
            return
        self._proc = proc
        timeout = self.timeout
        self._due = now + timeout
        if timeout != self.interval:  # otherwise the next tick is the deadline
            assert self._loop is not None
            self._deadline = self._loop.call_later(timeout, proc.time_out, timeout)

    def _prepare(self, argv: list[str], env: dict[str, str],
                 fd: int) -> PreparedSpawn | None:
        """Prepare the spawn again (the environment or the pipe changed, or it failed);
        None (``os.posix_spawn`` then) when the executable cannot be found now -- the
        spawn reports that -- or libc cannot be called."""
        old, self._prepared = self._prepared, None
        if old is not None:
            old.close()
        if not argv:
            return None
        try:
            executable = find_executable(argv[0], env)
        except OSError:
            return None
        from autopilot.jobs.spawn import prepare  # only a supervisor with exec checks

        self._prepared = prepare(executable, argv, env, fd, RESTORED_SIGNALS)
        return self._prepared

    def _finished(self, proc: Process) -> None:
        """The reaper's callback: the check exited (or was killed at its timeout)."""
        if self._proc is proc:
            self._proc = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if proc.group_alive():
            proc.kill()  # nothing a check forked may outlive it
            self._hand_over(proc)
        code = proc.returncode
        detail = proc.output_tail
        if proc.timed_out:
            detail = (detail + "\n" if detail else "") + \
                f"health check timed out after {self.timeout}s"
        ok = code == 0 and not proc.timed_out
        self.job.ctx.bus.publish(Event(EXIT_SUCCESS if ok else EXIT_FAILED, self.source,
                                       detail=detail))
        if not ok:
            log.debug("health check failed", job=self.job.name, status=code)
        self._report(ok, detail[-1024:])

    def _report(self, ok: bool, detail: str) -> None:
        """Apply ``failureThreshold``: a brief failure that passes again changes nothing (no
        explicit fail to Consul, so no failover); Consul's TTL still bounds a long one."""
        if ok:
            self.failures = 0
        else:
            self.failures += 1
            if self.failures < self.cfg.failure_threshold:
                log.info("health check failed; tolerated", job=self.job.name,
                         failures=self.failures, threshold=self.cfg.failure_threshold)
                return
        self.job.health_result(ok, detail)

    def _hand_over(self, proc: Process) -> None:
        """``proc`` takes the kept pipe with it if it still holds it (what its killed group
        wrote in the meantime is read until every writer is gone, as with a pipe of its
        own); the next check gets a new one. Processes that left the check's process group
        (``setsid``) and kept its output open are not seen: what they write later shows in
        a later check's output (redirect a daemon's output, as any daemon should)."""
        pipe = self._pipe
        if pipe is not None and proc.adopt_output(pipe):
            self._pipe = None
            pipe.close_write()

    async def stop(self) -> None:
        """Stop ticking and kill a check in flight (its result is still published)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        proc = self._proc
        if proc is not None and proc.running:
            proc.kill()
            try:
                await asyncio.wait_for(asyncio.shield(proc.exited()), 5)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self._proc is not None:  # not reaped yet: it reads the pipe until it is gone
            self._hand_over(self._proc)
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.close()
