"""Consul sessions and KV locks, as coroutines on the event loop.

Every call is one HTTP request through the discovery transport (`discovery.http.request`:
asyncio streams, keep-alive connections, no worker thread, no py-consul or requests), with
a per-call timeout far shorter than py-consul's 30 s default: a lease is counted in
seconds. Every function takes the supervisor's `ConsulClient` ``c`` (reachability is noted
there, as for registrations and watches); `call` is how the election runs one with an
overall deadline: ``await call(ctx.consul, lambda c: acquire(c, ...), timeout=2.0)``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from autopilot.discovery.http import Requester, request
from autopilot.durations import to_go

T = TypeVar("T")


class SessionGone(Exception):
    """The session no longer exists in the catalog (invalidated, destroyed, unknown)."""


class LockError(Exception):
    """The catalog answered with an error we cannot interpret as a yes/no."""


class NoLeader(LockError):
    """500 "No cluster leader": the Consul servers are electing a raft leader. Nothing can
    be written meanwhile (no session invalidated, no lock acquired by anybody)."""


def _raise_for(what: str, code: int, text: str) -> None:
    if code == 500 and "no cluster leader" in text.lower():
        raise NoLeader(f"{what}: {code} {text.strip()}")
    raise LockError(f"{what}: {code} {text.strip()}")


@dataclass(frozen=True)
class Holder:
    """Who holds the election key, as read from the catalog."""

    session: str | None  # None: the key exists but nobody holds it
    lock_index: int  # the fencing token (epoch): counts successful acquisitions
    modify_index: int
    info: dict[str, Any]  # the JSON value the holder wrote (node, address, port, service_id)

    @property
    def held(self) -> bool:
        return bool(self.session)

    @property
    def promoted(self) -> bool:
        """The holder's promote hook has succeeded. A holder still promoting writes
        ``promoted: false``; a value without the field (older writers) counts as promoted."""
        return self.info.get("promoted", True) is not False

    @property
    def epoch(self) -> int:
        """The fencing epoch the holder wrote (it survives a catalog wipe, unlike the
        LockIndex); a value without it (older writers) falls back to the LockIndex."""
        e = self.info.get("epoch")
        return e if isinstance(e, int) and not isinstance(e, bool) and e > 0 \
            else self.lock_index

    def identity(self) -> tuple[str, int, int] | None:
        """What changes when the leadership changes hands (or is re-won)."""
        return (self.session, self.epoch, self.lock_index) if self.session else None


async def call(c: Requester | None, fn: Callable[[Requester], Awaitable[T]], *,
               timeout: float) -> T:
    """``await fn(c)``, given up with TimeoutError after ``timeout`` (the request inside
    has its own, shorter one)."""
    assert c is not None, "the election needs consul"
    async with asyncio.timeout(timeout):
        return await fn(c)


async def _request(c: Requester, method: str, path: str, *, params: list | None = None,
                   body: Any = None, timeout: float = 5.0) -> tuple[int, dict, str]:
    """The shared request helper (discovery/http.py), as (status, headers, body)."""
    resp = await request(c, method, path, params=params or (), body=body, timeout=timeout)
    return resp.code, dict(resp.headers), resp.body


async def create_session(c: Requester, *, name: str, check_id: str, ttl: float,
                         lock_delay: float, timeout: float) -> str:
    """A session bound to the service's own check only (not to the node's serfHealth)."""
    body = {
        "Name": name,
        "NodeChecks": [],
        "ServiceChecks": [{"ID": check_id}],
        "Behavior": "release",
        "TTL": f"{max(10, int(round(ttl)))}s",
        "LockDelay": to_go(lock_delay),
    }
    code, _, text = await _request(c, "PUT", "/v1/session/create", body=body, timeout=timeout)
    if code != 200:
        _raise_for("session create", code, text)
    return json.loads(text)["ID"]


async def renew_session(c: Requester, session: str, *, timeout: float) -> None:
    code, _, text = await _request(c, "PUT", f"/v1/session/renew/{session}", timeout=timeout)
    if code == 404:
        raise SessionGone(session)
    if code != 200:
        _raise_for("session renew", code, text)
    data = json.loads(text or "null")
    if not data:  # some servers answer 200 with an empty list for an unknown session
        raise SessionGone(session)


async def session_info(c: Requester, session: str, *, timeout: float) -> dict | None:
    code, _, text = await _request(c, "GET", f"/v1/session/info/{session}", timeout=timeout)
    if code == 404:
        return None
    if code != 200:
        _raise_for("session info", code, text)
    data = json.loads(text or "null")
    return data[0] if data else None


async def session_exists(c: Requester, session: str, *, timeout: float) -> bool:
    return await session_info(c, session, timeout=timeout) is not None


def bound_to(info: dict, check_id: str) -> bool:
    """Is this session bound to exactly our service check (our earlier incarnation)?"""
    service_checks = [sc.get("ID") for sc in info.get("ServiceChecks") or []]
    return service_checks == [check_id] and not info.get("NodeChecks")


async def destroy_session(c: Requester, session: str, *, timeout: float) -> None:
    """Raises unless the catalog confirmed (200; an unknown session is destroyed too)."""
    code, _, text = await _request(c, "PUT", f"/v1/session/destroy/{session}", timeout=timeout)
    if code != 200:
        _raise_for("session destroy", code, text)


async def acquire(c: Requester, key: str, session: str, value: dict, *, timeout: float) -> bool:
    code, _, text = await _request(c, "PUT", f"/v1/kv/{key}", params=[("acquire", session)],
                                   body=json.dumps(value, sort_keys=True).encode(), timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and "session" in text.lower():
        raise SessionGone(text.strip())
    _raise_for(f"acquire {key}", code, text)
    return False


async def release(c: Requester, key: str, session: str, *, timeout: float,
                  value: dict | None = None) -> bool:
    """True: released; False: the key was not held by ``session`` (nothing to release).
    ``value``: the key's value from then on (a hand-over names the successor in it; without
    one the value is emptied, as Consul does for a release without a body).
    Raises when the catalog could not answer (e.g. no cluster leader): retry."""
    body = json.dumps(value, sort_keys=True).encode() if value is not None else None
    code, _, text = await _request(c, "PUT", f"/v1/kv/{key}", params=[("release", session)],
                                   body=body, timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and "session" in text.lower():
        return False  # the session is gone: so is its hold on the key
    _raise_for(f"release {key}", code, text)
    return False


async def put(c: Requester, key: str, value: dict, *, timeout: float,
              session: str | None = None) -> bool:
    """Write a JSON value; with ``session``, acquire the key with it (the key is freed
    when the session ends)."""
    params = [("acquire", session)] if session else None
    code, _, text = await _request(c, "PUT", f"/v1/kv/{key}", params=params,
                                   body=json.dumps(value, sort_keys=True).encode(), timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and session and "session" in text.lower():
        raise SessionGone(text.strip())
    _raise_for(f"write {key}", code, text)
    return False


async def delete(c: Requester, key: str, *, timeout: float) -> None:
    code, _, text = await _request(c, "DELETE", f"/v1/kv/{key}", timeout=timeout)
    if code != 200:
        _raise_for(f"delete {key}", code, text)


async def read_prefix(c: Requester, prefix: str, *, timeout: float) -> list[dict]:
    """Every entry under ``prefix``: [{Key, Session, value (decoded JSON dict)}]."""
    code, _, text = await _request(c, "GET", f"/v1/kv/{prefix}", params=[("recurse", "1")],
                                   timeout=timeout)
    if code == 404:
        return []
    if code != 200:
        _raise_for(f"read {prefix}", code, text)
    out = []
    for e in json.loads(text) or []:
        h = parse_entry(e)
        if h is not None:
            out.append({"Key": e.get("Key", ""), "Session": h.session, "value": h.info})
    return out


async def service_health(c: Requester, service: str, *, timeout: float) -> dict[str, str]:
    """service ID -> aggregated status (passing, warning, critical) of every instance."""
    code, _, text = await _request(c, "GET", f"/v1/health/service/{service}", timeout=timeout)
    if code != 200:
        _raise_for(f"health of {service}", code, text)
    out: dict[str, str] = {}
    order = {"passing": 0, "warning": 1, "critical": 2}
    for e in json.loads(text) or []:
        sid = (e.get("Service") or {}).get("ID", "")
        worst = "passing"
        for chk in e.get("Checks") or []:
            st = chk.get("Status", "critical")
            if order.get(st, 2) > order[worst]:
                worst = st if st in order else "critical"
        out[sid] = worst
    return out


def parse_entry(entry: dict | None) -> Holder | None:
    """A KV entry (as Consul returns it, Value base64) → Holder; None for a missing key."""
    if entry is None:
        return None
    raw = entry.get("Value")
    info: dict[str, Any] = {}
    if raw:
        try:
            decoded = json.loads(base64.b64decode(raw))
            if isinstance(decoded, dict):
                info = decoded
        except (ValueError, TypeError):
            info = {}
    return Holder(session=entry.get("Session") or None, lock_index=int(entry.get("LockIndex", 0)),
                  modify_index=int(entry.get("ModifyIndex", 0)), info=info)


async def read_key(c: Requester, key: str, *, index: int = 0, wait: str | None = None,
                   timeout: float) -> tuple[int, Holder | None]:
    """Read (or with ``index``, block on) the election key; returns (X-Consul-Index, holder)."""
    params: list = []
    if index:
        params += [("index", index)] + ([("wait", wait)] if wait else [])
    code, headers, text = await _request(c, "GET", f"/v1/kv/{key}", params=params, timeout=timeout)
    idx = int(headers.get("X-Consul-Index", "0") or 0)
    if code == 404:
        return idx, None
    if code != 200:
        _raise_for(f"read {key}", code, text)
    entries = json.loads(text)
    return idx, parse_entry(entries[0] if entries else None)


async def agent_answers(c: Requester, *, timeout: float) -> bool:
    """True when the agent answers a local request (any HTTP status): it is alive and
    reachable, whatever its servers are doing."""
    await _request(c, "GET", "/v1/agent/self", timeout=timeout)
    return True


async def agent_service(c: Requester, service_id: str, *, timeout: float) -> dict | None:
    """The service as this agent registered it (for our own Address/Port)."""
    code, _, text = await _request(c, "GET", f"/v1/agent/service/{service_id}", timeout=timeout)
    if code != 200:
        return None
    return json.loads(text)
