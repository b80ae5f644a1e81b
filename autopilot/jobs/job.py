"""The job state machine: ContainerPilot's `when`/`restarts`/health semantics, minus its bugs.

A job reads the bus in its own task and reacts synchronously (never awaiting inside the
handler), so no job can hold up another one. Running a process, health checks, backoff
sleeps, `when.timeout` and the periodic timer are separate tasks.

Lifecycle events a job publishes (source = the job's name): ``exitSuccess``/``exitFailed``
after each run, ``healthy``/``unhealthy`` after each check (level-triggered, as
ContainerPilot), ``timerExpired`` when ``when.timeout`` passes without a trigger, then
``stopping`` and ``stopped`` when the job ends. Differences from ContainerPilot: ``stopped``
is published after the process has really exited; the wait for a ``stopping`` hook ends at
the job's ``stop_timeout``; ``stop_signal`` escalates to SIGKILL at ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from autopilot.config.model import JobConfig
from autopilot.context import Context
from autopilot.events import (
    ENTER_MAINTENANCE,
    EXIT_MAINTENANCE,
    GLOBAL,
    HEALTHY,
    QUIT,
    SIGNAL_SOURCES,
    TIMER_EXPIRED,
    UNHEALTHY,
    Event,
    Subscription,
)
from autopilot.jobs.ending import Ending
from autopilot.jobs.health import HealthChecker
from autopilot.jobs.process import Process, parse_signal
from autopilot.jobs.runs import KILL_WAIT, Running
from autopilot.jobs.status import JobStatus
from autopilot.jobs.trigger import Trigger
from autopilot.logs import get_logger

log = get_logger("autopilot.job")


class Job(Running, Ending):
    """One configured job. See docs/jobs.md for the semantics.

    Here: its state, its lifecycle as a component, reacting to events, health results and
    the control actions. Its runs (process, restarts, the interval timer) are in runs.py,
    its ending (stopping hooks, stop, shutdown) in ending.py."""

    def __init__(self, ctx: Context, cfg: JobConfig, *,
                 peers: Callable[[], Iterable[Job]] | None = None,
                 on_run_end: Callable[[Job, int, bool], None] | None = None,
                 on_change: Callable[[Job], None] | None = None) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.name = cfg.name
        self.key = f"job:{cfg.name}"
        self.trigger = Trigger(cfg)
        self.status: JobStatus = "unknown"
        self.pid: int | None = None
        self.runs = 0
        self.restarts = 0  # restarts performed (for status)
        self.last_exit: int | None = None
        self.halting = False
        self.done = False
        self.done_event = asyncio.Event()
        self.stop_signal = parse_signal(cfg.stop_signal)
        self._peers = peers or (lambda: ())
        self._on_run_end = on_run_end
        self._on_change = on_change
        self._starts_left: int | None = None if self.trigger.each else 1
        self._restarts_left = cfg.restarts
        self._seen: set[str] = set()
        self._pending = False  # an `each` trigger arrived while running: run once more
        self._manual_stop = False
        self._restart_failures = 0  # restarts in a row that ran shorter than reset_after
        self._proc: Process | None = None
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._events_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._timeout_task: asyncio.Task[None] | None = None
        self._periodic_task: asyncio.Task[None] | None = None
        self._halt_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.health = HealthChecker(self) if cfg.health is not None else None
        self._log = log.bind(job=self.name)

    # -- lifecycle as a component -----------------------------------------------------------
    async def start(self, late: bool = False) -> None:
        """Subscribe and begin reacting; ``late`` (after startup, e.g. a reload) runs a
        startup-triggered job now instead of waiting for a startup event that is past."""
        if self._sub is not None:
            return
        self._sub = self.ctx.bus.subscribe(f"job:{self.name}", accepts=self._wants,
                                           sources=self._sources())
        self._events_task = self._spawn(self._events(), "events")
        if self.cfg.when.timeout and not self.trigger.on_startup:
            self._timeout_task = self._spawn(self._when_timeout(self.cfg.when.timeout), "wait")
        if self.health is not None:
            self.health.start()
        if self.trigger.code is None and not self.trigger.periodic and self.cfg.when.source:
            self._log.warning("`when.source` without `once`/`each` never fires")
        if late and self.trigger.on_startup:
            self._fire()

    def _spawn(self, coro, what: str) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro, name=f"job:{self.name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("job task failed", task=task.get_name(),
                            error=repr(task.exception()))

    async def stop(self) -> None:
        """End the job: stopping → stopping hooks → stop the process → stopped. Idempotent."""
        if self._halt_task is None:
            self._halt_task = self._spawn(self._halt(), "halt")
        await asyncio.shield(self._halt_task)

    def quit(self) -> None:
        """Begin ending the job without waiting (from the event handler)."""
        if self._halt_task is None:
            self._halt_task = self._spawn(self._halt(), "halt")

    # -- reacting to events -----------------------------------------------------------------
    async def _events(self) -> None:
        assert self._sub is not None
        while True:
            ev = await self._sub.get()
            try:
                self._on_event(ev)
            except Exception:  # noqa: BLE001 - one bad event must not end the job
                self._log.exception("event handling failed", event=str(ev))

    def _sources(self) -> frozenset[str]:
        """Every source ``_wants`` can accept: the bus drops events from any other source
        without calling it (another job's health checks never reach this job)."""
        return frozenset({GLOBAL, self.name, *self.trigger.sources, *SIGNAL_SOURCES})

    def _wants(self, ev: Event) -> bool:
        """The events ``_on_event`` acts on; the bus drops the others for this job."""
        return (ev.source == GLOBAL or (ev.code == QUIT and ev.source == self.name)
                or self.trigger.match(ev) is not None)

    def _on_event(self, ev: Event) -> None:
        if self.halting:
            return
        if ev.source == GLOBAL and ev.code == ENTER_MAINTENANCE:
            self._set_status("maintenance")
        elif ev.source == GLOBAL and ev.code == EXIT_MAINTENANCE:
            if self.status == "maintenance":
                self._set_status("unknown")
        elif ev.code == QUIT and ev.source == self.name:
            self.quit()
            return
        src = self.trigger.match(ev)
        if src is None:
            return
        if self.trigger.periodic:
            if self._periodic_task is None:
                self._periodic_task = self._spawn(self._periodic(), "run-every")
            return
        if self.mode_all:
            self._seen.add(src)
            if not self.trigger.sources <= self._seen:
                return
            self._seen.clear()
        self._fire()

    @property
    def mode_all(self) -> bool:
        return self.trigger.mode == "all" and len(self.trigger.sources) > 1

    def _fire(self) -> None:
        """The trigger arrived: start a run (or remember one, for `each` while running)."""
        if self.halting:
            return
        if self.trigger.periodic:
            if self._periodic_task is None:
                self._periodic_task = self._spawn(self._periodic(), "run-every")
            return
        if self._starts_left is not None and self._starts_left <= 0:
            return
        if self._run_task is not None:  # a run (or its restarts) is still going on
            if self.trigger.each:
                self._pending = True
            return
        if self._starts_left is not None:
            self._starts_left -= 1
        if self._timeout_task is not None:
            self._timeout_task.cancel()
            self._timeout_task = None
        if self.cfg.exec is None:
            self.runs += 1
            if self.health is None and self._starts_left == 0:
                self.quit()  # nothing to run, nothing to heartbeat: the job is complete
            return
        self._restarts_left = self.cfg.restarts
        self._manual_stop = False
        self._run_task = self._spawn(self._run_loop(), "run")

    async def _when_timeout(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        self._timeout_task = None
        if self.runs == 0 and self._run_task is None and not self.halting:
            self._log.info("timed out waiting for its trigger", timeout=timeout)
            self.ctx.bus.publish(Event(TIMER_EXPIRED, self.name))
            self.quit()

    # -- health -----------------------------------------------------------------------------
    def health_result(self, ok: bool, detail: str) -> None:
        """A check finished: publish healthy/unhealthy (every time) and track the status."""
        if self.halting or self.status == "maintenance":
            return
        self._set_status("healthy" if ok else "unhealthy")
        self.ctx.bus.publish(Event(HEALTHY if ok else UNHEALTHY, self.name, detail=detail))

    def _set_status(self, status: JobStatus) -> None:
        if status != self.status:
            self._log.info("status changed", old=self.status, new=status)
            self.status = status
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    # -- control actions (ctl / supervisor) -------------------------------------------------
    async def start_process(self) -> None:
        """Start a run now (no trigger needed); a no-op if it is running."""
        if self.halting:
            raise ValueError(f"job {self.name} has ended")
        if self.cfg.exec is None:
            raise ValueError(f"job {self.name} has no exec")
        if self._run_task is not None or self.process_running:
            return
        self._manual_stop = False
        if self.trigger.periodic:  # one run now; the timer keeps its rhythm
            self._run_task = self._spawn(self._periodic_run(), "run")
        else:
            self._restarts_left = self.cfg.restarts
            self._run_task = self._spawn(self._run_loop(), "run")
        for _ in range(100):  # until the pid is known
            if self.process_running or self._run_task is None:
                break
            await asyncio.sleep(0.005)

    async def stop_process(self) -> None:
        """Stop the running process (stop_signal, SIGKILL at stop_timeout); no restart."""
        self._manual_stop = True
        self._wake.set()
        await self._stop_current()
        if self._run_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._run_task), KILL_WAIT)
            except TimeoutError:
                pass

    async def restart_process(self) -> None:
        await self.stop_process()
        await self.start_process()

    def signal(self, signum: int | str) -> None:
        """Send a signal to the job's process (not its group). ValueError if not running."""
        sig = parse_signal(signum)
        if not self.process_running or self._proc is None:
            raise ValueError(f"job {self.name} has no running process")
        self._proc.signal(sig)

    def snapshot(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "pid": self.pid, "runs": self.runs,
                "restarts": self.restarts, "last_exit": self.last_exit}
