"""The agent endpoints a registration uses, with Consul's exact field names.

py-consul's ``agent.service.register`` lower-cases the body and has no ``check/update``
call, so these go through its HTTP layer (``c.http``, with ``c.prepare_headers()`` for the
ACL token) and hand back the raw response: the caller decides what a status code means.
"""

from __future__ import annotations

import json
from typing import Any

from autopilot.discovery.client import ConsulClient


class ConsulRefused(Exception):
    """Consul answered with an error status."""

    def __init__(self, what: str, code: int, body: str) -> None:
        super().__init__(f"{what}: {code} {body.strip()[:200]}")
        self.code = code


def _raw(response: Any) -> Any:
    """A py-consul callback that hands back the response itself (code, headers, body)."""
    return response


def is_lost(code: int, body: str) -> bool:
    """Does this answer to a check update mean "the agent no longer has the check"?

    Consul answers 404 on recent versions and 500 ("does not have associated TTL", "Unknown
    check") on older ones."""
    text = body.lower()
    return code == 404 or (code == 500 and any(
        s in text for s in ("does not have associated ttl", "unknown check", "not found",
                            "unknown service", "missing check")))


async def call(consul: ConsulClient, method: str, path: str, body: Any = None, *,
               timeout: float) -> Any:
    """``PUT``/``GET`` ``path`` on the agent; the py-consul response (``code``, ``body``)."""
    data = json.dumps(body) if body is not None else ""

    def run(c: Any) -> Any:
        kwargs: dict[str, Any] = {"headers": c.prepare_headers()}
        if method == "PUT":
            return c.http.put(_raw, path, data=data, **kwargs)
        return c.http.get(_raw, path, **kwargs)

    return await consul.run(run, timeout=timeout)


def seconds(value: float) -> str:
    """A Go duration string for a float of seconds: 10.0 -> "10s", 0.5 -> "0.5s"."""
    return f"{value:g}s"
