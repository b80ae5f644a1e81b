"""The one request helper: how every part of autopilot (registration, watches, templates,
the election) sends an HTTP request to Consul.

Both return the status, the ``X-Consul-Index`` and the body: the caller decides what a
status code means. ``send`` runs in a worker thread of `ConsulClient` on that thread's
py-consul client (its ``requests`` session, TLS settings and ACL token).

``request`` runs on the event loop over `transport.Transport` (asyncio streams, keep-alive
connections, no thread per call). ``send`` is the synchronous path for code that already
runs in a worker thread: the one-shot ``autopilot template`` command (the election's
``lock.py`` calls are coroutines over ``request``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import consul

Params = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Response:
    """A Consul answer: status, X-Consul-Index, body and headers."""

    code: int
    index: int  # X-Consul-Index (0 when absent: that agent cannot block)
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class ConsulRefused(Exception):
    """Consul answered with an error status."""

    def __init__(self, what: str, code: int, body: str) -> None:
        super().__init__(f"{what}: {code} {body.strip()[:200]}")
        self.code = code


def encode_body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def send(c: consul.Consul, method: str, path: str, *, params: Params = (), body: Any = None,
         timeout: float) -> Response:
    """One request on this thread's py-consul client. requests' own exceptions pass
    through: `ConsulClient` counts them as "unreachable"."""
    http = c.http
    resp = http.session.request(method, http.uri(path, list(params)), data=encode_body(body),
                                headers=c.prepare_headers(), verify=http.verify,
                                cert=http.cert, timeout=timeout)
    return Response(resp.status_code, int(resp.headers.get("X-Consul-Index", "0") or 0),
                    resp.text, dict(resp.headers))


class Requester(Protocol):
    """What ``request`` sends through: `client.ConsulClient` (reachability bookkeeping over
    `transport.Transport`)."""

    async def request(self, method: str, path: str, *, params: Params = (), body: Any = None,
                      timeout: float = 5.0) -> Response: ...


async def request(client: Requester, method: str, path: str, *, params: Params = (),
                  body: Any = None, timeout: float = 5.0) -> Response:
    """One request on the event loop (`transport.Transport`: asyncio streams, keep-alive,
    no thread); TimeoutError after ``timeout``."""
    return await client.request(method, path, params=params, body=body, timeout=timeout)


def blocking(index: int, wait: str | None) -> list[tuple[str, Any]]:
    """The parameters of a blocking query: none for index 0 (a plain read, at once)."""
    if not index:
        return []
    return [("index", index)] + ([("wait", wait)] if wait else [])


def is_lost(code: int, body: str) -> bool:
    """Does this answer to a check update mean "the agent no longer has the check"?

    Consul answers 404 on recent versions and 500 ("does not have associated TTL", "Unknown
    check") on older ones."""
    text = body.lower()
    return code == 404 or (code == 500 and any(
        s in text for s in ("does not have associated ttl", "unknown check", "not found",
                            "unknown service", "missing check")))
