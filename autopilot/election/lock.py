"""Consul sessions and KV locks, as plain synchronous calls run in a worker thread.

py-consul's ``session.create`` cannot send ``NodeChecks``/``ServiceChecks``, and its
default 30 s request timeout is far longer than a lease; so these calls go through the
client's own ``requests`` session with a per-call timeout. Every function takes the
py-consul client ``c`` that ``ctx.consul.run`` hands to its worker thread.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import consul


class SessionGone(Exception):
    """The session no longer exists in the catalog (invalidated, destroyed, unknown)."""


class LockError(Exception):
    """The catalog answered with an error we cannot interpret as a yes/no."""


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

    def identity(self) -> tuple[str, int] | None:
        """What changes when the leadership changes hands (or is re-won)."""
        return (self.session, self.lock_index) if self.session else None


def _request(c: consul.Consul, method: str, path: str, *, params: list | None = None,
             body: Any = None, timeout: float = 5.0) -> tuple[int, dict, str]:
    http = c.http
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    resp = http.session.request(
        method, http.uri(path, params), data=data, headers=c.prepare_headers(),
        verify=http.verify, cert=http.cert, timeout=timeout,
    )
    return resp.status_code, dict(resp.headers), resp.text


def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def create_session(c: consul.Consul, *, name: str, check_id: str, ttl: float,
                   lock_delay: float, timeout: float) -> str:
    """A session bound to the service's own check only (not to the node's serfHealth)."""
    body = {
        "Name": name,
        "NodeChecks": [],
        "ServiceChecks": [{"ID": check_id}],
        "Behavior": "release",
        "TTL": f"{max(10, int(round(ttl)))}s",
        "LockDelay": _duration(lock_delay),
    }
    code, _, text = _request(c, "PUT", "/v1/session/create", body=body, timeout=timeout)
    if code != 200:
        raise LockError(f"session create: {code} {text.strip()}")
    return json.loads(text)["ID"]


def renew_session(c: consul.Consul, session: str, *, timeout: float) -> None:
    code, _, text = _request(c, "PUT", f"/v1/session/renew/{session}", timeout=timeout)
    if code == 404:
        raise SessionGone(session)
    if code != 200:
        raise LockError(f"session renew: {code} {text.strip()}")
    data = json.loads(text or "null")
    if not data:  # some servers answer 200 with an empty list for an unknown session
        raise SessionGone(session)


def session_info(c: consul.Consul, session: str, *, timeout: float) -> dict | None:
    code, _, text = _request(c, "GET", f"/v1/session/info/{session}", timeout=timeout)
    if code == 404:
        return None
    if code != 200:
        raise LockError(f"session info: {code} {text.strip()}")
    data = json.loads(text or "null")
    return data[0] if data else None


def session_exists(c: consul.Consul, session: str, *, timeout: float) -> bool:
    return session_info(c, session, timeout=timeout) is not None


def bound_to(info: dict, check_id: str) -> bool:
    """Is this session bound to exactly our service check (our earlier incarnation)?"""
    service_checks = [sc.get("ID") for sc in info.get("ServiceChecks") or []]
    return service_checks == [check_id] and not info.get("NodeChecks")


def destroy_session(c: consul.Consul, session: str, *, timeout: float) -> None:
    _request(c, "PUT", f"/v1/session/destroy/{session}", timeout=timeout)


def acquire(c: consul.Consul, key: str, session: str, value: dict, *, timeout: float) -> bool:
    code, _, text = _request(c, "PUT", f"/v1/kv/{key}", params=[("acquire", session)],
                             body=json.dumps(value, sort_keys=True).encode(), timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and "session" in text.lower():
        raise SessionGone(text.strip())
    raise LockError(f"acquire {key}: {code} {text.strip()}")


def release(c: consul.Consul, key: str, session: str, *, timeout: float) -> bool:
    code, _, text = _request(c, "PUT", f"/v1/kv/{key}", params=[("release", session)],
                             timeout=timeout)
    return code == 200 and text.strip() == "true"


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


def read_key(c: consul.Consul, key: str, *, index: int = 0, wait: str | None = None,
             timeout: float) -> tuple[int, Holder | None]:
    """Read (or with ``index``, block on) the election key; returns (X-Consul-Index, holder)."""
    params: list = []
    if index:
        params += [("index", index)] + ([("wait", wait)] if wait else [])
    code, headers, text = _request(c, "GET", f"/v1/kv/{key}", params=params, timeout=timeout)
    idx = int(headers.get("X-Consul-Index", "0") or 0)
    if code == 404:
        return idx, None
    if code != 200:
        raise LockError(f"read {key}: {code} {text.strip()}")
    entries = json.loads(text)
    return idx, parse_entry(entries[0] if entries else None)


def agent_service(c: consul.Consul, service_id: str, *, timeout: float) -> dict | None:
    """The service as this agent registered it (for our own Address/Port)."""
    code, _, text = _request(c, "GET", f"/v1/agent/service/{service_id}", timeout=timeout)
    if code != 200:
        return None
    return json.loads(text)
