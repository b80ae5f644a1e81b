"""Small asyncio helpers shared by the discovery components: retry delays and safe stops."""

from __future__ import annotations

import asyncio
import random

import structlog

log = structlog.get_logger("autopilot.discovery")


def backoff(failures: int, low: float = 0.25, high: float = 5.0) -> float:
    """Exponential delay with jitter: spread retries of many containers after an outage."""
    delay = min(high, low * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


async def cancel_tasks(tasks: list[asyncio.Task]) -> None:
    """Cancel and wait, repeating the cancel: a task may swallow one (a library catching
    CancelledError at the wrong moment) and must still not hang our stop()."""
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        if not task.cancelled() and task.exception() is not None:
            log.warning("task failed", task=task.get_name(), error=repr(task.exception()))
