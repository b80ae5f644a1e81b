"""/v1/kv/*: reads (single, recurse, keys, raw; all blocking-capable) and writes
(cas, flags, acquire/release locks, recursive/cas delete)."""

from __future__ import annotations

from aiohttp import web

from autopilot.catalog.txn import TxnBadRequest, run_txn
from autopilot.catalog.web import (
    ConsulError,
    block,
    body_json,
    check_dc,
    flag,
    json_response,
    reply,
    set_meta,
    state_of,
    uint_param,
)

MAX_VALUE = 512 * 1024
routes = web.RouteTableDef()


def _key(request: web.Request) -> str:
    return request.match_info["key"]


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.Response:
    check_dc(request)
    kv = state_of(request).kv
    key = _key(request)
    keys_mode, recurse = flag(request, "keys"), flag(request, "recurse")
    if keys_mode or recurse:
        idx = await block(request, lambda: kv.prefix_index(key),
                          lambda t: t.startswith("kv:") and t[3:].startswith(key))
        data: list = (kv.keys(key, request.query.get("separator", "")) if keys_mode
                      else [e.to_json() for e in kv.list(key)])
    else:
        idx = await block(request, lambda: kv.key_index(key), lambda t: t == f"kv:{key}")
        ent = kv.entries.get(key)
        data = [ent.to_json()] if ent else []
        if ent and flag(request, "raw"):
            resp = web.Response(body=ent.value or b"", content_type="application/octet-stream")
            set_meta(resp, idx)
            return resp
    if not data:
        resp = web.Response(status=404)
        set_meta(resp, idx)
        return resp
    return reply(request, data, idx)


async def _value(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_VALUE:
        raise ConsulError(413, f"Value exceeds {MAX_VALUE} byte limit")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_VALUE:
            raise ConsulError(413, f"Value exceeds {MAX_VALUE} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    key = _key(request)
    if not key:
        raise ConsulError(400, "Missing key name")
    flags = uint_param(request, "flags", "Invalid flags") or 0
    cas = uint_param(request, "cas", "Invalid cas index")
    value = await _value(request)
    acquire, release = request.query.get("acquire"), request.query.get("release")
    if acquire is not None and release is not None:
        raise ConsulError(400, "Conflicting flags: acquire and release")
    if acquire is not None or release is not None:
        sid = acquire if acquire is not None else release
        if not sid:
            raise ConsulError(500, "missing session")
        if acquire is not None:
            if sid not in st.sessions.sessions:
                raise ConsulError(500, f'invalid session "{sid}"')
            ok = st.kv.acquire(key, value, flags, sid, cas)
        else:
            ok = st.kv.release(key, value, flags, sid, cas)
    else:
        ok = st.kv.put(key, value, flags, cas)
    return reply(request, ok)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    recurse = flag(request, "recurse")
    cas = uint_param(request, "cas", "Invalid cas index")
    key = _key(request)
    if not key and not recurse:
        raise ConsulError(400, "Missing key name")
    if recurse and cas is not None:
        raise ConsulError(400, "Conflicting flags: cas and recurse")
    return reply(request, st.kv.delete(key, recurse, cas))


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    body = await body_json(request)
    if not isinstance(body, list):
        raise ConsulError(400, "Failed to parse body: expected a JSON array of operations")
    try:
        results, errors = run_txn(st, body)
    except OverflowError as exc:
        raise ConsulError(413, str(exc)) from None
    except TxnBadRequest as exc:
        raise ConsulError(400, str(exc)) from None
    if errors:
        return json_response({"Results": None, "Errors": errors}, status=409,
                             index=st.store.index)
    return json_response({"Results": results, "Errors": None}, index=st.store.index)
