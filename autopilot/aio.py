"""The asyncio plumbing every component shares: retry delays and stopping tasks for sure.

Backoff: after a failure, wait ``low`` seconds, doubling per failure in a row up to
``high``. With jitter the delay is drawn from its upper half, so many containers retrying
after the same outage spread out instead of arriving together.

Stopping: Python 3.11's ``asyncio.wait_for`` may swallow a cancellation that arrives just
as the awaited call finishes (a blocking query answering at that moment), and a library
may catch CancelledError at the wrong moment: the task then runs on into its next long
poll. So a stop cancels, waits a little, and cancels again until the task is gone or the
deadline passes; loops also check a ``closed`` flag of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections.abc import Iterable

from autopilot.logs import get_logger

log = get_logger("autopilot.aio")


#: where this process's tick grid starts within a second of loop time (health checks,
#: `next_tick`, and the telemetry heartbeat tick at GRID_OFFSET + k·interval).
#: Drawn per process, so that the supervisors of the containers on one host (each maybe
#: PID 1, all on the same monotonic clock) do not all spawn their checks at the same
#: instant; within one supervisor every interval shares it (a 1 s and a 5 s check meet).
GRID_OFFSET = int.from_bytes(os.urandom(2), "little") / 65536


#: how much earlier than one interval later a tick may come, as a share of the interval,
#: to fall on the grid every checker with that interval shares (see ``next_tick``)
ALIGN_SHIFT = 0.1


def grid_after(t: float, interval: float) -> float:
    """The first point of this process's tick grid (``GRID_OFFSET + k·interval``) after
    ``t`` (loop time)."""
    # 1e-9: a float's last bit
    return (math.floor((t - GRID_OFFSET) / interval + 1e-9) + 1) * interval + GRID_OFFSET


def next_tick(after: float, interval: float) -> float:
    """The tick after ``after`` (loop time): one ``interval`` later, or up to a tenth of an
    interval earlier, so that it falls on the grid ``GRID_OFFSET + k·interval``. Health
    checks tick on it (`jobs.health`), and so does the telemetry service's heartbeat
    (`discovery.registration`).

    Every checker with the same interval thus ticks at the same loop time within a few
    ticks (at once for jobs started together) and the loop runs all their checks in one
    wake-up; their exits are reaped in one ``SIGCHLD`` round and their heartbeats go out
    together. Five jobs ticking apart cost five wake-ups, five reaper rounds and up to ten
    loop iterations a second. A tick only ever comes earlier, never later: the gap between
    two checks (and between two heartbeats of an election's leader) never grows."""
    natural = after + interval
    grid = grid_after(after, interval)  # at most one interval later: at or before natural
    if natural - grid <= interval * ALIGN_SHIFT:
        return grid
    return natural - interval * ALIGN_SHIFT


def backoff_delay(failures: int, low: float, high: float, jitter: bool = True,
                  jitter_at_cap: bool = True) -> float:
    """The delay after ``failures`` failures in a row (1 for the first): ``low`` doubled
    per further failure, at most ``high``; with ``jitter``, drawn from its upper half
    (``jitter_at_cap=False``: once at ``high``, exactly ``high``, e.g. a poll interval)."""
    delay = min(high, low * 2 ** min(max(0, failures - 1), 64))
    if jitter and (jitter_at_cap or delay < high):
        import random  # only once something failed: not loaded by a healthy supervisor

        return random.uniform(delay / 2, delay)
    return delay


class Backoff:
    """A retry loop's delays: ``next()`` after a failure, ``reset()`` after a success."""

    def __init__(self, low: float, high: float, jitter: bool = True,
                 jitter_at_cap: bool = True) -> None:
        self.low = low
        self.high = high
        self.jitter = jitter
        self.jitter_at_cap = jitter_at_cap
        self.failures = 0

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` failures in a row, without counting one."""
        return backoff_delay(failures, self.low, self.high, self.jitter, self.jitter_at_cap)

    def next(self) -> float:
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> float:
        """Count a failure and sleep its delay; returns the delay."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay


async def cancel_all(tasks: Iterable[asyncio.Task | None], timeout: float = 2.0) -> bool:
    """Cancel until done; True if every task ended before ``timeout``. A task that ended
    with an error (rather than by the cancel) is logged: a stop must not hide a failure."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, deadline - time.monotonic()))
    for t in pending:
        t.cancel()  # leave it cancelled; it ends at its next await
    for t in given:
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.warning("task failed", task=t.get_name(), error=repr(t.exception()))
    return not pending


async def finish(task: asyncio.Task | None) -> None:
    """Await a finished or cancelled task, ignoring how it ended."""
    if task is not None and task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class SupervisorLoop(asyncio.SelectorEventLoop):
    """asyncio's Unix event loop, less one wake-up per signal and one reaper run per exit.

    asyncio's C-level handler writes the signal to the loop's self-pipe; the loop reads it
    and, in ``_handle_signal``, schedules the Python handler with
    ``_add_callback_signalsafe``, which writes to the self-pipe *again* to wake a loop that
    is already awake and running on this very thread: one ``send``, one ``recv`` and one
    loop iteration more for every SIGCHLD, i.e. for every health check. Here the handler is
    scheduled with ``_add_callback`` alone; it runs in the next iteration as before (a
    loop with ready callbacks polls without waiting).

    ``SIGCHLD`` runs the reaper right where the self-pipe is read, once for all the
    ``SIGCHLD`` read at once (checks that exited together): it reaps until no exited child
    is left, so each further run only asked the kernel once more (``wait4`` → 0) for
    nothing, and scheduling it cost one more loop iteration. The kernel merges pending
    ``SIGCHLD`` alike. Other signals are delivered once per arrival, in the next iteration,
    as asyncio does. A Python without those internals keeps asyncio's behaviour."""

    if hasattr(asyncio.SelectorEventLoop, "_handle_signal") and hasattr(
            asyncio.SelectorEventLoop, "_add_callback") and hasattr(
            asyncio.SelectorEventLoop, "_process_self_data"):
        def _handle_signal(self, sig: int) -> None:
            handle = self._signal_handlers.get(sig)  # type: ignore[attr-defined]
            if handle is None:
                return
            if handle._cancelled:
                self.remove_signal_handler(sig)
            else:
                self._add_callback(handle)  # type: ignore[attr-defined]

        def _read_from_self(self) -> None:
            """One ``recv`` for what the self-pipe holds (a byte per signal or wake-up):
            asyncio reads until ``recv`` fails with ``EAGAIN``, a second system call and
            a ``BlockingIOError`` raised and caught for every wake-up by a signal (every
            health check's ``SIGCHLD``), about 20 µs with the caches cold. A full read
            (4096 bytes) reads again."""
            while True:
                try:
                    data = self._ssock.recv(4096)  # type: ignore[attr-defined]
                except InterruptedError:
                    continue
                except BlockingIOError:
                    return
                if not data:
                    return
                self._process_self_data(data)
                if len(data) < 4096:
                    return

        def _process_self_data(self, data: bytes) -> None:
            chld = False
            for signum in data:
                if signum == signal.SIGCHLD:
                    chld = True
                elif signum:  # a null byte is a plain wake-up (_write_to_self)
                    self._handle_signal(signum)
            if chld:
                handle = self._signal_handlers.get(signal.SIGCHLD)  # type: ignore[attr-defined]
                if handle is not None:
                    if handle._cancelled:
                        self.remove_signal_handler(signal.SIGCHLD)
                    else:
                        handle._run()  # on the loop, from a callback: not in signal context
