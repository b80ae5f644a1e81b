"""HTTP plumbing shared by the route modules: JSON answers, Consul's query meta headers,
query-parameter parsing and the blocking-query loop."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from autopilot.catalog.decode import DecodeError, conform, load_json
from autopilot.catalog.durations import DurationError, parse_duration
from autopilot.catalog.filter import FilterError, compile_filter
from autopilot.catalog.state import State
from autopilot.catalog.store import Predicate

STATE_KEY = web.AppKey("catalog_state", State)
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0


class ConsulError(Exception):
    """Answered with ``status`` and a plain-text ``message``, as Consul's HTTP layer does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def state_of(request: web.Request) -> State:
    return request.app[STATE_KEY]


def json_response(data: Any, status: int = 200, index: int | None = None,
                  pretty: bool = False, consistency: bool = False) -> web.Response:
    text = json.dumps(data, indent=4) if pretty else json.dumps(data, separators=(",", ":"))
    resp = web.Response(text=text, status=status, content_type="application/json")
    if index is not None:
        set_meta(resp, index, consistency)
    return resp


def reply(request: web.Request, data: Any, index: int | None = None) -> web.Response:
    return json_response(data, index=index, pretty=flag(request, "pretty"))


def catalog_reply(request: web.Request, data: Any, index: int) -> web.Response:
    """A catalog/health read: query meta plus X-Consul-Effective-Consistency."""
    return json_response(data, index=index, pretty=flag(request, "pretty"), consistency=True)


def set_meta(resp: web.StreamResponse, index: int, consistency: bool = False) -> None:
    """Consul's query meta headers; the catalog and health endpoints also report the
    consistency mode they answered with (KV and sessions do not, in Consul 1.10)."""
    resp.headers["X-Consul-Index"] = str(max(index, 1))
    resp.headers["X-Consul-KnownLeader"] = "true"
    resp.headers["X-Consul-LastContact"] = "0"
    if consistency:
        resp.headers["X-Consul-Effective-Consistency"] = "leader"


def flag(request: web.Request, name: str) -> bool:
    """A presence flag (``?recurse``); explicit false/0 values turn it off."""
    if name not in request.query:
        return False
    return request.query.get(name, "").lower() not in ("false", "0", "no")


def uint_param(request: web.Request, name: str, message: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConsulError(400, message) from None
    if not 0 <= value < 2**64:
        raise ConsulError(400, message)
    return value


async def body_json(request: web.Request) -> Any:
    try:
        return load_json(await request.read())
    except DecodeError as exc:
        raise ConsulError(400, f"Request decode failed: {exc}") from None


def conform_body(data: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Map a decoded body onto a schema; Consul's 400 on unknown fields or wrong types."""
    try:
        return conform(data, schema)
    except DecodeError as exc:
        raise ConsulError(400, f"Request decode failed: {exc}") from None


def wait_params(request: web.Request) -> tuple[int, float]:
    index = uint_param(request, "index", "Invalid index") or 0
    wait = DEFAULT_WAIT
    raw = request.query.get("wait")
    if raw:
        try:
            wait = parse_duration(raw) / 1e9
        except DurationError:
            raise ConsulError(400, "Invalid wait time") from None
        if wait <= 0:
            wait = DEFAULT_WAIT
    return index, min(wait, MAX_WAIT)


async def block(request: web.Request, index_fn: Callable[[], int], pred: Predicate) -> int:
    """Consul's blocking query: hold until ``index_fn()`` passes ``?index`` or ``?wait`` ends.

    Only writes whose topics match ``pred`` wake us; each wake re-reads the index, so a write
    that did not change this result goes back to waiting.
    """
    min_index, wait = wait_params(request)
    index = index_fn()
    if min_index == 0 or index > min_index:
        return index
    hub = state_of(request).store.hub
    deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
    while index <= min_index:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await hub.wait(pred, remaining)
        index = index_fn()
    return index


def topic_is(*names: str) -> Predicate:
    wanted = set(names)
    return lambda t: t in wanted


def check_dc(request: web.Request) -> None:
    dc = request.query.get("dc")
    if dc and dc != state_of(request).settings.datacenter:
        raise ConsulError(500, "No path to datacenter")


def request_filter(request: web.Request) -> Callable[[Any], bool] | None:
    """The compiled ``?filter=`` of this request (None without one); 400 when malformed."""
    text = request.query.get("filter")
    if not text:
        return None
    try:
        return compile_filter(text)
    except FilterError as exc:
        # Consul 1.10 answers a malformed filter with 500 (the RPC's error)
        raise ConsulError(500, f"Failed to create boolean expression evaluator: {exc}") from None


def filtered(pred: Callable[[Any], bool] | None, data: Any) -> Any:
    if pred is None:
        return data
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if pred(v)}
    return [v for v in data if pred(v)]
