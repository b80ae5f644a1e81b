"""The supervisor: builds the components from the config, starts them in order, reloads by
diffing, and shuts down in ContainerPilot's order within the global ``stop_timeout``.

One process does both of ContainerPilot's jobs (PID 1 reaper and worker): the reaper and
the signal traps live on the same event loop as everything else (``autopilot/init.py``).

Exit codes (see docs/jobs.md): the main job's status when ``main_job`` is set; 0 after a
signal-requested shutdown; the status of the last failed job when every job completed on its
own; 2 for a config error at startup; 1 for an internal error.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from autopilot import logs
from autopilot.component import Component
from autopilot.config.model import Config, ConfigError, JobConfig
from autopilot.context import Context
from autopilot.events import (
    ENTER_MAINTENANCE,
    EXIT_MAINTENANCE,
    GLOBAL,
    SIGNAL,
    STARTUP,
    Event,
    EventBus,
)
from autopilot.init import SignalTraps, get_reaper, set_subreaper
from autopilot.jobs.job import Job
from autopilot.jobs.process import parse_signal
from autopilot.logs import get_logger
from autopilot.reload import Reloading
from autopilot.shutdown import ShuttingDown

log = get_logger("autopilot.supervisor")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2


def load_config(path: str) -> Config:
    """``autopilot.config.load`` (raises ConfigError); imported late to keep startup light.
    At DEBUG it logs ContainerPilot's ``loaded config: <json>`` line (start and reload)."""
    from autopilot.config import load

    config = load(path)
    if logs.is_configured():  # a reload; at start run_supervisor logs it once configured
        log.debug("loaded config: %s", _ConfigJSON(config))  # rendered only at DEBUG
    return config


class _Repr:
    """``repr(obj)``, computed when (and only if) the log line is rendered: the whole
    config's repr took milliseconds of every start for a DEBUG line."""

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return repr(self.obj)


