"""Telemetry: Prometheus `/metrics`, ContainerPilot's `/status`, and Kubernetes probes
`/health` (liveness) and `/ready` (readiness), on one TCP port.

Component contract: ``Telemetry(ctx, supervisor)`` with ``key``, ``cfg``, ``async start()``,
``async stop()``; the supervisor forwards ``put_metric(name, value)`` here. Each instance
owns a private metric ``Registry`` (``telemetry_metrics``): a reload that changes the telemetry block builds a new
instance, so user metrics are re-declared exactly as CP did (unregister, register again).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import re
import time
from typing import Any

from autopilot import __version__
from autopilot.aio import grid_after
from autopilot.config.model import ConfigError, MetricConfig, TelemetryConfig
from autopilot.context import Context
from autopilot.control.api import JobView, SupervisorAPI
from autopilot.control.httpd import (
    HTTPError,
    HTTPServer,
    Request,
    Response,
    Router,
    error_response,
    json_response,
)
from autopilot.control.stats import request_counts
from autopilot.events import GO_NAMES, METRIC, Event
from autopilot.logs import get_logger
from autopilot.telemetry_metrics import (
    CONTENT_TYPE,
    Collector,
    Counter,
    Family,
    Gauge,
    Histogram,
    Registry,
    Summary,
    process_families,
)

log = get_logger("autopilot.telemetry")

HEARTBEAT = 1.0  # seconds between loop heartbeats
STALE_AFTER = 5.0  # /health fails when the last heartbeat is older than this
BIND_ATTEMPTS = 10  # as ContainerPilot: the port may still be held by a predecessor
BIND_PAUSE = 0.5
MAX_BODY = 64 * 1024  # every route is a GET: nothing to upload

EVENTS = "containerpilot_events"
CONTROL_REQUESTS = "containerpilot_control_http_requests"
WATCH_INSTANCES = "containerpilot_watch_instances"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")



def metric_name(m: MetricConfig) -> str:
    """The exposed name: namespace, subsystem and name joined with `_`, empty parts skipped
    (what prometheus_client and Go's BuildFQName both do)."""
    return "_".join(p for p in (m.namespace, m.subsystem, m.name) if p)


def _internal(telemetry: Telemetry) -> Collector:
    """The values that live elsewhere, read at scrape time: control requests, watches."""

    def collect() -> list[Family]:
        counts = sorted(request_counts(telemetry.supervisor).items())
        return [
            Family(CONTROL_REQUESTS, "counter", "Requests served by the control socket",
                   [(f"{CONTROL_REQUESTS}_total", {"code": code, "path": path}, float(n))
                    for (code, path), n in counts]),
            Family(WATCH_INSTANCES, "gauge", "Healthy instances seen by each watch",
                   [(WATCH_INSTANCES, {"service": name}, float(count))
                    for name, count in telemetry.watch_instances()]),
            *function_families(telemetry.supervisor.jobs),
        ]

    return Collector(collect)


def function_families(jobs: dict[str, Any]) -> list[Family]:
    """The function jobs' metrics (``autopilot.jobs.function``), when there are any."""
    if not any(j.cfg.function is not None for j in jobs.values()):
        return []
    from autopilot.jobs.function import metric_families

    return list(metric_families(list(jobs.values())))


class Telemetry:
    key = "telemetry"
    #: autopilot cannot run without it: a failed start at startup stops autopilot (status 1)
    fatal = True

    def __init__(self, ctx: Context, supervisor: SupervisorAPI) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.cfg: TelemetryConfig = ctx.config.telemetry or TelemetryConfig()
        self.registry = Registry()
        self.registry.register(Collector(process_families))
        self._event_children: dict[tuple[str, str], Any] = {}
        self.events = Counter(EVENTS, "Events published on the autopilot event bus",
                              ["code", "source"], registry=self.registry)
        self.registry.register(_internal(self), [CONTROL_REQUESTS, WATCH_INSTANCES])
        #: exposed sample name -> ContainerPilot's name (counters without `_total`)
        self._renames = {f"{EVENTS}_total": EVENTS,
                         f"{CONTROL_REQUESTS}_total": CONTROL_REQUESTS}
        #: accepted key (CP's join with empty parts, and the exposed name) -> (cfg, collector)
        self.user: dict[str, tuple[MetricConfig, Any]] = {}
        for i, m in enumerate(self.cfg.metrics):
            self._declare(i, m)
        self.host: str | None = None
        self.port: int | None = None
        self._http: HTTPServer | None = None
        self._beat_timer: asyncio.TimerHandle | None = None  # the loop heartbeat's next beat
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_due = 0.0
        self._beat = time.monotonic()
        self._lag = 0.0
        self._listening = False

    # -- user metrics -------------------------------------------------------------------------
    def _declare(self, index: int, m: MetricConfig) -> None:
        name = metric_name(m)
        kinds = {"counter": Counter, "gauge": Gauge, "histogram": Histogram, "summary": Summary}
        if m.type not in kinds:
            raise ConfigError(f"telemetry.metrics[{index}]: invalid metric type {m.type!r}")
        if not _NAME.match(name):
            raise ConfigError(f"telemetry.metrics[{index}]: {name!r} is not a valid Prometheus "
                              "metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        try:
            collector = kinds[m.type](name, m.help or name, registry=self.registry)
        except ValueError as exc:
            raise ConfigError(f"telemetry.metrics[{index}]: metric {name!r}: {exc}") from exc
        if m.type == "counter" and not name.endswith("_total"):
            self._renames[f"{name}_total"] = name
        for key in {m.full_name, name}:
            self.user[key] = (m, collector)

    def check_metric(self, name: str, value: Any) -> float:
        """Validate one update without applying it; raises ValueError with the reason."""
        entry = self.user.get(name)
        if entry is None:
            known = ", ".join(sorted({metric_name(m) for m, _ in self.user.values()})) or "none"
            raise ValueError(f"unknown metric {name!r} (configured: {known})")
        if isinstance(value, bool):
            raise ValueError(f"metric {name!r}: value must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metric {name!r}: value {value!r} is not a number") from exc
        kind = entry[0].type
        if kind == "counter" and (number < 0 or not math.isfinite(number)):
            raise ValueError(f"metric {name!r} is a counter: it only accepts a finite "
                             f"increment >= 0, got {value!r}")
        if kind in ("histogram", "summary") and math.isnan(number):
            raise ValueError(f"metric {name!r}: cannot observe NaN")
        return number

    def put_metric(self, name: str, value: Any) -> None:
        """CP's sensor semantics: counter += v, gauge = v, histogram/summary observe v."""
        number = self.check_metric(name, value)
        cfg, collector = self.user[name]
        if cfg.type == "counter":
            collector.inc(number)
        elif cfg.type == "gauge":
            collector.set(number)
        else:
            collector.observe(number)

    # -- observers ----------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        """Count the event (``containerpilot_events{code, source}``); the counter of each
        (code, source) is looked up once, not built from its labels twice per check."""
        if self._listening and event.code != METRIC:
            key = (event.code, event.source)
            child = self._event_children.get(key)
            if child is None:
                child = self._event_children[key] = self.events.labels(
                    GO_NAMES.get(event.code, event.code), event.source)
            child.inc()

    def watch_instances(self) -> list[tuple[str, int]]:
        """(watch name, instance count) for every component that exposes ``instances``."""
        out = []
        for comp in self.supervisor.components:
            count = getattr(comp, "instances", None)  # a Watch has it, other components not
            name = getattr(getattr(comp, "cfg", None), "name", None)
            if isinstance(count, int) and not isinstance(count, bool) and name:
                out.append((name, count))
        return sorted(out)

    def exposition(self) -> bytes:
        return rename_counters(self.registry.exposition(), self._renames).encode()

    # -- probes and status --------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self._beat
        timer = self._beat_timer
        alive = timer is not None and not timer.cancelled() and age <= STALE_AFTER
        body = {"status": "ok" if alive else "stalled", "heartbeat_age": round(age, 3),
                "loop_lag": round(self._lag, 3), "pid": os.getpid()}
        if not alive:
            body["reason"] = (f"event loop heartbeat is {age:.1f}s old (limit {STALE_AFTER}s)"
                              if age > STALE_AFTER else "heartbeat timer is not running")
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return readiness(self.supervisor, self.cfg.ready.mode, self.cfg.ready.job,
                         self.cfg.ready.role)

    def cp_status(self) -> dict[str, Any]:
        return cp_status(self.supervisor)

    # -- lifecycle ----------------------------------------------------------------------------
    def _router(self) -> Router:
        router = Router()
        router.add("GET", "/metrics", self._metrics)
        router.add("GET", "/status", self._status)
        router.add("GET", "/health", self._health)
        router.add("GET", "/ready", self._ready)
        return router

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._routes.resolve(request)(request)
        except HTTPError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("telemetry request failed", path=request.path)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    async def _metrics(self, request: Request) -> Response:
        # on the loop thread: the collectors read state the loop mutates (a few ms of /proc)
        return Response(200, self.exposition(), CONTENT_TYPE)

    async def _status(self, request: Request) -> Response:
        return json_response(self.cp_status(), dumps=_dumps)

    async def _health(self, request: Request) -> Response:
        ok, body = self.liveness()
        return json_response(body, status=200 if ok else 503)

    async def _ready(self, request: Request) -> Response:
        ok, body = self.readiness()
        return json_response(body, status=200 if ok else 503, dumps=_dumps)

    def _heartbeat(self) -> None:
        """Proves the loop is turning: /health looks at how fresh the last beat is. A
        plain loop timer (a task sleeping in ``asyncio.sleep`` cost a future, a timer and a
        task step a second), on the grid where health checks with a whole-second interval
        tick too (``aio.grid_after``, as ``aio.next_tick`` for the checks): one wake-up
        for both."""
        loop = self._loop
        if loop is None:  # kept: asking for the running loop costs a getpid on 3.11
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if self._beat_due:
            self._lag = max(0.0, now - self._beat_due)
            self._beat = time.monotonic()
        self._beat_due = due = grid_after(now, HEARTBEAT)
        self._beat_timer = loop.call_at(due, self._heartbeat)

    async def start(self) -> None:
        self.port = self.cfg.port
        try:
            self.host = resolve_host(self.cfg.interfaces)
            self._routes = self._router()
            http = HTTPServer(self._handle, MAX_BODY, "telemetry")
            await _bind(http, self.host, self.port)
        except Exception as exc:  # fatal at startup (``fatal``): the supervisor exits 1
            log.error("telemetry unavailable", error=str(exc))
            raise
        self._http = http
        self._beat = time.monotonic()
        self._beat_due = 0.0
        self._heartbeat()
        self._listening = True
        self.ctx.bus.add_listener(self._on_event)
        log.info("telemetry listening", address=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        self._listening = False
        with contextlib.suppress(ValueError):
            self.ctx.bus.remove_listener(self._on_event)
        timer, self._beat_timer = self._beat_timer, None
        if timer is not None:
            timer.cancel()
        http, self._http = self._http, None
        if http is not None:
            await http.close(2.0)


async def _bind(http: HTTPServer, host: str, port: int) -> None:
    for attempt in range(BIND_ATTEMPTS):
        try:
            await http.listen_tcp(host, port)
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                raise OSError(exc.errno, f"telemetry cannot listen on {host}:{port}: "
                              f"{exc.strerror}") from exc
            await asyncio.sleep(BIND_PAUSE)


def resolve_host(interfaces: list[str]) -> str:
    """The telemetry address from the interface specs, like CP (`static:0.0.0.0` = all)."""
    from autopilot.discovery.interfaces import resolve_ip

    return resolve_ip(interfaces)


def rename_counters(text: str, renames: dict[str, str]) -> str:
    """Give counters ContainerPilot's names (prometheus_client appends `_total`)."""
    if not renames:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] in renames:
                parts[2] = renames[parts[2]]
                line = " ".join(parts)
        else:
            end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
            if end > 0 and line[:end] in renames:
                line = renames[line[:end]] + line[end:]
        out.append(line)
    return "".join(out)


def _in_maintenance(supervisor: SupervisorAPI) -> bool:
    return supervisor.maintenance or any(j.status == "maintenance"
                                         for j in supervisor.jobs.values())


def _job_ready(job: JobView) -> tuple[bool, str]:
    status = job.status
    if job.cfg.health is not None:
        return status == "healthy", f"job {job.name!r} is {status}"
    running = job.pid is not None
    return running, f"job {job.name!r} has no health check and is {'running' if running else 'not running'}"


def readiness(supervisor: SupervisorAPI, mode: str, job: str | None, role: str | None
              ) -> tuple[bool, dict[str, Any]]:
    """`/ready`: maintenance and shutdown are never ready; then the configured mode decides."""
    body: dict[str, Any] = {"mode": mode}
    if supervisor.shutting_down:
        return False, {**body, "ready": False, "reason": "autopilot is shutting down"}
    if _in_maintenance(supervisor):
        return False, {**body, "ready": False, "reason": "maintenance mode is enabled"}
    jobs = supervisor.jobs
    if mode == "role":
        facts = supervisor.ctx.facts
        names = [job] if job else sorted(facts)
        holders = [n for n in names if (facts.get(n) or {}).get("role") == role]
        body.update(role=role, job=job)
        if holders:
            return True, {**body, "ready": True, "holders": holders}
        where = f"job {job!r}" if job else "no job"
        current = (facts.get(job) or {}).get("role") if job else None
        return False, {**body, "ready": False,
                       "reason": f"{where} does not hold role {role!r}"
                       + (f" (current role: {current})" if job else "")}
    if mode == "job":
        target = jobs.get(job) if job else None
        if target is None:
            return False, {**body, "ready": False, "job": job, "reason": f"unknown job {job!r}"}
        ok, why = _job_ready(target)
        return ok, {**body, "ready": ok, "job": job, "status": target.status,
                    **({} if ok else {"reason": why})}
    checked = {n: j.status for n, j in jobs.items() if j.cfg.health is not None}
    bad = sorted(n for n, s in checked.items() if s != "healthy")
    if bad:
        return False, {**body, "ready": False, "jobs": checked,
                       "reason": "not healthy: " + ", ".join(f"{n} ({checked[n]})" for n in bad)}
    return True, {**body, "ready": True, "jobs": checked}


def cp_status(supervisor: SupervisorAPI) -> dict[str, Any]:
    """ContainerPilot's `/status` shape, plus autopilot's extras (Pid, Role, Registered…)."""
    facts = supervisor.ctx.facts
    jobs, services = [], []
    for name, job in list(supervisor.jobs.items()):
        status = job.status
        jobs.append({"Name": name, "Status": status, "Pid": job.pid})
        f = facts.get(name) or {}
        port = job.cfg.port or f.get("port")
        if port:
            services.append({"Name": name, "Address": f.get("address", ""), "Port": port,
                             "Status": status, "ID": f.get("service_id"),
                             "Registered": bool(f.get("registered")), "Role": f.get("role")})
    listed = {s["Name"] for s in services}
    for name, f in sorted(facts.items()):  # e.g. the hidden `containerpilot` service
        if name not in listed and f.get("registered") and f.get("port"):
            services.append({"Name": name, "Address": f.get("address", ""), "Port": f["port"],
                             "Status": "healthy", "ID": f.get("service_id"),
                             "Registered": True, "Role": f.get("role")})
    watches = [w.name for w in supervisor.ctx.config.watches]
    return {"Version": __version__, "Jobs": jobs, "Services": services, "Watches": watches,
            "Pid": os.getpid(), "Maintenance": _in_maintenance(supervisor)}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)
