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

from autopilot.discovery.http import send
from autopilot.durations import to_go


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


def _request(c: consul.Consul, method: str, path: str, *, params: list | None = None,
             body: Any = None, timeout: float = 5.0) -> tuple[int, dict, str]:
    """The shared request helper (discovery/http.py), as (status, headers, body)."""
    resp = send(c, method, path, params=params or (), body=body, timeout=timeout)
    return resp.code, dict(resp.headers), resp.body


def create_session(c: consul.Consul, *, name: str, check_id: str, ttl: float,
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
    code, _, text = _request(c, "PUT", "/v1/session/create", body=body, timeout=timeout)
    if code != 200:
        _raise_for("session create", code, text)
    return json.loads(text)["ID"]


def renew_session(c: consul.Consul, session: str, *, timeout: float) -> None:
    code, _, text = _request(c, "PUT", f"/v1/session/renew/{session}", timeout=timeout)
    if code == 404:
        raise SessionGone(session)
    if code != 200:
        _raise_for("session renew", code, text)
    data = json.loads(text or "null")
    if not data:  # some servers answer 200 with an empty list for an unknown session
        raise SessionGone(session)


def session_info(c: consul.Consul, session: str, *, timeout: float) -> dict | None:
    code, _, text = _request(c, "GET", f"/v1/session/info/{session}", timeout=timeout)
    if code == 404:
        return None
    if code != 200:
        _raise_for("session info", code, text)
    data = json.loads(text or "null")
    return data[0] if data else None


def session_exists(c: consul.Consul, session: str, *, timeout: float) -> bool:
    return session_info(c, session, timeout=timeout) is not None


def bound_to(info: dict, check_id: str) -> bool:
    """Is this session bound to exactly our service check (our earlier incarnation)?"""
    service_checks = [sc.get("ID") for sc in info.get("ServiceChecks") or []]
    return service_checks == [check_id] and not info.get("NodeChecks")


def destroy_session(c: consul.Consul, session: str, *, timeout: float) -> None:
    """Raises unless the catalog confirmed (200; an unknown session is destroyed too)."""
    code, _, text = _request(c, "PUT", f"/v1/session/destroy/{session}", timeout=timeout)
    if code != 200:
        _raise_for("session destroy", code, text)


def acquire(c: consul.Consul, key: str, session: str, value: dict, *, timeout: float) -> bool:
    code, _, text = _request(c, "PUT", f"/v1/kv/{key}", params=[("acquire", session)],
                             body=json.dumps(value, sort_keys=True).encode(), timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and "session" in text.lower():
        raise SessionGone(text.strip())
    _raise_for(f"acquire {key}", code, text)
    return False


def release(c: consul.Consul, key: str, session: str, *, timeout: float) -> bool:
    """True: released; False: the key was not held by ``session`` (nothing to release).
    Raises when the catalog could not answer (e.g. no cluster leader): retry."""
    code, _, text = _request(c, "PUT", f"/v1/kv/{key}", params=[("release", session)],
                             timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and "session" in text.lower():
        return False  # the session is gone: so is its hold on the key
    _raise_for(f"release {key}", code, text)
    return False


def put(c: consul.Consul, key: str, value: dict, *, timeout: float,
        session: str | None = None) -> bool:
    """Write a JSON value; with ``session``, acquire the key with it (the key is freed
    when the session ends)."""
    params = [("acquire", session)] if session else None
    code, _, text = _request(c, "PUT", f"/v1/kv/{key}", params=params,
                             body=json.dumps(value, sort_keys=True).encode(), timeout=timeout)
    if code == 200:
        return text.strip() == "true"
    if code == 500 and session and "session" in text.lower():
        raise SessionGone(text.strip())
    _raise_for(f"write {key}", code, text)
    return False


def delete(c: consul.Consul, key: str, *, timeout: float) -> None:
    code, _, text = _request(c, "DELETE", f"/v1/kv/{key}", timeout=timeout)
    if code != 200:
        _raise_for(f"delete {key}", code, text)


def read_prefix(c: consul.Consul, prefix: str, *, timeout: float) -> list[dict]:
    """Every entry under ``prefix``: [{Key, Session, value (decoded JSON dict)}]."""
    code, _, text = _request(c, "GET", f"/v1/kv/{prefix}", params=[("recurse", "1")],
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


def service_health(c: consul.Consul, service: str, *, timeout: float) -> dict[str, str]:
    """service ID -> aggregated status (passing, warning, critical) of every instance."""
    code, _, text = _request(c, "GET", f"/v1/health/service/{service}", timeout=timeout)
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
        _raise_for(f"read {key}", code, text)
    entries = json.loads(text)
    return idx, parse_entry(entries[0] if entries else None)


def agent_answers(c: consul.Consul, *, timeout: float) -> bool:
    """True when the agent answers a local request (any HTTP status): it is alive and
    reachable, whatever its servers are doing."""
    _request(c, "GET", "/v1/agent/self", timeout=timeout)
    return True


def agent_service(c: consul.Consul, service_id: str, *, timeout: float) -> dict | None:
    """The service as this agent registered it (for our own Address/Port)."""
    code, _, text = _request(c, "GET", f"/v1/agent/service/{service_id}", timeout=timeout)
    if code != 200:
        return None
    return json.loads(text)
