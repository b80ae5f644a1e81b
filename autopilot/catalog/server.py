"""The catalog's aiohttp application: middleware (ACL, errors, commits) and the server run.

Every request ends its write (``State.commit``) in the middleware, so blocked readers wake
and the data dir is saved exactly once per request, whatever the handler did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import resource
import signal
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from autopilot.catalog import (
    faults,
    routes_agent,
    routes_catalog,
    routes_event,
    routes_kv,
    routes_session,
)
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


def _anonymous(request: web.Request, expected: str | None) -> bool:
    """True for a request without a token when ACLs are on (the anonymous token, whose
    policy is deny); a token other than the configured one is refused as Consul refuses a
    token it does not know."""
    if not expected or request.path.startswith(ACL_FREE):
        return False
    given = _token(request)
    if not given:
        return True
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ConsulError(403, "ACL not found")
    return False


#: reads that need a specific permission: denied outright, not filtered
_DENIED_READS = ("/v1/agent/self", "/v1/agent/service/", "/v1/agent/metrics",
                 "/v1/agent/host", "/v1/operator/", "/v1/acl/")


async def _as_anonymous(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Consul with ``default_policy = "deny"`` and no token: writes and targeted reads
    answer 403, listing reads answer as if nothing were visible (filtered, not refused)."""
    path = request.path
    if request.method not in ("GET", "HEAD"):
        if path == "/v1/agent/service/register":
            name = ""
            with contextlib.suppress(Exception):
                name = (await request.json()).get("Name") or ""
            raise ConsulError(403, f"Permission denied: Missing service:write on {name}")
        raise ConsulError(403, "Permission denied")
    kv_list = path.startswith("/v1/kv/") and ("recurse" in request.query
                                              or "keys" in request.query)
    if path.startswith(_DENIED_READS) or (path.startswith("/v1/kv/") and not kv_list):
        raise ConsulError(403, "Permission denied")
    resp = await handler(request)
    if resp.status != 200 or not isinstance(resp, web.Response) \
            or path == "/v1/catalog/datacenters" or resp.content_type != "application/json":
        return resp
    if path.startswith("/v1/kv/") and "recurse" in request.query:
        out = web.Response(status=404)  # no visible key: the missing-prefix answer
        for h in ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact"):
            if h in resp.headers:
                out.headers[h] = resp.headers[h]
        return out
    data = json.loads(resp.body or b"null")
    empty: object = {} if isinstance(data, dict) else [] if isinstance(data, list) else None
    if path.startswith("/v1/catalog/node/"):
        empty = None
    resp.text = json.dumps(empty)
    return resp


@web.middleware
async def consul_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = request.app[STATE_KEY]
    if request.method == "HEAD":  # Consul's handlers allow HEAD nowhere
        return _text(405, "method HEAD not allowed")
    try:
        faults.check(request)  # test-only, off unless AUTOPILOT_CATALOG_FAULTS=1
        anonymous = _anonymous(request, st.settings.token)
        if (request.content_length is not None and request.content_length > MAX_BODY
                and not request.path.startswith("/v1/kv/")):  # KV answers its own 413
            raise ConsulError(413, f"Request body too large, max size: {MAX_BODY} bytes")
        resp = await (_as_anonymous(request, handler) if anonymous else handler(request))
    except (ConsulError, AgentError) as exc:
        resp = _text(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        resp = _text(413, f"Request body too large, max size: {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status == 405:
            resp = _text(405, f"method {request.method} not allowed")
        elif exc.status == 404:
            # Consul's mux answers an unknown path with an empty 404 and no headers
            return web.Response(status=404)
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
    for mod in (routes_agent, routes_catalog, routes_event, routes_kv, routes_session):
        app.add_routes(mod.routes)
    faults.install(app)
    return app


def _raise_fd_limit() -> None:
    """Thousands of idle client connections must not exhaust our descriptors."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS on the catalog's port when a certificate is configured (Consul serves HTTPS on
    its own ``https`` port; the catalog has one listener, so it is either HTTP or HTTPS)."""
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca:
        ctx.load_verify_locations(settings.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


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
    site = web.TCPSite(runner, settings.bind, settings.port, backlog=2048, reuse_address=True,
                       ssl_context=tls_context(settings))
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    where = f"{'https://' if settings.tls_cert else ''}{settings.bind}:{port}"
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
