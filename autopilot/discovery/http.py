"""The one request helper: how every part of autopilot (registration, watches, templates,
the election) sends an HTTP request to Consul.

``send`` is the only function that touches the wire. It runs in a worker thread of
`ConsulClient` on that thread's py-consul client (its ``requests`` session, TLS settings
and ACL token), with a per-call timeout, and hands back the status, the ``X-Consul-Index``
and the body: the caller decides what a status code means. ``request`` is its asyncio face.

The seam for a transport without threads (issue 12: one keep-alive connection, no thread
per call): replace ``request``'s body with an asyncio-streams client; every caller already
goes through it. Templates also call ``send`` from their render thread (Jinja2 is
synchronous), so that path keeps a synchronous transport.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import consul

    from autopilot.discovery.client import ConsulClient

Params = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Response:
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


def _data(body: Any) -> bytes:
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
    resp = http.session.request(method, http.uri(path, list(params)), data=_data(body),
                                headers=c.prepare_headers(), verify=http.verify,
                                cert=http.cert, timeout=timeout)
    return Response(resp.status_code, int(resp.headers.get("X-Consul-Index", "0") or 0),
                    resp.text, dict(resp.headers))


async def request(client: ConsulClient, method: str, path: str, *, params: Params = (),
                  body: Any = None, timeout: float = 5.0) -> Response:
    """``send`` without holding up the event loop; TimeoutError after ``timeout``."""
    return await client.run(
        lambda c: send(c, method, path, params=params, body=body, timeout=timeout),
        timeout=timeout)


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
