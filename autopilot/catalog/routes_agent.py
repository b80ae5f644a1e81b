"""/v1/agent/*, /v1/status/*: the local agent's view and its write endpoints."""

from __future__ import annotations

import hashlib
import json
import time

from aiohttp import web

from autopilot.catalog import decode
from autopilot.catalog.agent import CONSUL_VERSION
from autopilot.catalog.registry import CRITICAL, PASSING, SERF_CHECK, STATUSES, WARNING
from autopilot.catalog.web import (
    ConsulError,
    body_json,
    conform_body,
    filtered,
    reply,
    request_filter,
    state_of,
    wait_params,
)

VERSION = CONSUL_VERSION
routes = web.RouteTableDef()


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    return reply(request, f"{state_of(request).agent.address}:8300")


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return reply(request, [f"{state_of(request).agent.address}:8300"])


def _member(request: web.Request, wan: bool = False) -> dict:
    """This server's serf member; in the WAN pool its name is ``<node>.<dc>``."""
    st = state_of(request)
    tags = {"acls": "1" if st.settings.token else "0", "build": f"{VERSION}:autopilot",
            "dc": st.settings.datacenter, "ft_fs": "1", "ft_si": "1",
            "id": st.registry.nodes[st.node].id if st.node in st.registry.nodes else "",
            "port": "8300", "raft_vsn": "3", "role": "consul", "vsn": "2", "vsn_max": "3",
            "vsn_min": "2"}
    if not wan:
        tags.update(segment="", wan_join_port="8302")
    name = f"{st.node}.{st.settings.datacenter}" if wan else st.node
    return {"Name": name, "Addr": st.agent.address, "Port": 8302 if wan else 8301,
            "Tags": tags,
            "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}


def _wake_stats(samples) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Server-side wake latency (commit -> blocked reader runs), as Consul-style strings."""
    ordered = sorted(samples)
    if not ordered:
        return {"wake_samples": "0"}

    def pct(p: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1)))] * 1000:.3f}"

    return {"wake_samples": str(len(ordered)), "wake_p50_ms": pct(0.5),
            "wake_p99_ms": pct(0.99)}


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    st = state_of(request)
    node = st.registry.nodes.get(st.node)
    cfg = {"Datacenter": st.settings.datacenter, "PrimaryDatacenter": st.settings.datacenter,
           "NodeName": st.node, "NodeID": node.id if node else "", "Server": True,
           "Revision": "autopilot", "Version": VERSION}
    return reply(request, {"Config": cfg, "DebugConfig": {"EmbeddedCatalog": True, **cfg},
                           "Coord": None, "Member": _member(request),
                           "Stats": {"consul": _consul_stats(request), "catalog": {
                               "blocked_queries": str(st.store.hub.waiting),
                               **_wake_stats(st.store.hub.wake_samples),
                               "index": str(st.store.index)}},
                           "Meta": {"consul-network-segment": ""}})  # no xDS key in 1.10


def _consul_stats(request: web.Request) -> dict[str, str]:
    """``Stats.consul`` as a dev agent (a single server, its own leader) reports it."""
    st = state_of(request)
    return {"acl": "enabled" if st.settings.token else "disabled", "bootstrap": "false",
            "known_datacenters": "1", "leader": "true",
            "leader_addr": f"{st.agent.address}:8300", "server": "true"}


@routes.get("/v1/agent/members")
async def agent_members(request: web.Request) -> web.Response:
    wan = request.query.get("wan", "") not in ("", "0", "false")
    return reply(request, [_member(request, wan)])


@routes.get("/v1/operator/raft/configuration")
async def raft_configuration(request: web.Request) -> web.Response:
    """The one-server raft configuration of a dev agent (the catalog is its own leader)."""
    st = state_of(request)
    node = st.registry.nodes.get(st.node)
    return reply(request, {"Servers": [{
        "ID": node.id if node else "", "Node": st.node, "Address": f"{st.agent.address}:8300",
        "Leader": True, "ProtocolVersion": "3", "Voter": True}], "Index": 0})


@routes.get("/v1/coordinate/datacenters")
async def coordinate_datacenters(request: web.Request) -> web.Response:
    """Network coordinates: one WAN area with this server at the origin (no gossip here)."""
    st = state_of(request)
    origin = {"Vec": [0] * 8, "Error": 1.5, "Adjustment": 0, "Height": 1e-05}
    return reply(request, [{"Datacenter": st.settings.datacenter, "AreaID": "wan",
                            "Coordinates": [{"Node": st.node, "Segment": "",
                                             "Coord": origin}]}])


@routes.get("/v1/coordinate/nodes")
async def coordinate_nodes(request: web.Request) -> web.Response:
    """No LAN coordinates are computed (no serf probes): an empty list, as a fresh agent."""
    return reply(request, [], state_of(request).store.table("coordinates"))


@routes.get("/v1/agent/services")
async def agent_services(request: web.Request) -> web.Response:
    st = state_of(request)
    dc = st.settings.datacenter
    flt = request_filter(request)
    return reply(request, filtered(flt, {s.id: s.agent_json(dc)
                                         for s in st.registry.services.values()
                                         if st.agent.owns(s)}))


def _service_view(request: web.Request, sid: str) -> tuple[dict | None, str]:
    """The agent's service as JSON with its ContentHash (None when unknown)."""
    st = state_of(request)
    svc = st.registry.services.get((st.node, sid))
    if svc is None or not st.agent.owns(svc):
        return None, ""
    data = svc.agent_json(st.settings.datacenter)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    data["ContentHash"] = digest
    return data, digest


@routes.get("/v1/agent/service/{sid:.+}")
async def agent_service(request: web.Request) -> web.Response:
    """With ``?hash=<ContentHash>`` this blocks (up to ``?wait``) until the service changes,
    as Consul's hash-based blocking on this endpoint does."""
    sid = request.match_info["sid"]
    if sid == "register" or sid.startswith(("deregister/", "maintenance/")):
        raise ConsulError(405, f"method {request.method} not allowed")
    data, digest = _service_view(request, sid)
    known = request.query.get("hash")
    if data is not None and known and known == digest:
        _, wait = wait_params(request)
        hub = state_of(request).store.hub
        name = data["Service"]
        deadline = time.monotonic() + wait
        while data is not None and digest == known and time.monotonic() < deadline:
            await hub.wait(lambda t: t in (f"svc:{name}", "table:services"),
                           deadline - time.monotonic())
            data, digest = _service_view(request, sid)
    if data is None:
        raise ConsulError(404, f"unknown service ID: {sid}")
    resp = reply(request, data)
    resp.headers["X-Consul-ContentHash"] = digest
    return resp


@routes.get("/v1/agent/checks")
async def agent_checks(request: web.Request) -> web.Response:
    st = state_of(request)
    flt = request_filter(request)
    # the agent lists the checks registered on it: not the node's serfHealth, which the
    # server maintains in the catalog
    return reply(request, filtered(flt, {c.id: c.agent_json()
                                         for c in st.registry.checks.values()
                                         if c.node == st.node and c.id != SERF_CHECK}))


@routes.put("/v1/agent/service/register")
async def service_register(request: web.Request) -> web.Response:
    body = conform_body(await body_json(request), decode.SERVICE)
    replace = request.query.get("replace-existing-checks")
    replace_checks = replace is not None and replace.lower() not in ("false", "0")
    state_of(request).agent.register_service(body, replace_checks)
    return web.Response(status=200)


@routes.put("/v1/agent/service/deregister/{sid:.+}")
async def service_deregister(request: web.Request) -> web.Response:
    state_of(request).agent.deregister_service(request.match_info["sid"])
    return web.Response(status=200)


def _enable_param(request: web.Request) -> bool:
    raw = request.query.get("enable")
    if raw is None or raw == "":
        raise ConsulError(400, "Missing value for enable")
    if raw.lower() not in ("true", "false", "1", "0", "t", "f"):
        raise ConsulError(400, f'Invalid value for enable: "{raw}"')
    return raw.lower() in ("true", "1", "t")


@routes.put("/v1/agent/service/maintenance/{sid:.+}")
async def service_maintenance(request: web.Request) -> web.Response:
    enable = _enable_param(request)
    state_of(request).agent.set_maintenance(request.match_info["sid"], enable,
                request.query.get("reason", ""))
    return web.Response(status=200)


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    enable = _enable_param(request)
    state_of(request).agent.set_node_maintenance(enable, request.query.get("reason", ""))
    return web.Response(status=200)


_TTL_STATUS = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}


@routes.put(r"/v1/agent/check/{verb:pass|warn|fail}/{cid:.+}")
async def check_ttl(request: web.Request) -> web.Response:
    status = _TTL_STATUS[request.match_info["verb"]]
    state_of(request).agent.update_ttl(request.match_info["cid"], status,
                request.query.get("note", ""))
    return web.Response(status=200)


@routes.put("/v1/agent/check/update/{cid:.+}")
async def check_update(request: web.Request) -> web.Response:
    body = conform_body(await body_json(request), decode.CHECK_UPDATE)
    status = body.get("Status", "")
    if status not in STATUSES:
        raise ConsulError(400, f"Invalid check status: '{status}'")
    state_of(request).agent.update_ttl(request.match_info["cid"], status,
                body.get("Output") or "")
    return web.Response(status=200)


@routes.put("/v1/agent/check/register")
async def check_register(request: web.Request) -> web.Response:
    body = conform_body(await body_json(request), decode.AGENT_CHECK)
    state_of(request).agent.register_check(body)
    return web.Response(status=200)


@routes.put("/v1/agent/check/deregister/{cid:.+}")
async def check_deregister(request: web.Request) -> web.Response:
    state_of(request).agent.deregister_check(request.match_info["cid"])
    return web.Response(status=200)
