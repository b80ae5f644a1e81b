"""The Consul adapter: connection, service registration and heartbeats, watches.

The supervisor uses two functions:

- ``connect(cfg.consul)`` -> a ``ConsulClient`` (the ``CONSUL_*`` environment applied), or
  None when discovery is off;
- ``components(ctx)`` -> one ``ServiceRegistration`` per job with a port (plus the hidden
  ``containerpilot`` service when telemetry is on) and one ``Watch`` per ``watches[]`` entry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autopilot.config.model import HealthConfig, JobConfig
from autopilot.context import Context

if TYPE_CHECKING:
    from autopilot.discovery.client import ConsulClient, connect
    from autopilot.discovery.connection import resolve
    from autopilot.discovery.interfaces import InterfaceError, resolve_ip
    from autopilot.discovery.registration import ServiceRegistration
    from autopilot.discovery.watches import Watch

#: imported on first use, so that `autopilot.discovery.interfaces` (telemetry's address)
#: does not load py-consul and requests into a supervisor without discovery
_LAZY = {"ConsulClient": "client", "connect": "client", "resolve": "connection",
         "InterfaceError": "interfaces", "resolve_ip": "interfaces",
         "ServiceRegistration": "registration", "Watch": "watches"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ConsulClient", "InterfaceError", "ServiceRegistration", "Watch", "components", "connect",
    "resolve", "resolve_ip", "telemetry_job",
]

TELEMETRY_SERVICE = "containerpilot"
TELEMETRY_TTL = 15.0
TELEMETRY_HEARTBEAT = 5.0


def telemetry_job(ctx: Context) -> JobConfig | None:
    """ContainerPilot's hidden job for the telemetry endpoint, as a JobConfig."""
    tel = ctx.config.telemetry
    if tel is None:
        return None
    return JobConfig(name=TELEMETRY_SERVICE, port=tel.port, interfaces=list(tel.interfaces),
                     tags=list(tel.tags), initial_status="passing",
                     health=HealthConfig(interval=TELEMETRY_HEARTBEAT, ttl=TELEMETRY_TTL))


def components(ctx: Context) -> list[ServiceRegistration | Watch]:
    """Discovery's components for the current config (see the module docstring)."""
    from autopilot import __version__
    from autopilot.discovery.registration import ServiceRegistration
    from autopilot.discovery.watches import Watch

    out: list[ServiceRegistration | Watch] = [
        ServiceRegistration(ctx, job) for job in ctx.config.jobs if job.port]
    tel = telemetry_job(ctx)
    if tel is not None:
        out.append(ServiceRegistration(ctx, tel, heartbeat=TELEMETRY_HEARTBEAT,
                                       extra_tags=[str(__version__)]))
    out.extend(Watch(ctx, w) for w in ctx.config.watches)
    return out
