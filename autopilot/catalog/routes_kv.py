"""/v1/kv/*: reads (single, recurse, keys, raw; all blocking-capable) and writes
(cas, flags, acquire/release locks, recursive/cas delete)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from autopilot.catalog.txn import TxnBadRequest, read_only, run_txn
from autopilot.catalog.web import (
    ConsulError,
    block,
    body_json,
    check_dc,
    json_response,
    reply,
    set_meta,
    state_of,
)

MAX_VALUE = 512 * 1024
KV_LIMIT_DOC = "https://www.consul.io/docs/agent/options#kv_max_value_size"
routes = web.RouteTableDef()


def _key(request: web.Request) -> str:
    return request.match_info["key"]


def _go_uint(request: web.Request, name: str) -> int | None:
    """Parse like Go's strconv.ParseUint; Consul answers a bad value with 500 and its text."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ConsulError(500, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    if int(raw) >= 2**64:
        raise ConsulError(500, f'strconv.ParseUint: parsing "{raw}": value out of range')
    return int(raw)


def _conflicting(request: web.Request, *names: str) -> None:
    if sum(n in request.query for n in names) > 1:
        encoded = urlencode(sorted(request.query.items()))
        raise ConsulError(400, f"Conflicting flags: {encoded}")


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.Response:
    check_dc(request)
    kv = state_of(request).kv
    key = _key(request)
    keys_mode, recurse = "keys" in request.query, "recurse" in request.query
    if not key and not (keys_mode or recurse):
        raise ConsulError(400, "Missing key name")
    if keys_mode or recurse:
        idx = await block(request, lambda: kv.prefix_index(key),
                          lambda t: t.startswith("kv:") and t[3:].startswith(key))
        sep = request.query.get("separator", request.query.get("seperator", ""))
        data: list = (kv.keys(key, sep) if keys_mode else [e.to_json() for e in kv.list(key)])
        if keys_mode and not key:
            return reply(request, data, idx)  # the root lists [] rather than 404
    else:
        idx = await block(request, lambda: kv.key_index(key), lambda t: t == f"kv:{key}")
        ent = kv.entries.get(key)
        data = [ent.to_json()] if ent else []
        if ent and "raw" in request.query:
            resp = web.Response(body=ent.value or b"", content_type="text/plain")
            resp.headers["X-Content-Type-Options"] = "nosniff"
            resp.headers["Content-Security-Policy"] = "sandbox"
            set_meta(resp, idx)
            return resp
    if not data:
        resp = web.Response(status=404)
        set_meta(resp, idx)
        return resp
    return reply(request, data, idx)


def _too_large(size: int) -> ConsulError:
    return ConsulError(413, f"Request body({size} bytes) too large, max size: {MAX_VALUE} "
                            f"bytes. See {KV_LIMIT_DOC}.")


async def _value(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_VALUE:
        raise _too_large(request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_VALUE:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    key = _key(request)
    if not key:
        raise ConsulError(400, "Missing key name")
    _conflicting(request, "cas", "acquire", "release")
    flags = _go_uint(request, "flags") or 0
    cas = _go_uint(request, "cas")
    value = await _value(request)
    acquire, release = request.query.get("acquire"), request.query.get("release")
    if acquire is not None:
        if not acquire:
            raise ConsulError(500, "missing session")
        if acquire not in st.sessions.sessions:
            raise ConsulError(500, f'raft apply failed: invalid session "{acquire}"')
        ok = st.kv.acquire(key, value, flags, acquire)
    elif release is not None:
        if not release:
            raise ConsulError(500, "missing session")
        ok = st.kv.release(key, value, flags, release)
    else:
        ok = st.kv.put(key, value, flags, cas)
    return reply(request, ok)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    key = _key(request)
    _conflicting(request, "recurse", "cas")
    recurse = "recurse" in request.query
    if not key and not recurse:
        raise ConsulError(400, "Missing key name")
    cas = _go_uint(request, "cas")
    return reply(request, st.kv.delete(key, recurse, cas))


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    check_dc(request)
    st = state_of(request)
    body = await body_json(request)
    if not isinstance(body, list):
        got = {dict: "object", str: "string", bool: "bool", int: "number",
               float: "number"}.get(type(body), "value")
        raise ConsulError(400, f"Failed to parse body: json: cannot unmarshal {got} into Go "
                               "value of type api.TxnOps")
    try:
        results, errors = run_txn(st, body)
    except OverflowError as exc:
        raise ConsulError(413, str(exc)) from None
    except TxnBadRequest as exc:
        raise ConsulError(400, str(exc)) from None
    data: dict = {"Results": None, "Errors": errors} if errors else {"Results": results,
                                                                     "Errors": None}
    resp = json_response(data, status=409 if errors else 200)
    if read_only(body):
        data.update(Index=st.kv.prefix_index(""), LastContact=0, KnownLeader=True,
                    ConsistencyLevel="", NotModified=False, Backend=0)
        resp = json_response(data, status=409 if errors else 200)
        resp.headers["X-Consul-KnownLeader"] = "true"
        resp.headers["X-Consul-LastContact"] = "0"
    return resp
