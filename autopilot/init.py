"""PID 1 duties: one reaper for every child, and the signals a container's init must trap.

Why one reaper: as PID 1 (or a child subreaper) every orphan in the container becomes our
child. Reaping them needs ``waitpid(-1)``, which would steal the exit status of any child
that somebody else waits for by pid. So *all* waiting goes through :class:`Reaper`: it reaps
on SIGCHLD with ``waitpid(-1, WNOHANG)`` until nothing is left, resolves the futures of the
children it was asked to watch, and drops the status of orphans. asyncio's own child watchers
are replaced by :class:`ReaperChildWatcher`, which routes ``asyncio.create_subprocess_exec``
through the same reaper, so other components may use that API safely.

Do not call ``subprocess.run``/``Popen.wait`` from threads inside the supervisor: the reaper
may collect such a child first, and ``Popen`` then reports status 0. Use
``autopilot.jobs.hooks.run_hook`` or ``asyncio.create_subprocess_exec`` instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import warnings
from collections.abc import Callable
from typing import Any

from autopilot.logs import get_logger

log = get_logger("autopilot.init")

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> bool:
    """Make orphans of our children reparent to us even when we are not PID 1 (Linux).

    C is called only where no Python API exists (PID 1 needs nothing: orphans come to it
    anyway): ``prctl`` from the process's own libc, through `autopilot.libc`."""
    if os.getpid() == 1:
        return True
    try:
        from autopilot import libc

        prctl = libc.function("prctl")
        return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError, ImportError):
        return False


def exit_code(waitstatus: int) -> int:
    """A wait status as a shell would show it: the exit code, or 128+signal."""
    if os.WIFSIGNALED(waitstatus):
        return 128 + os.WTERMSIG(waitstatus)
    if os.WIFEXITED(waitstatus):
        return os.WEXITSTATUS(waitstatus)
    return 255


class Reaper:
    """Collects every exited child on SIGCHLD; the only caller of waitpid in autopilot."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: dict[int, list[Callable[[int], None]]] = {}
        self.orphans_reaped = 0
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    @property
    def watching(self) -> int:
        """How many children someone still waits for (0 when all were collected)."""
        return len(self._waiters)

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(waitstatus)`` on the loop when ``pid`` exits.

        Must be called on the loop thread right after the child was spawned (before the
        loop runs again), so its SIGCHLD cannot be handled first. No reap is scheduled
        here: a child that has already exited is still a zombie until we reap it, and
        its SIGCHLD, handled by the loop after this call, reaps it and finds this
        callback (an extra ``waitpid`` sweep after every spawn cost a loop iteration
        and a system call per health check)."""
        waiters = self._waiters.get(pid)
        if waiters is None:
            self._waiters[pid] = [callback]
        else:
            waiters.append(callback)

    def wait(self, pid: int) -> asyncio.Future[int]:
        """A future resolved with the wait status of ``pid``."""
        fut: asyncio.Future[int] = self.loop.create_future()

        def done(status: int) -> None:
            if not fut.done():
                fut.set_result(status)

        self.watch(pid, done)
        return fut

    def unwatch(self, pid: int) -> None:
        self._waiters.pop(pid, None)

    def reap(self) -> None:
        """Reap until no exited child is left; never blocks."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            callbacks = self._waiters.pop(pid, None)
            if callbacks is None:
                self.orphans_reaped += 1
                log.debug("reaped orphan", pid=pid, status=exit_code(status))
                continue
            for cb in callbacks:
                try:
                    cb(status)
                except Exception:  # noqa: BLE001 - one bad callback must not stop reaping
                    log.exception("reaper callback failed", pid=pid)

    def close(self) -> None:
        try:
            self.loop.remove_signal_handler(signal.SIGCHLD)
        except (RuntimeError, ValueError):
            pass


class ReaperChildWatcher(asyncio.AbstractChildWatcher):
    """asyncio's child-watcher interface on top of our reaper (no thread, no race)."""

    def __init__(self) -> None:
        self._handlers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}

    def add_child_handler(self, pid: int, callback: Callable[..., Any], *args: Any) -> None:
        reaper = get_reaper()

        def done(status: int) -> None:
            self._handlers.pop(pid, None)
            callback(pid, os.waitstatus_to_exitcode(status), *args)

        self._handlers[pid] = (callback, args)
        reaper.watch(pid, done)

    def remove_child_handler(self, pid: int) -> bool:
        if self._handlers.pop(pid, None) is None:
            return False
        get_reaper().unwatch(pid)
        return True

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass

    def close(self) -> None:
        self._handlers.clear()

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> ReaperChildWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


_reapers: dict[asyncio.AbstractEventLoop, Reaper] = {}


def get_reaper() -> Reaper:
    """The reaper of the running loop, installed on first use (SIGCHLD handler + watcher)."""
    loop = asyncio.get_running_loop()
    reaper = _reapers.get(loop)
    if reaper is None:
        for old in [lp for lp in _reapers if lp.is_closed()]:
            del _reapers[old]
        reaper = _reapers[loop] = Reaper(loop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(ReaperChildWatcher())
    return reaper


class SignalTraps:
    """Turns the container's signals into supervisor actions (installed on the loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, on_terminate: Callable[[str], None],
                 on_event_signal: Callable[[str], None], on_reopen: Callable[[], None]) -> None:
        self.loop = loop
        self._installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._add(sig, on_terminate, sig.name)
        for sig in (signal.SIGHUP, signal.SIGUSR2):
            self._add(sig, on_event_signal, sig.name)
        self._add(signal.SIGUSR1, on_reopen)

    def _add(self, sig: signal.Signals, fn: Callable[..., None], *args: Any) -> None:
        self.loop.add_signal_handler(sig, fn, *args)
        self._installed.append(sig)

    def close(self) -> None:
        for sig in self._installed:
            try:
                self.loop.remove_signal_handler(sig)
            except (RuntimeError, ValueError):
                pass
        self._installed.clear()
