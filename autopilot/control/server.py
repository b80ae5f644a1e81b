"""The control socket: ContainerPilot's /v3 API (plus status and per-job control) over HTTP
on a unix socket.

Component contract: ``ControlServer(ctx, supervisor)``, ``key``, ``cfg``, ``async start()``,
``async stop()``. ``start()`` raises ``ControlSocketError`` when the socket cannot be made
(for example another autopilot holds it); ``fatal = True`` tells the supervisor to exit then.
Handlers and validation live in ``routes.py``, the socket file's life in ``unixsock.py``.

The socket listens from ``start()`` on, but the HTTP server and the routes
(``httpd.py``, ``routes.py``, ``api.py``: about 0.15 MB of a one-job supervisor's 15) are
imported when the first connection arrives: most containers never call their control
socket, and the first request pays the import once (a few milliseconds).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from autopilot.context import Context
from autopilot.control import unixsock
from autopilot.control.stats import request_counts
from autopilot.control.unixsock import ControlSocketError
from autopilot.logs import get_logger

if TYPE_CHECKING:
    from autopilot.control.api import SupervisorAPI
    from autopilot.control.httpd import HTTPServer, Request, Response, Router
    from autopilot.control.routes import Routes

__all__ = ["ControlServer", "ControlSocketError", "MAX_BODY"]

log = get_logger("autopilot.control")

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

    def __init__(self, ctx: Context, supervisor: SupervisorAPI) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.cfg = ctx.config.control
        self.path = os.path.abspath(self.cfg.socket)
        self.counts = request_counts(supervisor)
        #: made with the first connection (`_http_server`)
        self.routes: Routes | None = None
        self.router: Router | None = None
        self._http: HTTPServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._stopping: asyncio.Task | None = None

    def _http_server(self) -> HTTPServer:
        """The HTTP server and routes, imported and made at the first connection."""
        if self._http is None:
            from autopilot.control.httpd import HTTPServer, Router
            from autopilot.control.routes import Routes

            self.routes = Routes(self.supervisor)
            self.router = Router()
            self.routes.add_to(self.router)
            http = HTTPServer(self._handle, MAX_BODY, "control")
            assert self._listener is not None
            http.adopt(self._listener)
            self._http = http
        return self._http

    def _protocol(self) -> asyncio.BaseProtocol:
        """The listener's protocol factory: each accepted connection."""
        return self._http_server().protocol()

    async def _handle(self, request: Request) -> Response:
        """JSON errors for everything, request counting, and no exception ever escapes."""
        from autopilot.control.httpd import HTTPError
        from autopilot.control.routes import BadRequest, error

        assert self.router is not None
        try:
            resp = await self.router.resolve(request)(request)
        except BadRequest as exc:
            resp = error(400, str(exc))
        except HTTPError as exc:
            resp = error(exc.status, exc.message, exc.headers)
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
            self._listener = await asyncio.get_running_loop().create_unix_server(
                self._protocol, sock=sock)
        except BaseException:
            sock.close()
            unixsock.remove_if_ours(self.path, self._inode)
            raise
        # children (sensors calling `autopilot ctl putmetric`, hooks) find this socket
        self.ctx.child_env[SOCKET_ENV] = self.path
        # ContainerPilot's wording (scrapers and its integration tests look for it)
        log.info(f"control: serving at {self.path}", socket=self.path, mode=oct(self.cfg.mode))

    async def stop(self) -> None:
        """Stop serving and remove the socket file (if it is still ours). Idempotent.

        A reload that replaces this server runs inside a request on this server; then the
        listener closes now and the in-flight reload answer is finished in the background.
        """
        listener, self._listener = self._listener, None
        if listener is None:
            return
        unixsock.remove_if_ours(self.path, self._inode)
        http = self._http
        if http is None:  # no connection ever came: nothing but the listener to close
            listener.close()
        elif self.routes is not None and self.routes.reloading:
            http.close_listeners()
            self._stopping = asyncio.get_running_loop().create_task(self._finish_later(http))
            return
        else:
            await http.close(STOP_GRACE)
        log.info("control socket closed", socket=self.path)

    async def _finish_later(self, http: HTTPServer) -> None:
        while self.routes is not None and self.routes.reloading:
            await asyncio.sleep(0.05)
        await http.close(STOP_GRACE)


def _path_label(request: Request) -> str:
    """Bounded label values: a route's pattern, a known path, or "other"."""
    if request.route is not None:
        return request.route
    return request.path if request.path in _KNOWN_PATHS else "other"
