"""Test-only fault injection: the catalog behaves as Consul servers electing a raft leader.

Off unless the catalog runs with ``AUTOPILOT_CATALOG_FAULTS=1`` in its environment; then
``PUT /v1/autopilot-fault/no-leader?seconds=N`` starts a window of N seconds during which
every request that would need the raft leader answers **500 "No cluster leader"**, as
Consul does: KV, sessions, catalog and health reads, transactions. The local agent's
endpoints (``/v1/agent/...``: registration, check passes) and ``/v1/status/...`` still
answer, as a Consul agent does on its own. Meanwhile no session expires (nobody runs the
timers without a leader); when the window ends every session gets a full TTL again, as
after a Consul leader election. Parked blocking queries are left parked (a real server
would fail them); CI uses this to test how the election rides out a Consul election
(tests/integration/test_election_consul_leader.py, docs/stateful.md).
"""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

from autopilot.catalog.state import State
from autopilot.catalog.web import STATE_KEY, ConsulError

ENV = "AUTOPILOT_CATALOG_FAULTS"
PREFIX = "/v1/autopilot-fault/"
LOCAL = ("/v1/agent/", "/v1/status/", PREFIX)


class Faults:
    def __init__(self) -> None:
        self.no_leader_until = 0.0
        self._end: asyncio.TimerHandle | None = None


FAULTS_KEY = web.AppKey("catalog_faults", Faults)
routes = web.RouteTableDef()


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def install(app: web.Application) -> None:
    """Adds the fault routes (only when enabled)."""
    if enabled():
        app[FAULTS_KEY] = Faults()
        app.add_routes(routes)


def check(request: web.Request) -> None:
    """Raises 500 "No cluster leader" inside a no-leader window."""
    faults = request.app.get(FAULTS_KEY)
    if faults is None or time.monotonic() >= faults.no_leader_until:
        return
    if not request.path.startswith(LOCAL):
        raise ConsulError(500, "No cluster leader")


@routes.put(PREFIX + "no-leader")
async def no_leader(request: web.Request) -> web.Response:
    try:
        seconds = float(request.query.get("seconds", ""))
    except ValueError:
        raise ConsulError(400, "seconds must be a number") from None
    if not 0 < seconds <= 600:
        raise ConsulError(400, "seconds must be > 0 and <= 600")
    faults = request.app[FAULTS_KEY]
    st = request.app[STATE_KEY]
    _pause_sessions(st)
    faults.no_leader_until = time.monotonic() + seconds
    if faults._end is not None:
        faults._end.cancel()
    faults._end = asyncio.get_running_loop().call_later(seconds, _leader_elected, st)
    return web.json_response(True)


def _pause_sessions(st: State) -> None:
    timers = st.sessions._timers  # the catalog's own TTL timers (sessions.py)
    for handle in timers.values():
        handle.cancel()
    timers.clear()


def _leader_elected(st: State) -> None:
    st.sessions.arm_all()  # a full TTL from now for every session, as a new leader does
