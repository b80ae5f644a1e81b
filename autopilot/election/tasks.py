"""Stopping background tasks for sure.

Python 3.11's ``asyncio.wait_for`` may swallow a cancellation that arrives just as the
awaited call finishes (a blocking query answering at that moment): the task then runs on
into its next long poll. So a stop cancels, waits a little, and cancels again until the
task is gone or the deadline passes; loops also check a ``closed`` flag of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable


async def cancel_all(tasks: Iterable[asyncio.Task | None], timeout: float = 2.0) -> bool:
    """Cancel until done; True if every task ended before ``timeout``."""
    pending = {t for t in tasks if t is not None and not t.done()}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, deadline - time.monotonic()))
    for t in pending:
        t.cancel()  # leave it cancelled; it ends at its next await
    return not pending


async def finish(task: asyncio.Task | None) -> None:
    """Await a finished or cancelled task, ignoring how it ended."""
    if task is not None and task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
