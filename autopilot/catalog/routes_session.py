"""/v1/session/*: create, destroy, renew, info, list, node (reads are blocking-capable)."""

from __future__ import annotations

from aiohttp import web

from autopilot.catalog import decode
from autopilot.catalog.sessions import SessionError
from autopilot.catalog.web import (
    ConsulError,
    block,
    body_json,
    check_dc,
    conform_body,
    reply,
    state_of,
    topic_is,
)

routes = web.RouteTableDef()


def _sid(request: web.Request) -> str:
    sid = request.match_info["sid"]
    if not sid:
        raise ConsulError(400, "Missing session")
    return sid


@routes.put("/v1/session/create")
async def session_create(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    body = conform_body(await body_json(request), decode.SESSION)
    try:
        sess = st.sessions.create(body)
    except SessionError as exc:
        raise ConsulError(500, str(exc)) from None
    except ValueError as exc:
        raise ConsulError(400, f"Request decode failed: {exc}") from None
    return reply(request, {"ID": sess.id})


@routes.put("/v1/session/destroy/{sid:.*}")
async def session_destroy(request: web.Request) -> web.Response:
    check_dc(request)
    _sid(request)
    state_of(request).sessions.destroy(request.match_info["sid"])
    return reply(request, True)


@routes.put("/v1/session/renew/{sid:.*}")
async def session_renew(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    sid = _sid(request)
    sess = st.sessions.renew(sid)
    if sess is None:
        raise ConsulError(404, f"Session id '{sid}' not found")
    return reply(request, [sess.to_json()])  # a write: no query meta headers, as Consul


@routes.get("/v1/session/info/{sid:.*}")
async def session_info(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    sid = _sid(request)
    # woken by this session's changes only; a live session reports its own ModifyIndex (so
    # other sessions' churn never moves it), a missing one the sessions table index
    idx = await block(request, lambda: st.sessions.session_index(sid),
                      topic_is(f"session:{sid}"))
    sess = st.sessions.sessions.get(sid)
    return reply(request, [sess.to_json()] if sess else [], idx)


@routes.get("/v1/session/list")
async def session_list(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    idx = await block(request, st.sessions.index, topic_is("table:sessions"))
    return reply(request, [s.to_json() for s in st.sessions.list()], idx)


@routes.get("/v1/session/node/{node:.*}")
async def session_node(request: web.Request) -> web.Response:
    check_dc(request)
    if not request.match_info["node"]:
        raise ConsulError(400, "Missing node name")
    st = state_of(request)
    idx = await block(request, st.sessions.index, topic_is("table:sessions"))
    return reply(request, [s.to_json() for s in st.sessions.list(request.match_info["node"])],
                 idx)
