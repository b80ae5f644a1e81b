"""Health checks: each check is its own task, so a slow check never holds up its job.

Every ``interval`` the checker decides whether to start a check: not in maintenance, not
while the job's process is down (a job with an exec), and never while the previous check is
still running (that tick is skipped, not queued). A check is killed as a process group at its
``timeout`` (default: the interval) and counts as failed. A ``health`` without ``exec`` is a
blind heartbeat: every interval counts as a pass (ContainerPilot's telemetry job works so).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Protocol

import structlog

from autopilot.config.model import JobConfig
from autopilot.context import Context
from autopilot.events import EXIT_FAILED, EXIT_SUCCESS, Event
from autopilot.jobs.process import Process, child_env
from autopilot.jobs.status import JobStatus

log = structlog.get_logger("autopilot.health")


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
    def __init__(self, job: CheckedJob) -> None:
        assert job.cfg.health is not None
        self.job = job
        self.cfg = job.cfg.health
        self.source = f"check.{job.name}"
        self.checks_run = 0
        self.skipped_busy = 0
        self.failures = 0  # consecutive failed checks
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._proc: Process | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"health:{self.job.name}")

    @property
    def interval(self) -> float:
        return self.cfg.interval if self.cfg.interval and self.cfg.interval > 0 else 1.0

    async def _loop(self) -> None:
        interval = self.interval
        nxt = time.monotonic() + interval  # first check one interval after start (as CP)
        while True:
            await asyncio.sleep(max(nxt - time.monotonic(), 0.0))
            nxt += interval
            now = time.monotonic()
            if nxt < now:  # we fell behind (suspended): do not fire a burst of checks
                nxt = now + interval
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the checker must keep ticking
                log.exception("health tick failed", job=self.job.name)

    def _tick(self) -> None:
        job = self.job
        if job.halting or job.status == "maintenance":
            return
        if self.cfg.exec is None:
            job.health_result(True, "ok")
            return
        if job.cfg.exec is not None and not job.process_running:
            return
        if self._inflight is not None and not self._inflight.done():
            self.skipped_busy += 1
            log.debug("previous health check still running; skipping", job=job.name)
            return
        self._inflight = asyncio.get_running_loop().create_task(
            self._check(), name=f"check:{job.name}")

    async def _check(self) -> None:
        job, cfg = self.job, self.cfg
        assert cfg.exec is not None
        timeout = cfg.timeout if cfg.timeout and cfg.timeout > 0 else self.interval
        proc = Process(cfg.exec, env=child_env(None, job.ctx.child_env, job.cfg.env),
                       cwd=job.cfg.workdir, user=job.cfg.user, group=job.cfg.group,
                       raw=cfg.logging_raw, log_fields={"check": self.source}, light=True)
        self._proc = proc
        self.checks_run += 1
        try:
            proc.start()
        except (OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
            msg = f"health check could not start: {exc}"
            log.error(msg, job=job.name)
            job.ctx.bus.publish(Event(EXIT_FAILED, self.source, detail=msg))
            self._report(False, msg)
            return
        try:
            code = await proc.wait(timeout)
        finally:
            if proc.group_alive():
                proc.kill()  # nothing a check forked may outlive it
        detail = proc.output_tail
        if proc.timed_out:
            detail = (detail + "\n" if detail else "") + f"health check timed out after {timeout}s"
        ok = code == 0 and not proc.timed_out
        job.ctx.bus.publish(Event(EXIT_SUCCESS if ok else EXIT_FAILED, self.source,
                                  detail=detail))
        if not ok:
            log.debug("health check failed", job=job.name, status=code)
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

    async def stop(self) -> None:
        """Stop ticking and kill a check in flight."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._inflight is not None and not self._inflight.done():
            if self._proc is not None:
                self._proc.kill()
            try:
                await asyncio.wait_for(asyncio.shield(self._inflight), 5)
            except (TimeoutError, asyncio.CancelledError):
                self._inflight.cancel()
