"""What the supervisor runs besides jobs: the control socket, telemetry, one registration
per service, one watch per `watches[]` entry, one election per job with `election`, one
template per `templates[]` entry.

The supervisor builds them from the config (``components(ctx)`` of each package, imported
only when the config uses it), starts them in that order, stops them in reverse, and on a
reload keeps a component whose ``key`` and ``cfg`` are both unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Component(Protocol):
    #: unique among the components of one config, e.g. "watch.db", "election.redis"
    key: str
    #: the part of the config it was built from; equal ``cfg`` and ``key``: kept on reload
    cfg: object
    #: True: a failure to start at startup stops autopilot (control socket, telemetry)
    fatal: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class HandsOver(Protocol):
    """A component with work to do before the jobs stop (the election hands over)."""

    async def before_shutdown(self) -> None: ...
