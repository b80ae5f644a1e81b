"""Run a hook command (promote, demote, a template's reload command) with a hard timeout.

A hook runs in its own process group; at its timeout, or when the caller gives up on it
(task cancelled: e.g. the lease ran out during a promote), the whole group is killed so
no orphan keeps acting as the primary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import structlog

log = structlog.get_logger("autopilot.hooks")


@dataclass
class HookResult:
    rc: int | None  # None: it could not start or was killed
    timed_out: bool = False
    error: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


def child_env(base: dict[str, str], *extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a hook: the core's recipe (adds AUTOPILOT_PID…) when present."""
    try:
        from autopilot.jobs.process import child_env as core_env
    except ImportError:  # pragma: no cover - only before the core landed
        env = dict(base)
        for e in extra:
            env.update(e or {})
        return env
    return core_env(base, *extra)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_hook(argv: list[str], env: dict[str, str], timeout: float,
                   name: str = "hook") -> HookResult:
    """Start ``argv`` with ``env``; wait at most ``timeout`` s; kill the group on timeout
    or when the caller cancels us."""
    started = time.monotonic()
    try:
        from autopilot.jobs.process import Process  # the one reaper's way to spawn
    except ImportError:  # pragma: no cover - only before the core landed
        return await _run_popen(argv, env, timeout, name)
    proc = Process(argv, env=env, log_fields={"job": name})
    try:
        proc.start()
    except (OSError, KeyError, ValueError) as exc:
        log.error("hook could not start", hook=name, argv=argv, error=str(exc))
        return HookResult(None, error=str(exc))
    try:
        rc = await proc.wait(timeout)
    except asyncio.CancelledError:
        proc.kill()
        raise
    if proc.group_alive():  # orphans it left behind must not keep acting
        proc.kill()
    if proc.timed_out:
        log.error("hook timed out: process group killed", hook=name, timeout=timeout)
    return HookResult(rc, timed_out=proc.timed_out, duration=time.monotonic() - started)


async def _run_popen(argv: list[str], env: dict[str, str], timeout: float,
                     name: str) -> HookResult:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        log.error("hook could not start", hook=name, argv=argv, error=str(exc))
        return HookResult(None, error=str(exc))
    loop = asyncio.get_running_loop()
    try:
        rc = await asyncio.wait_for(loop.run_in_executor(None, proc.wait), timeout)
        return HookResult(rc, duration=time.monotonic() - started)
    except TimeoutError:
        _kill_group(proc.pid)
        log.error("hook timed out: killed", hook=name, timeout=timeout)
        await loop.run_in_executor(None, proc.wait)
        return HookResult(None, timed_out=True, duration=time.monotonic() - started)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