class _ConfigJSON:
    """The config as JSON, computed when (and only if) the log line is rendered."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __str__(self) -> str:
        import dataclasses
        import json

        def plain(obj: Any) -> Any:
            return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)

        try:
            return json.dumps(self.config, default=plain, separators=(",", ":"))
        except (TypeError, ValueError):
            return repr(self.config)


class StartupError(Exception):
    """A component autopilot cannot run without (``fatal = True``) did not start."""


class Supervisor(Reloading, ShuttingDown):
    """See docs/architecture.md ("Supervisor") for the API the control server and telemetry
    use; see docs/jobs.md for the behaviour."""

    def __init__(self, config: Config, config_path: str | None = None,
                 loader: Callable[[str], Config] | None = None,
                 reload_all: bool = False) -> None:
        self.config_path = config_path or config.path
        #: a reload restarts every job (ContainerPilot's reload, the `containerpilot` entry
        #: point's default) instead of only the jobs whose definition changed
        self.reload_all = reload_all
        self.ctx = Context(config=config, bus=EventBus())
        self.jobs: dict[str, Job] = {}
        self.components: list[Component] = []
        self.control: Any = None
        self.telemetry: Any = None
        self.maintenance = False
        self.shutting_down = False
        self.started_at = time.time()
        self.reloads = 0
        self._loader = loader or load_config
        self._shutdown_event: asyncio.Event | None = None
        self._force_event: asyncio.Event | None = None
        self._reason = ""
        self._exit_code: int | None = None  # fixed by the main job's final exit
        self._last_failure: int | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._check_scheduled = False
        self._started = False

    @property
    def started(self) -> bool:
        """Startup is over: every job and component has been started."""
        return self._started

    # -- building ---------------------------------------------------------------------------
    def _new_job(self, cfg: JobConfig) -> Job:
        if cfg.function is not None:
            from autopilot.jobs.function import FunctionJob

            return FunctionJob(self.ctx, cfg, peers=lambda: list(self.jobs.values()),
                               on_run_end=self._on_run_end, on_change=self._on_job_change)
        return Job(self.ctx, cfg, peers=lambda: list(self.jobs.values()),
                   on_run_end=self._on_run_end, on_change=self._on_job_change)

    def _connect(self, config: Config) -> Any:
        if config.consul is None:
            return None
        from autopilot.discovery import connect  # only when Consul is configured

        return connect(config.consul)

    def _build_components(self) -> list[Component]:
        """The non-job components for the current config, in start order."""
        # imported here, and only when configured: a config without them does not pay for them
        from autopilot.control.server import ControlServer

        comps: list[Component] = [ControlServer(self.ctx, self)]
        config = self.ctx.config
        if config.telemetry is not None:
            from autopilot.telemetry import Telemetry

            comps.append(Telemetry(self.ctx, self))
        if self.ctx.consul is not None:
            from autopilot import discovery

            comps.extend(discovery.components(self.ctx))
            if any(j.election is not None for j in config.jobs):
                from autopilot import election

                comps.extend(election.components(self.ctx))
        if config.templates:
            from autopilot import templates

            comps.extend(templates.components(self.ctx))
        return comps

    def _adopt(self, comps: list[Component]) -> None:
        self.components = comps
        self.control = next((c for c in comps if c.key == "control"), None)
        self.telemetry = next((c for c in comps if c.key == "telemetry"), None)

    async def _start_component(self, comp: Component, at_startup: bool = False) -> None:
        """Start one component; a failure is logged, and at startup a component that says
        ``fatal = True`` (control socket, telemetry) stops autopilot instead."""
        try:
            await comp.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one component must not keep the others down
            log.error("component failed to start", component=comp.key, error=str(exc))
            if at_startup and comp.fatal:
                raise StartupError(f"{comp.key}: {exc}") from exc

    async def _stop_component(self, comp: Component, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(comp.stop(), timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("component did not stop in time", component=comp.key)
        except Exception as exc:  # noqa: BLE001
            log.error("component failed to stop", component=comp.key, error=str(exc))

    # -- running ----------------------------------------------------------------------------
    async def run(self) -> int:
        """Start everything, run until shutdown, return the exit code."""
        loop = asyncio.get_running_loop()
        self._shutdown_event = asyncio.Event()
        self._force_event = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        pid = str(os.getpid())
        os.environ["CONTAINERPILOT_PID"] = pid
        os.environ["AUTOPILOT_PID"] = pid
        subreaper = set_subreaper()
        get_reaper()
        self.ctx.bus.add_listener(self._log_event)
        traps = SignalTraps(loop, on_terminate=self._on_terminate,
                            on_event_signal=self._on_event_signal, on_reopen=logs.reopen)
        log.info("autopilot starting", pid1=os.getpid() == 1,
                 subreaper=subreaper, config=self.config_path, jobs=len(self.ctx.config.jobs))
        try:
            try:
                await self._startup()
            except ConfigError as exc:  # e.g. a bad CONSUL_HTTP_ADDR found while connecting
                log.error("config error", error=str(exc))
                self._exit_code = EXIT_CONFIG
                self.request_shutdown("config error")
            except StartupError as exc:
                log.error("startup failed", error=str(exc))
                self._exit_code = EXIT_INTERNAL
                self.request_shutdown("startup failed")
            except Exception:  # noqa: BLE001 - stop what did start, then report
                log.exception("startup failed")
                self._exit_code = EXIT_INTERNAL
                self.request_shutdown("startup failed")
            await self._shutdown_event.wait()
            await self._shutdown()
        finally:
            traps.close()
        code = self.exit_code()
        log.info("autopilot exiting", status=code, reason=self._reason)
        return code

    async def _startup(self) -> None:
        config = self.ctx.config
        for w in config.warnings:
            log.warning(w)
        log.debug("loaded config", config=_Repr(config))
        self.ctx.consul = self._connect(config)
        self._adopt(self._build_components())
        for comp in self.components:
            if self.shutting_down:
                return
            await self._start_component(comp, at_startup=True)
        for cfg in config.jobs:
            self.jobs[cfg.name] = self._new_job(cfg)
        for job in self.jobs.values():
            await job.start()
        if config.main_job and config.main_job not in self.jobs:
            log.warning("main_job names no job", main_job=config.main_job)
        self._started = True
        self.ctx.bus.publish(Event(STARTUP, GLOBAL))
        self._schedule_check()

    def _log_event(self, ev: Event) -> None:
        """Every bus event at DEBUG: how to see why a job did (not) start. (Checked here: a
        filtered log call still costs a call, twice per health check.)"""
        if self.ctx.config.logging.level.upper() == "DEBUG":
            log.debug("event", code=ev.code, source=ev.source)

    # -- signals ----------------------------------------------------------------------------
    def _on_terminate(self, signame: str) -> None:
        if self.shutting_down:
            log.warning("second termination signal: killing everything now", signal=signame)
            assert self._force_event is not None
            self._force_event.set()
            return
        log.info("received signal; shutting down", signal=signame)
        self.request_shutdown(f"signal {signame}")

    def _on_event_signal(self, signame: str) -> None:
        log.debug("received signal", signal=signame)
        self.ctx.bus.publish(Event(SIGNAL, signame))

    # -- job callbacks ----------------------------------------------------------------------
    def _on_run_end(self, job: Job, code: int, final: bool) -> None:
        if not final or self.shutting_down:
            return
        if job.name == self.ctx.config.main_job:
            if job.trigger.each:
                return  # it runs again at its next trigger
            log.info("main job exited; shutting down", job=job.name, status=code)
            self._exit_code = code
            self.request_shutdown(f"main job {job.name} exited")
        elif code != 0 and not job.trigger.periodic:
            self._last_failure = code

    def _on_job_change(self, job: Job) -> None:
        reloading = self._reload_lock is not None and self._reload_lock.locked()
        if (job.done and job.name == self.ctx.config.main_job and not self.shutting_down
                and not reloading and self.jobs.get(job.name) is job):
            # the main job ended some other way (periodic runs used up, when.timeout, quit)
            code = job.last_exit or 0
            log.info("main job ended; shutting down", job=job.name, status=code)
            self._exit_code = code
            self.request_shutdown(f"main job {job.name} ended")
            return
        self._schedule_check()

    def _schedule_check(self) -> None:
        if self._check_scheduled:
            return
        self._check_scheduled = True
        asyncio.get_running_loop().call_soon(self._check_complete)

    def _dormant(self, job: Job) -> bool | None:
        """Complete, or idle and waiting only for jobs that have all ended.

        None: undecided, an event is still queued for the job (look again shortly)."""
        if job.done:
            return True
        if job.halting or job.process_running or job._run_task is not None:
            return False
        trig = job.trigger
        if trig.periodic:
            return False
        if trig.code is not None and not all(s in self.jobs and self.jobs[s].done
                                             for s in trig.sources):
            return False
        return None if job.busy else True

    def _check_complete(self) -> None:
        self._check_scheduled = False
        if not self._started or self.shutting_down or not self.jobs:
            return
        if self._reload_lock is not None and self._reload_lock.locked():
            return  # jobs are being replaced; _apply checks again when it is done
        if self.ctx.config.main_job in self.jobs:
            return  # the main job decides
        states = [self._dormant(j) for j in self.jobs.values()]
        if False in states:
            return
        if None in states:
            asyncio.get_running_loop().call_later(0.02, self._schedule_check)
            return
        log.info("every job is complete; shutting down")
        self.request_shutdown("all jobs complete")

    def exit_code(self) -> int:
        """See docs/jobs.md, "Exit codes"."""
        if self._exit_code is not None:
            return self._exit_code
        main = self.jobs.get(self.ctx.config.main_job or "")
        if main is not None:
            code = main.last_exit
            if code is None or code == 128 + int(main.stop_signal):
                return EXIT_OK  # never ran, or ended by the stop we asked for
            return code
        if self._reason == "all jobs complete" and self._last_failure is not None:
            return self._last_failure
        return EXIT_OK

    # -- the API for control and telemetry --------------------------------------------------
    def putenv(self, mapping: dict[str, Any]) -> None:
        """Set environment variables for processes started from now on (and re-renders)."""
        for k in mapping:
            if not isinstance(k, str) or not k or "=" in k or "\0" in k:
                raise ValueError(f"bad environment variable name {k!r}")
        for k, v in mapping.items():
            os.environ[k] = "" if v is None else str(v)

    def set_maintenance(self, enabled: bool) -> None:
        self.maintenance = bool(enabled)
        log.info("maintenance " + ("enabled" if enabled else "disabled"))
        self.ctx.bus.publish(Event(ENTER_MAINTENANCE if enabled else EXIT_MAINTENANCE, GLOBAL))

    def put_metric(self, name: str, value: Any) -> None:
        if isinstance(value, bool):
            raise ValueError(f"metric {name}: not a number: {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name}: not a number: {value!r}") from None
        if self.telemetry is not None and hasattr(self.telemetry, "put_metric"):
            self.telemetry.put_metric(name, number)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 3),
            "maintenance": self.maintenance,
            "shutting_down": self.shutting_down,
            "reloads": self.reloads,
            "main_job": self.ctx.config.main_job,
            "jobs": [j.snapshot() for j in self.jobs.values()],
            "facts": self.ctx.facts,
        }

    async def job_action(self, name: str, action: str, signal: str | int | None = None) -> None:
        job = self.jobs.get(name)
        if job is None:
            raise KeyError(name)
        if action == "start":
            await job.start_process()
        elif action == "stop":
            await job.stop_process()
        elif action == "restart":
            await job.restart_process()
        elif action == "signal":
            if signal is None:
                raise ValueError("action signal needs a signal")
            job.signal(parse_signal(signal))
        else:
            raise ValueError(f"unknown action {action!r} (start|stop|restart|signal)")


def run_supervisor(config_path: str, reload_all: bool = False) -> int:
    """The `autopilot run` verb: load the config, supervise until shutdown, return the exit
    status (2: config error). ``reload_all``: see ``Supervisor.reload_all``."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"autopilot: config error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"autopilot: cannot read config: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    logs.configure(config.logging)
    log.debug("loaded config: %s", _ConfigJSON(config))  # ContainerPilot's line, DEBUG only
    sup = Supervisor(config, config_path, reload_all=reload_all)
    code = run_loop(sup.run)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        # a worker thread stuck in a blocking call (e.g. a 30 s long poll) must not hold the
        # container up after everything has stopped
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_loop(main: Callable[[], Any]) -> int:
    """asyncio.run without waiting for the default executor's threads at the end (on
    `autopilot.aio.SupervisorLoop`: no extra wake-up per signal)."""
    from autopilot.aio import SupervisorLoop

    loop = SupervisorLoop()
    asyncio.set_event_loop(loop)
    try:
        return int(loop.run_until_complete(main()))
    except Exception:  # noqa: BLE001 - report, never a traceback-only death
        log.exception("supervisor failed")
        return EXIT_INTERNAL
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
