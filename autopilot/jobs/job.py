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
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable

import structlog

from autopilot.aio import backoff_delay
from autopilot.config.model import UNLIMITED, JobConfig
from autopilot.context import Context
from autopilot.events import (
    ENTER_MAINTENANCE,
    ERROR,
    EXIT_FAILED,
    EXIT_MAINTENANCE,
    EXIT_SUCCESS,
    GLOBAL,
    HEALTHY,
    QUIT,
    STOPPED,
    STOPPING,
    TIMER_EXPIRED,
    UNHEALTHY,
    Event,
    Subscription,
)
from autopilot.jobs.health import HealthChecker
from autopilot.jobs.process import Process, child_env, parse_signal
from autopilot.jobs.status import JobStatus
from autopilot.jobs.trigger import Trigger

log = structlog.get_logger("autopilot.job")

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


class Job:
    """One configured job. See docs/jobs.md for the semantics."""

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
        self._sub = self.ctx.bus.subscribe(f"job:{self.name}", accepts=self._wants)
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

    # -- running ----------------------------------------------------------------------------
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

    # -- ending -----------------------------------------------------------------------------
    async def _halt(self) -> None:
        self.halting = True
        self._wake.set()
        for t in (self._timeout_task, self._periodic_task):
            if t is not None:
                t.cancel()
        await self._stopping_with_hooks()
        await self._stop_current()
        if self._run_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._run_task), KILL_WAIT)
            except TimeoutError:
                self._run_task.cancel()
        if self.health is not None:
            await self.health.stop()
        self.status = "stopped"
        self._log.debug("job stopped", runs=self.runs, last_exit=self.last_exit)
        self.ctx.bus.publish(Event(STOPPED, self.name))
        self.done = True
        self.done_event.set()
        if self._sub is not None:
            self._sub.close()
        if self._events_task is not None:
            self._events_task.cancel()
        self._changed()

    async def _stopping_with_hooks(self) -> None:
        """Publish `stopping` and wait (at most stop_timeout) for the jobs hooked on it."""
        hooks = [j for j in self._peers()
                 if j is not self and not j.halting and j.cfg.exec is not None
                 and j.trigger.hooks(self.name, STOPPING)]
        if not hooks:
            self.ctx.bus.publish(Event(STOPPING, self.name))
            return
        sub = self.ctx.bus.subscribe(f"job:{self.name}:stopping-wait")
        try:
            self.ctx.bus.publish(Event(STOPPING, self.name))
            pending = {j.name for j in hooks}
            deadline = time.monotonic() + self.cfg.stop_timeout
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._log.warning("stopping hooks still running at stop_timeout",
                                      hooks=sorted(pending), stop_timeout=self.cfg.stop_timeout)
                    break
                try:
                    ev = await asyncio.wait_for(sub.get(), remaining)
                except TimeoutError:
                    continue
                if ev.source in pending and ev.code in (EXIT_SUCCESS, EXIT_FAILED, STOPPED):
                    pending.discard(ev.source)
        finally:
            sub.close()

    async def _stop_current(self) -> None:
        proc = self._proc
        if proc is not None and (proc.running or proc.group_alive()):
            self._log.debug("stopping process", pid=proc.pid, signal=self.stop_signal.name)
            await proc.stop(self.stop_signal, self.cfg.stop_timeout, KILL_WAIT)

    async def finish_as_hook(self) -> None:
        """Shutdown, for a job hooked on other jobs' stopping/stopped: stay armed until its
        sources have ended, then end. A `stopped` hook may finish its run first (bounded by
        its own timeout and the global stop_timeout); a `stopping` hook had its window while
        its source waited (the source's stop_timeout) and is stopped now."""
        sources = [j for j in self._peers() if j is not self and j.name in self.trigger.sources]
        for src in sources:
            await src.done_event.wait()
        if self.trigger.code != STOPPING:
            while self.busy:
                if self._run_task is not None:
                    await asyncio.wait([self._run_task])
                else:
                    await asyncio.sleep(0.01)
        elif self.process_running:
            self._log.warning("stopping hook outlived its source's stop_timeout; stopping it")
        await self.stop()

    def kill_all(self) -> None:
        """The global shutdown deadline: SIGKILL whatever is left, without waiting."""
        if self._proc is not None:
            self._proc.kill()
        if self.health is not None and self.health._proc is not None:
            self.health._proc.kill()

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
