"""Run a hook to completion through the one reaper: election promote/demote, a template's
reload command, or any command a component other than a job starts.

A hook runs in its own process group; at its timeout, or when the caller gives up on it
(task cancelled: e.g. the lease ran out during a promote), the whole group is killed so
no orphan keeps acting (say, as the primary). It is spawned by `jobs.process.Process`, so
its exit status comes from the one reaper (autopilot.init), never from a second waiter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.jobs.process import Process, child_env
from autopilot.logs import get_logger

log = get_logger("autopilot.hooks")


@dataclass
class HookResult:
    """How a hook ended."""

    rc: int | None  # exit status (128+N when killed by signal N); None: it could not start
    output: str = ""  # the tail of its stdout+stderr
    timed_out: bool = False
    error: str = ""  # why it could not start
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


async def run_hook(argv: list[str], env: Mapping[str, str] | None = None,
                   timeout: float | None = None, name: str = "hook", *,
                   cwd: str | None = None, raw: bool = False) -> HookResult:
    """Start ``argv`` with ``env`` (default: the supervisor's child environment); wait at
    most ``timeout`` s; kill the group on timeout, when it leaves orphans behind, or when
    the caller cancels us. Its output is logged line by line with ``job=<name>``."""
    started = time.monotonic()
    proc = Process(argv, env=env if env is not None else child_env(), cwd=cwd, raw=raw,
                   log_fields={"job": name})
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
    return HookResult(rc, proc.output_tail, timed_out=proc.timed_out,
                      duration=time.monotonic() - started)
