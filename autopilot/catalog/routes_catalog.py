"""/v1/health/* and /v1/catalog/*: reads (all blocking-capable) and catalog writes."""

from __future__ import annotations

from aiohttp import web

from autopilot.catalog import decode
from autopilot.catalog.registry import CRITICAL, STATUSES, Check, Service
from autopilot.catalog.web import (
    ConsulError,
    block,
    body_json,
    catalog_reply,
    check_dc,
    conform_body,
    filtered,
    flag,
    reply,
    request_filter,
    state_of,
    topic_is,
)

routes = web.RouteTableDef()


def _tags(request: web.Request) -> list[str]:
    return request.query.getall("tag", [])


def _node_meta(request: web.Request) -> dict[str, str]:
    """``?node-meta=key:value`` (repeatable): only nodes whose Meta has all of them."""
    out = {}
    for item in request.query.getall("node-meta", []):
        key, _, value = item.partition(":")
        out[key] = value
    return out


def _meta_ok(meta: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    return all((meta or {}).get(k) == v for k, v in wanted.items())


@routes.get("/v1/health/service/{name}")
async def health_service(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    name = request.match_info["name"]
    idx = await block(request, lambda: st.registry.service_index(name),
                      topic_is(f"svc:{name}", "table:services", "table:nodes"))
    entries = st.registry.health_entries(name, _tags(request), flag(request, "passing"))
    if wanted := _node_meta(request):
        entries = [e for e in entries if _meta_ok((e["Node"] or {}).get("Meta"), wanted)]
    return catalog_reply(request, filtered(flt, entries), idx)


@routes.get("/v1/health/checks/{name}")
async def health_checks(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    name = request.match_info["name"]
    # Consul reports the checks table's index here but wakes a blocked query only for this
    # service's own checks: a node check moves the index without waking anyone
    idx = await block(request, lambda: st.store.table("checks"),
                      topic_is(f"svcchecks:{name}"))
    out = []
    for svc in st.registry.instances(name):
        out += [c.to_json() for c in st.registry.service_checks(svc.node, svc.id)]
    return catalog_reply(request, filtered(flt, out), idx)


@routes.get("/v1/health/state/{state}")
async def health_state(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    want = request.match_info["state"]  # an unknown state matches nothing (Consul 1.10)
    idx = await block(request, lambda: st.store.table("checks"), topic_is("table:checks"))
    out = [c.to_json() for c in sorted(st.registry.checks.values(),
                                       key=lambda c: (c.node, c.id))
           if want == "any" or c.status == want]
    return catalog_reply(request, filtered(flt, out), idx)


@routes.get("/v1/health/node/{node}")
async def health_node(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    node = request.match_info["node"]
    idx = await block(request, lambda: st.registry.node_checks_index(node),
                      topic_is(f"nodechecks:{node}", "table:checks"))
    out = [c.to_json() for c in sorted(st.registry.checks.values(), key=lambda c: c.id)
           if c.node == node]
    return catalog_reply(request, filtered(flt, out), idx)


@routes.get("/v1/catalog/datacenters")
async def catalog_datacenters(request: web.Request) -> web.Response:
    return reply(request, [state_of(request).settings.datacenter])


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    """Consul 1.10 ignores ``?filter`` here (not even parsed): every service is listed."""
    st = state_of(request)
    dc = request.query.get("dc")
    if dc and dc != st.settings.datacenter:
        # Consul's handler sets its (empty) query meta before the RPC fails
        resp = web.Response(status=500, text="No path to datacenter", content_type="text/plain")
        resp.headers.update({"X-Consul-Index": "1", "X-Consul-KnownLeader": "false",
                             "X-Consul-LastContact": "0"})
        return resp
    idx = await block(request, lambda: st.store.table("services"), topic_is("table:services"))
    if wanted := _node_meta(request):  # only services on matching nodes, as Consul
        names: dict[str, list[str]] = {}
        for svc in st.registry.services.values():
            node = st.registry.nodes.get(svc.node)
            if node is not None and _meta_ok(node.meta, wanted):
                tags = names.setdefault(svc.name, [])
                tags += [t for t in svc.tags if t not in tags]
        return catalog_reply(request, names, idx)
    return catalog_reply(request, st.registry.service_names(), idx)


@routes.get("/v1/catalog/service/{name}")
async def catalog_service(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    name = request.match_info["name"]
    idx = await block(request, lambda: st.registry.service_index(name),
                      topic_is(f"svc:{name}", "table:services", "table:nodes"))
    tags = _tags(request)
    wanted = _node_meta(request)
    out = [e for e in (st.registry.catalog_entry(s) for s in st.registry.instances(name)
                       if all(t in s.tags for t in tags))
           if _meta_ok(e["NodeMeta"], wanted)]
    return catalog_reply(request, filtered(flt, out), idx)


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    check_dc(request)
    flt = request_filter(request)
    st = state_of(request)
    idx = await block(request, lambda: st.store.table("nodes"), topic_is("table:nodes"))
    wanted = _node_meta(request)
    out = [n.to_json() for n in sorted(st.registry.nodes.values(), key=lambda n: n.name)
           if _meta_ok(n.meta, wanted)]
    return catalog_reply(request, filtered(flt, out), idx)


@routes.get("/v1/catalog/node/{node}")
async def catalog_node(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    name = request.match_info["node"]
    idx = await block(request, lambda: st.registry.node_services_index(name),
                      topic_is(f"node:{name}", "table:nodes", "table:services"))
    node = st.registry.nodes.get(name)
    if node is None:
        return catalog_reply(request, None, idx)
    services = {s.id: s.health_json() for s in st.registry.services.values()
                if s.node == name}
    return catalog_reply(request, {"Node": node.to_json(), "Services": services}, idx)


@routes.put("/v1/catalog/register")
async def catalog_register(request: web.Request) -> web.Response:
    """Consul 1.10 takes the datacenter from the body only (``?dc=`` is not read here)."""
    st = state_of(request)
    body = conform_body(await body_json(request), decode.CATALOG_REGISTER)
    if body.get("Datacenter") not in (None, "", st.settings.datacenter):
        raise ConsulError(500, "No path to datacenter")
    node, address = body.get("Node") or "", body.get("Address") or ""
    if not node:
        raise ConsulError(500, "Must provide node")
    if not address and not body.get("SkipNodeUpdate"):
        raise ConsulError(500, "Must provide address if SkipNodeUpdate is not set")
    sbody = body.get("Service")
    svc = None
    if sbody:
        name = sbody.get("Service") or sbody.get("Name") or ""
        if not name:
            raise ConsulError(500, "Must provide service name")
        svc = Service(node=node, id=sbody.get("ID") or name, name=name,
                      tags=list(sbody.get("Tags") or []), address=sbody.get("Address") or "",
                      port=sbody.get("Port") or 0, meta=dict(sbody.get("Meta") or {}),
                      enable_tag_override=bool(sbody.get("EnableTagOverride")),
                      kind=sbody.get("Kind") or "",
                      tagged_addresses=sbody.get("TaggedAddresses") or None,
                      socket_path=sbody.get("SocketPath") or "")
    checks = []
    for d in ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or []):
        cid = d.get("CheckID") or d.get("ID") or d.get("Name") or ""
        if not cid:
            raise ConsulError(500, "Missing check ID")
        status = d.get("Status") or CRITICAL
        if status not in STATUSES:
            raise ConsulError(500, f"Invalid check status: '{status}'")
        checks.append(Check(node=node, id=cid, name=d.get("Name") or cid, status=status,
                            notes=d.get("Notes") or "", output=d.get("Output") or "",
                            service_id=d.get("ServiceID") or ""))
    for chk in checks:  # Consul refuses the whole registration, node included
        if chk.service_id and chk.service_id != (svc.id if svc else None) \
                and (node, chk.service_id) not in st.registry.services:
            raise ConsulError(500, f'failed inserting check: Missing service registration '
                                   f'on node "{node}"')
    if not body.get("SkipNodeUpdate") or node not in st.registry.nodes:
        st.registry.ensure_node(node, address, node_id=body.get("ID") or "",
                                datacenter=st.settings.datacenter,
                                tagged=body.get("TaggedAddresses"), meta=body.get("NodeMeta"))
    if svc:
        st.registry.put_service(svc)
    for chk in checks:
        owner = st.registry.services.get((node, chk.service_id)) if chk.service_id else None
        if chk.service_id and owner is None:
            raise ConsulError(500, f"Unknown service ID '{chk.service_id}' for check "
                                   f"'{chk.id}'")
        if owner:
            chk.service_name, chk.service_tags = owner.name, list(owner.tags)
        st.registry.put_check(chk)
    return reply(request, True)


@routes.put("/v1/catalog/deregister")
async def catalog_deregister(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    body = conform_body(await body_json(request), decode.CATALOG_DEREGISTER)
    node = body.get("Node") or ""
    if not node:
        raise ConsulError(500, "Must provide node")
    if body.get("ServiceID"):
        if node == st.node:
            st.agent.deregister_service(body["ServiceID"])
        else:
            st.registry.remove_service(node, body["ServiceID"])
    elif body.get("CheckID"):
        if node == st.node:
            st.agent.deregister_check(body["CheckID"])
        else:
            st.registry.remove_check(node, body["CheckID"])
    else:
        for sess in st.sessions.list(node):
            st.sessions.destroy(sess.id)
        st.registry.remove_node(node)
        if node == st.node:  # the agent's anti-entropy would put its node back at once
            st.agent.bootstrap()
    return reply(request, True)
