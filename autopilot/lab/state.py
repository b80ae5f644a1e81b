"""The lab's state: one JSON file in the lab directory that every `autopilot lab` call reads.

Every CLI call is a short-lived process; what it needs to find the processes and namespaces
of the lab it acts on (PIDs with their start ticks, addresses, the lab network) lives here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autopilot.lab import netns

#: timing profiles: health interval, health TTL, lock-delay (session TTL is 10 s, Consul's min)
PROFILES: dict[str, dict[str, str]] = {
    # PostgreSQL (and any service without an override below): the leader's local lease
    # (autopilot.election lease_length, lease.default_margin) is (check TTL - interval) minus
    # a margin of a quarter of that: 1.05 s - 0.2625 s = 0.79 s, renewed every 0.35 s
    "fast": {"AP_HEALTH_INTERVAL": "200ms", "AP_HEALTH_TTL": "1250ms", "AP_HEALTH_TIMEOUT": "1s",
             "AP_LOCK_DELAY": "50ms", "AP_SESSION_TTL": "10s"},
    "default": {"AP_HEALTH_INTERVAL": "1s", "AP_HEALTH_TTL": "3s", "AP_HEALTH_TIMEOUT": "1s",
                "AP_LOCK_DELAY": "1s", "AP_SESSION_TTL": "10s"},
}

#: a service's own changes to a profile. Redis fast: a SIGKILLed primary is detected when its
#: check's TTL lapses, 0.6-0.8 s after the kill (an elected job heartbeats after every check,
#: every 200 ms); the lease is 0.6 s - 0.15 s = 0.45 s, renewed every 0.2 s. The trade: a
#: primary whose supervisor stalls for ~0.25 s, or whose check takes over 0.6 s, steps down
#: (docs/stateful.md, "Failover timing"). PostgreSQL's psql checks are too slow for that.
SERVICE_PROFILES: dict[str, dict[str, dict[str, str]]] = {
    "redis": {"fast": {"AP_HEALTH_TTL": "800ms"}},
}


def profile_env(service: str, profile: str) -> dict[str, str]:
    """The AP_* timing knobs of ``profile`` for ``service``."""
    return {**PROFILES[profile], **SERVICE_PROFILES.get(service, {}).get(profile, {})}


class LabError(RuntimeError):
    pass


@dataclass
class Node:
    n: int
    ip: str
    port: int
    dir: str
    ns: str | None = None
    pid: int | None = None  # the launcher: `ip netns exec … unshare …` or autopilot itself
    started: float | None = None  # the launcher's start (ticks since boot), against PID reuse

    @property
    def name(self) -> str:
        return f"node-{self.n}"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class State:
    mode: str = "netns"  # "netns" (root) or "loopback"
    pidns: bool = True
    service: str = "redis"
    profile: str = "fast"
    no_loss: bool = False
    net: int | None = None  # the lab network we created (netns mode), see netns.Net
    catalog: dict[str, Any] = field(default_factory=dict)  # pid, address
    nodes: dict[str, Node] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra env given at `up`

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        d = json.loads(text)
        d["nodes"] = {k: Node(**v) for k, v in d.get("nodes", {}).items()}
        return cls(**d)


def default_dir() -> Path:
    return Path(os.environ.get("AUTOPILOT_LAB_DIR", ".lab")).resolve()


class LabState:
    """The lab directory and its state file; the base the process, fault and observation
    parts of `Lab` build on."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.dir = Path(directory).resolve() if directory else default_dir()
        self.state_file = self.dir / "state.json"
        self.state = State()
        if self.state_file.exists():
            self.state = State.from_json(self.state_file.read_text())

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(self.state.to_json())
        tmp.replace(self.state_file)

    @property
    def running(self) -> bool:
        return self.state_file.exists() and bool(self.state.nodes)

    def node(self, name: str | int) -> Node:
        key = str(name).removeprefix("node-")
        if key not in self.state.nodes:
            known = ", ".join(f"node-{k}" for k in self.state.nodes) or "none (run `lab up`)"
            raise LabError(f"unknown node {name!r}; nodes: {known}")
        return self.state.nodes[key]

    @property
    def catalog_address(self) -> str:
        return str(self.state.catalog.get("address", ""))

    @property
    def catalog_url(self) -> str:
        return f"http://{self.catalog_address}"

    @property
    def net(self) -> netns.Net:
        if self.state.net is None:
            raise LabError("this lab has no network namespaces (loopback mode)")
        return netns.Net(self.state.net)
