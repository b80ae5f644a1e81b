"""The catalog's aiohttp application: middleware (ACL, errors, commits) and the server run.

Every request ends its write (``State.commit``) in the middleware, so blocked readers wake
and the data dir is saved exactly once per request, whatever the handler did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import resource
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from autopilot.catalog import routes_agent, routes_catalog, routes_kv, routes_session
from autopilot.catalog.agent import AgentError
from autopilot.catalog.persist import Persister
from autopilot.catalog.state import Settings, State
from autopilot.catalog.web import STATE_KEY, ConsulError

log = logging.getLogger("autopilot.catalog")

MAX_BODY = 4 * 1024 * 1024
ACL_FREE = ("/v1/status/",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


def _token(request: web.Request) -> str | None:
    tok = request.headers.get("X-Consul-Token") or request.query.get("token")
    if tok:
        return tok
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def _check_token(request: web.Request, expected: str | None) -> None:
    """Consul's answers without the token (anonymous) and with a token it does not know."""
    if not expected or request.path.startswith(ACL_FREE):
        return
    given = _token(request)
    if not given:
        raise ConsulError(403, "Permission denied")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ConsulError(403, "ACL not found")


@web.middleware
async def consul_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = request.app[STATE_KEY]
    try:
        _check_token(request, st.settings.token)
        if (request.content_length is not None and request.content_length > MAX_BODY
                and not request.path.startswith("/v1/kv/")):  # KV answers its own 413
            raise ConsulError(413, f"Request body too large, max size: {MAX_BODY} bytes")
        resp = await handler(request)
    except (ConsulError, AgentError) as exc:
        resp = _text(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        resp = _text(413, f"Request body too large, max size: {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status == 405:
            resp = _text(405, f"method {request.method} not allowed")
        elif exc.status == 404:
            resp = _text(404, "404 page not found\n")  # Go's http.NotFound
        else:
            raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - never die on a request; answer 500 like Consul
        log.exception("request %s %s failed", request.method, request.path)
        resp = _text(500, str(exc) or type(exc).__name__)
    finally:
        st.commit()
    resp.headers["X-Consul-Default-Acl-Policy"] = "deny" if st.settings.token else "allow"
    return resp


def make_app(state: State) -> web.Application:
    app = web.Application(middlewares=[consul_middleware], client_max_size=MAX_BODY)
    app[STATE_KEY] = state
    for mod in (routes_agent, routes_catalog, routes_kv, routes_session):
        app.add_routes(mod.routes)
    return app


def _raise_fd_limit() -> None:
    """Thousands of idle client connections must not exhaust our descriptors."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: Settings, ready: Callable[[str], None] | None = None) -> None:
    """Run the catalog until SIGTERM/SIGINT."""
    _raise_fd_limit()
    state = State(settings)
    persister = None
    if settings.data_dir:
        persister = Persister(state, settings.data_dir)
        persister.load()
        state.store.on_commit.append(persister.save)
    state.agent.bootstrap()
    state.sessions.arm_all()
    await state.agent.start()
    app = make_app(state)
    # handler_cancellation: a blocking query whose client went away stops waiting at once;
    # shutdown_timeout: on SIGTERM, parked blocking queries are cut after 0.5 s instead of
    # holding the exit for up to their whole wait
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=75.0, handler_cancellation=True,
                           shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, settings.bind, settings.port, backlog=2048, reuse_address=True)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    where = f"{settings.bind}:{port}"
    log.info("catalog serving on %s (node %s, dc %s)", where, settings.node,
             settings.datacenter)
    if ready:
        ready(where)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Consul reloads its configuration on SIGHUP; we have none to reload, but must not die
    loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP: nothing to reload")
    try:
        await stop.wait()
    finally:
        await state.agent.stop()
        await runner.cleanup()
        if persister:
            persister.save()
