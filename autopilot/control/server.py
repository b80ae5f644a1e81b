"""The control socket: ContainerPilot's /v3 API (plus status and per-job control) over HTTP
on a unix socket.

Component contract: ``ControlServer(ctx, supervisor)``, ``key``, ``cfg``, ``async start()``,
``async stop()``. ``start()`` raises ``ControlSocketError`` when the socket cannot be made
(for example another autopilot holds it); ``fatal = True`` tells the supervisor to exit then.
Handlers and validation live in ``routes.py``, the socket file's life in ``unixsock.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import structlog
from aiohttp import web

from autopilot.context import Context
from autopilot.control import unixsock
from autopilot.control.routes import BadRequest, Routes, error
from autopilot.control.stats import request_counts
from autopilot.control.unixsock import ControlSocketError

__all__ = ["ControlServer", "ControlSocketError", "MAX_BODY"]

log = structlog.get_logger("autopilot.control")

MAX_BODY = 1024 * 1024  # 1 MiB: more than any environment or metric batch needs
STOP_GRACE = 5.0  # seconds in-flight requests get at stop()
SOCKET_ENV = "AUTOPILOT_SOCKET"  # set for every child, so `autopilot ctl` finds the socket
_KNOWN_PATHS = frozenset({
    "/v3/ping", "/v3/status", "/v3/environ", "/v3/reload", "/v3/metric",
    "/v3/maintenance/enable", "/v3/maintenance/disable",
})


class ControlServer:
    key = "control"
    #: autopilot cannot run without it: a failed start at startup stops autopilot (status 1)
    fatal = True

    def __init__(self, ctx: Context, supervisor: Any) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.cfg = ctx.config.control
        self.path = os.path.abspath(self.cfg.socket)
        self.routes = Routes(supervisor)
        self.counts = request_counts(supervisor)
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None
        self._stopping: asyncio.Task | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        self.routes.add_to(app)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """JSON errors for everything, request counting, and no exception ever escapes."""
        try:
            resp = await handler(request)
        except BadRequest as exc:
            resp = error(400, str(exc))
        except web.HTTPException as exc:
            resp = _http_error(exc, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("control request failed", path=request.path)
            resp = error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.counts[(str(resp.status), _path_label(request))] += 1
        return resp

    async def start(self) -> None:
        # a failure here is fatal at startup (``fatal``): the supervisor exits with status 1
        sock = unixsock.bind(self.path, self.cfg.mode, self.cfg.group)
        try:
            self._inode = os.lstat(self.path).st_ino
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=STOP_GRACE)
            await runner.setup()
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            unixsock.remove_if_ours(self.path, self._inode)
            raise
        self._runner = runner
        # children (sensors calling `autopilot ctl putmetric`, hooks) find this socket
        self.ctx.child_env[SOCKET_ENV] = self.path
        log.info("control socket listening", socket=self.path, mode=oct(self.cfg.mode))

    async def stop(self) -> None:
        """Stop serving and remove the socket file (if it is still ours). Idempotent.

        A reload that replaces this server runs inside a request on this server; then the
        listener closes now and the in-flight reload answer is finished in the background.
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        unixsock.remove_if_ours(self.path, self._inode)
        if self.routes.reloading:
            for site in list(runner.sites):
                with contextlib.suppress(Exception):
                    await site.stop()
            self._stopping = asyncio.get_running_loop().create_task(self._finish_later(runner))
            return
        await runner.cleanup()
        log.info("control socket closed", socket=self.path)

    async def _finish_later(self, runner: web.AppRunner) -> None:
        while self.routes.reloading:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # let the answer go out
        await runner.cleanup()


def _path_label(request: web.Request) -> str:
    """Bounded label values: a route's pattern, a known path, or "other"."""
    resource = request.match_info.route.resource
    if resource is not None:
        return resource.canonical
    return request.path if request.path in _KNOWN_PATHS else "other"


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    if exc.status == 404:
        return error(404, f"no such route: {request.path}")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return error(405, f"method {request.method} not allowed on {request.path}"
                     + (f" (allowed: {allowed})" if allowed else ""),
                     headers={"Allow": allowed} if allowed else None)
    if exc.status == 413:
        return error(413, f"request body too large (limit {MAX_BODY} bytes)")
    return error(exc.status, exc.text or exc.reason)
