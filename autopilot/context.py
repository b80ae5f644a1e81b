"""What every runtime component is handed: the config, the bus, the Consul client, shared state.

One object instead of a web of references, so a component's constructor says what it
uses: ``Component(ctx, job_config)``.

Two pieces of shared state sit beside the bus. Both are written *before* the event that
announces the change is published, so a subscriber of that event (a hook job, a
registration re-sending its tags) reads the new values: facts first, then the event.

``child_env`` — extra environment for every child started from now on (os.environ is the
base, putenv writes there):

- ``CONTAINERPILOT_<JOB>_IP`` / ``AUTOPILOT_<JOB>_IP``: discovery's registration, when it
  resolves the service address (before the first registration);
- ``AUTOPILOT_ROLE``, ``AUTOPILOT_LEADER_{ADDRESS,PORT,NODE,EPOCH}``: the election, on each
  role change, before ``elected`` / ``demoted`` / ``leaderChanged``;
- ``AUTOPILOT_SOCKET``: the control server, once its socket listens.

``facts`` — per job, what ``/v3/status``, ``/status`` and ``/ready`` show (`JobFacts`):
the registration writes ``registered``/``service_id``/``address``/``port`` after each
register or deregister; the election writes ``role``/``leader``/``epoch`` on each role
change, before its event. Readers (control, telemetry, the election reading the address it
advertises) only read.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopilot.config.model import Config
from autopilot.events import EventBus

if TYPE_CHECKING:
    # for the type checker only: a TypedDict class made at run time turns each of its
    # (string) annotations into a typing.ForwardRef, whose compile() is the process's first
    # and builds the interpreter's AST types: 0.2 MB of every supervisor (docs/performance.md)
    from typing import TypedDict

    from autopilot.discovery.client import ConsulClient

    class JobFacts(TypedDict, total=False):
        """One job's facts; every key is optional (discovery or the election may be off)."""

        # written by autopilot.discovery.registration
        registered: bool
        service_id: str
        address: str | None
        port: int
        # written by autopilot.election
        role: str | None  # "primary", "replica", or None before the first result
        leader: dict[str, Any] | None  # the lock holder's value (node, address, port, epoch)
        epoch: int | None  # the lock's fencing token while someone holds it


@dataclass
class Context:
    """What every component is handed."""

    config: Config
    bus: EventBus
    consul: ConsulClient | None = None  # None: discovery switched off
    hostname: str = field(default_factory=socket.gethostname)
    #: extra environment for every child started from now on (see the module docstring)
    child_env: dict[str, str] = field(default_factory=dict)
    #: per-job observable facts: {"job": JobFacts} (see the module docstring)
    facts: dict[str, JobFacts] = field(default_factory=dict)

    def service_id(self, name: str) -> str:
        return f"{name}-{self.hostname}"
