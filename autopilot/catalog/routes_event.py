"""/v1/event/*: user events, kept in memory (the last 256, as a Consul agent's buffer).

Consul spreads events by gossip and never stores them in the catalog; a single-node catalog
just remembers what was fired on it, so ``event/list`` shows them and a watcher on it works.
"""

from __future__ import annotations

import base64
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from autopilot.catalog.web import ConsulError, check_dc, reply, state_of

MAX_EVENTS = 256
routes = web.RouteTableDef()


def _events(request: web.Request) -> deque:
    return state_of(request).events


@routes.put("/v1/event/fire/{name:.*}")
async def event_fire(request: web.Request) -> web.Response:
    check_dc(request)
    name = request.match_info["name"]
    if not name:
        raise ConsulError(400, "Missing name")
    payload = await request.read()
    events = _events(request)
    event: dict[str, Any] = {
        "ID": str(uuid.uuid4()), "Name": name,
        "Payload": base64.b64encode(payload).decode() if payload else None,
        "NodeFilter": request.query.get("node", ""),
        "ServiceFilter": request.query.get("service", ""),
        "TagFilter": request.query.get("tag", ""), "Version": 1, "LTime": 0}
    # the answer is the event as fired (LTime 0); the stored copy gets its Lamport time
    events.append({**event, "LTime": (events[-1]["LTime"] + 1) if events else 2})
    return reply(request, event)


@routes.get("/v1/event/list")
async def event_list(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    events = [e for e in _events(request) if not name or e["Name"] == name]
    # Consul's index here is derived from the last event's ID, not a raft index
    index = int(uuid.UUID(events[-1]["ID"]).int & 0x7FFFFFFFFFFF) if events else 1
    resp = reply(request, events)
    resp.headers["X-Consul-Index"] = str(index)  # an agent-local list: no leader meta
    return resp
