"""The control API's handlers: request validation and the calls into the supervisor.

Every answer is JSON. Errors are ``{"error": "…"}`` with 400 (a body we cannot use),
404 (unknown route or job), 405 (wrong method), 413 (body too large), 422 (a reload whose
new config is refused; the running config stays) or 500 (a bug: logged, never a crash).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any

from autopilot import __version__
from autopilot.config.model import ConfigError
from autopilot.control.api import JobView, SupervisorAPI
from autopilot.control.httpd import Request, Response, Router, error_response, json_response
from autopilot.logs import get_logger

JOB_ACTIONS = ("start", "stop", "restart", "signal")

log = get_logger("autopilot.control")


class BadRequest(Exception):
    """The request body or parameters are unusable (400)."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return error_response(status, message, headers)


async def maybe_await(value: Any) -> Any:
    """Supervisor methods may be sync or async; accept both (a coroutine or a future is an
    ``Awaitable``; ``inspect`` is not loaded for this: `autopilot.lazyinspect`)."""
    if isinstance(value, Awaitable):
        return await value
    return value


async def read_json(request: Request) -> Any:
    raw = request.body  # the server answered 413 past its limit already
    if not raw.strip():
        raise BadRequest("empty body; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        import json  # loaded with the first request that needs it (docs/performance.md)

        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # e.g. 100k nested arrays
        raise BadRequest("body is nested too deeply") from exc


async def read_object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object, got {type(body).__name__}")
    return body


def parse_environ(body: dict[str, Any]) -> dict[str, str]:
    """Validate a putenv body: string keys without '=' or NUL; string or null values."""
    env: dict[str, str] = {}
    for key, value in body.items():
        if not key or "=" in key or "\0" in key:
            raise BadRequest(f"invalid environment variable name {key!r}")
        if value is None:
            value = ""  # as ContainerPilot: null sets an empty value
        if not isinstance(value, str):
            raise BadRequest(f"{key}: value must be a string, got {type(value).__name__}")
        if "\0" in value:
            raise BadRequest(f"{key}: value contains a NUL byte")
        env[key] = value
    return env


def parse_metrics(body: dict[str, Any]) -> dict[str, float]:
    """Validate a metric body: numbers, or numeric strings (what `-putmetric K=V` sends)."""
    values: dict[str, float] = {}
    for key, value in body.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            import json

            raise BadRequest(f"metric {key!r}: value must be a number, got {json.dumps(value)}")
        try:
            number = float(value)
        except ValueError as exc:
            raise BadRequest(f"metric {key!r}: value {value!r} is not a number") from exc
        values[key] = number
    return values


def job_summary(job: JobView | None) -> dict[str, Any]:
    if job is None:  # removed meanwhile (a reload)
        return {"name": None, "status": None, "pid": None, "runs": None, "last_exit": None}
    return {"name": job.name, "status": job.status, "pid": job.pid, "runs": job.runs,
            "last_exit": job.last_exit}


class Routes:
    """Handlers bound to one supervisor."""

    def __init__(self, supervisor: SupervisorAPI) -> None:
        self.sup = supervisor
        self._reload_lock = asyncio.Lock()
        #: set while a reload request is being served (the server's stop() looks at it)
        self.reloading = False

    def add_to(self, r: Router) -> None:
        r.add("GET", "/v3/ping", self.ping)
        r.add("GET", "/v3/status", self.status)
        r.add("POST", "/v3/environ", self.environ)
        r.add("POST", "/v3/reload", self.reload)
        r.add("POST", "/v3/metric", self.metric)
        r.add("POST", "/v3/maintenance/enable", self.maintenance_enable)
        r.add("POST", "/v3/maintenance/disable", self.maintenance_disable)
        r.add("POST", "/v3/jobs/{name}/{action}", self.job)

    async def ping(self, request: Request) -> Response:
        return json_response({"ok": True, "pid": os.getpid(), "version": __version__})

    async def environ(self, request: Request) -> Response:
        env = parse_environ(await read_object(request))
        await maybe_await(self.sup.putenv(env))
        return json_response({"ok": True, "updated": sorted(env)})

    async def reload(self, request: Request) -> Response:
        async with self._reload_lock:  # one reload at a time; later ones queue up
            self.reloading = True
            try:
                # shielded: a client that hangs up must not cancel a reload halfway
                await asyncio.shield(asyncio.ensure_future(self.sup.reload()))
            except ConfigError as exc:
                return error(422, f"reload refused, the running config stays: {exc}")
            finally:
                self.reloading = False
        log.debug("control: reloaded app via control plane")  # ContainerPilot's line
        return json_response({"ok": True, "reloaded": True})

    async def metric(self, request: Request) -> Response:
        values = parse_metrics(await read_object(request))
        telemetry = self.sup.telemetry
        if values and telemetry is None:
            raise BadRequest("telemetry is not configured: there are no metrics to update")
        try:
            if telemetry is not None:  # validate every pair before applying any: all or nothing
                for key, value in values.items():
                    telemetry.check_metric(key, value)
            for key, value in values.items():
                await maybe_await(self.sup.put_metric(key, value))
        except (ValueError, KeyError) as exc:
            raise BadRequest(exc.args[0] if exc.args else str(exc)) from exc
        return json_response({"ok": True, "updated": sorted(values)})

    async def maintenance_enable(self, request: Request) -> Response:
        await maybe_await(self.sup.set_maintenance(True))
        return json_response({"ok": True, "maintenance": True})

    async def maintenance_disable(self, request: Request) -> Response:
        await maybe_await(self.sup.set_maintenance(False))
        return json_response({"ok": True, "maintenance": False})

    async def job(self, request: Request) -> Response:
        name = request.match_info["name"]
        action = request.match_info["action"]
        if action not in JOB_ACTIONS:
            return error(404, f"unknown job action {action!r}; use one of {', '.join(JOB_ACTIONS)}")
        if name not in self.sup.jobs:
            return error(404, f"unknown job {name!r}")
        signal = None
        if action == "signal":
            body = await read_object(request)
            signal = body.get("signal")
            if isinstance(signal, bool) or not isinstance(signal, (str, int)) or signal == "":
                raise BadRequest('expected a body {"signal": "SIGHUP"} (a signal name or number)')
        try:
            await self.sup.job_action(name, action, signal)
        except KeyError:
            return error(404, f"unknown job {name!r}")
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        job = self.sup.jobs.get(name)
        return json_response({"ok": True, "action": action, "job": job_summary(job)})

    async def status(self, request: Request) -> Response:
        return json_response(await self.build_status(), dumps=_dumps)

    async def build_status(self) -> dict[str, Any]:
        """Jobs with their health and registration facts (role included), plus whatever
        extra top-level keys the supervisor's own ``status()`` reports."""
        base = await maybe_await(self.sup.status()) or {}
        if not isinstance(base, dict):
            base = {}
        facts = self.sup.ctx.facts
        extra_jobs = _jobs_by_name(base.get("jobs"))
        jobs = []
        for name, job in list(self.sup.jobs.items()):
            entry = dict(extra_jobs.get(name, {}))
            entry.update({k: v for k, v in job_summary(job).items() if v is not None or k not in entry})
            entry["health_check"] = job.cfg.health is not None
            entry["port"] = job.cfg.port or None
            job_facts = dict(facts.get(name, {}))
            entry["registered"] = job_facts.pop("registered", False)
            entry["role"] = job_facts.get("role")
            entry["facts"] = job_facts
            jobs.append(entry)
        out = {k: v for k, v in base.items() if k not in ("jobs", "facts")}
        out.update({"version": __version__, "pid": os.getpid(), "jobs": jobs})
        return out


def _jobs_by_name(jobs: Any) -> dict[str, dict[str, Any]]:
    if isinstance(jobs, dict):
        return {k: dict(v) for k, v in jobs.items() if isinstance(v, dict)}
    if isinstance(jobs, list):
        return {j["name"]: dict(j) for j in jobs if isinstance(j, dict) and "name" in j}
    return {}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)
