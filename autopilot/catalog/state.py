"""The whole catalog state: one Store (index + wake-ups) shared by its tables."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from autopilot.catalog.agent import Agent
from autopilot.catalog.kv import KV
from autopilot.catalog.registry import Registry
from autopilot.catalog.sessions import Sessions
from autopilot.catalog.store import Store


@dataclass
class Settings:
    node: str
    bind: str = "127.0.0.1"
    port: int = 8500
    datacenter: str = "dc1"
    token: str | None = None
    data_dir: str | None = None
    #: seconds before an output-only check update reaches the catalog (Consul's
    #: ``check_update_interval``, 5 min by default; 0 writes every output at once)
    check_update_interval: float = 300.0
    #: serve HTTPS with this certificate chain and key (PEM files)
    tls_cert: str | None = None
    tls_key: str | None = None
    #: with a CA file, clients must present a certificate it signed (verify_incoming)
    tls_ca: str | None = None


class State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store()
        #: user events fired on this agent (``/v1/event/*``), the last 256
        self.events: deque = deque(maxlen=256)
        self.registry = Registry(self.store)
        self.kv = KV(self.store)
        self.sessions = Sessions(self.store, self.registry, self.kv, settings.node)
        address = settings.bind if settings.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.agent = Agent(self.store, self.registry, settings.node, address,
                           settings.datacenter, settings.check_update_interval)

    @property
    def node(self) -> str:
        return self.settings.node

    def commit(self) -> None:
        self.store.commit()
