"""What every runtime component is handed: the config, the bus, the Consul client, shared state.

One object instead of a web of references, so a component's constructor says what it
uses: ``Component(ctx, job_config)``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopilot.config.model import Config
from autopilot.events import EventBus

if TYPE_CHECKING:
    from autopilot.discovery.client import ConsulClient


@dataclass
class Context:
    config: Config
    bus: EventBus
    consul: ConsulClient | None = None  # None: discovery switched off
    hostname: str = field(default_factory=socket.gethostname)
    #: extra environment for every child started from now on (CONTAINERPILOT_<JOB>_IP,
    #: AUTOPILOT_ROLE, AUTOPILOT_LEADER_*); os.environ is the base (putenv writes there)
    child_env: dict[str, str] = field(default_factory=dict)
    #: per-job observable facts for /v3/status and /ready: {"job": {"role": ..., ...}}
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def service_id(self, name: str) -> str:
        return f"{name}-{self.hostname}"
