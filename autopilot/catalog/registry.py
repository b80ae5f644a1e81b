"""Nodes, services and checks: the catalog tables and their JSON shapes.

Pure data plus index bookkeeping; timers (TTL expiry, reaping) live in ``agent.py``. Topics
touched: ``table:nodes|services|checks``, ``svc:<service name>`` for anything that changes a
service's health/catalog entries, ``node:<name>`` for a node or its services,
``nodechecks:<name>`` for a node's checks, ``svcchecks:<service name>`` for a service's own
checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autopilot.catalog.store import Store

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
SERF_CHECK = "serfHealth"


@dataclass
class Node:
    name: str
    address: str
    id: str = ""
    datacenter: str = "dc1"
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Node": self.name, "Address": self.address,
                "Datacenter": self.datacenter, "TaggedAddresses": self.tagged_addresses or None,
                "Meta": self.meta or None, "CreateIndex": self.create_index,
                "ModifyIndex": self.modify_index}


@dataclass
class Service:
    node: str
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    enable_tag_override: bool = False
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    kind: str = ""
    tagged_addresses: dict[str, Any] | None = None
    socket_path: str = ""
    create_index: int = 0
    modify_index: int = 0

    def agent_json(self, datacenter: str) -> dict[str, Any]:
        """The agent's view (``/v1/agent/services``): Meta is ``{}`` when empty."""
        out: dict[str, Any] = {"ID": self.id, "Service": self.name, "Tags": list(self.tags),
                               "Meta": dict(self.meta), "Port": self.port,
                               "Address": self.address}
        if self.kind:
            out = {"Kind": self.kind, **out}
        if self.tagged_addresses:
            out["TaggedAddresses"] = self.tagged_addresses
        if self.socket_path:
            out["SocketPath"] = self.socket_path
        out.update({"Weights": dict(self.weights),
                    "EnableTagOverride": self.enable_tag_override, "Datacenter": datacenter})
        return out

    def health_json(self) -> dict[str, Any]:
        """Consul's NodeService as the catalog stores it (health entries, catalog/node):
        Kind, TaggedAddresses, Port and SocketPath are left out when empty and an empty
        Meta is null, as Go's ``omitempty`` and a nil map encode."""
        out: dict[str, Any] = {}
        if self.kind:
            out["Kind"] = self.kind
        out.update({"ID": self.id, "Service": self.name, "Tags": list(self.tags),
                    "Address": self.address})
        if self.tagged_addresses:
            out["TaggedAddresses"] = self.tagged_addresses
        out["Meta"] = dict(self.meta) or None
        if self.port:
            out["Port"] = self.port
        if self.socket_path:
            out["SocketPath"] = self.socket_path
        out.update({"Weights": dict(self.weights),
                    "EnableTagOverride": self.enable_tag_override, "Proxy": dict(PROXY),
                    "Connect": {}, "CreateIndex": self.create_index,
                    "ModifyIndex": self.modify_index})
        return out


#: an unset ConnectProxyConfig as Consul 1.10 encodes it (Mode has no omitempty)
PROXY: dict[str, Any] = {"Mode": "", "MeshGateway": {}, "Expose": {}}


@dataclass
class Check:
    node: str
    id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    #: the active check's settings (HTTP/TCP/...); Consul 1.10 shows them as ``{}``
    definition: dict[str, Any] = field(default_factory=dict)
    #: the ``Interval``/``Timeout`` strings: "" for checks defined inside a service,
    #: Go durations ("0s") for ones registered through /v1/agent/check/register
    interval: str = ""
    timeout: str = ""
    create_index: int = 0
    modify_index: int = 0
    # runtime, agent-only
    #: the agent's newer output not yet written to the catalog (output-only updates are
    #: deferred by ``check_update_interval``, as Consul's agent does); None when in sync
    local_output: str | None = None
    ttl_ns: int = 0
    deregister_after_ns: int = 0
    critical_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"Node": self.node, "CheckID": self.id, "Name": self.name,
                "Status": self.status, "Notes": self.notes, "Output": self.output,
                "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": list(self.service_tags), "Type": self.type,
                "Interval": self.interval, "Timeout": self.timeout, "ExposedPort": 0,
                "Definition": {}, "CreateIndex": self.create_index,
                "ModifyIndex": self.modify_index}

    def agent_json(self) -> dict[str, Any]:
        """The agent's own view: it shows an output the catalog has not received yet."""
        out = self.to_json()
        if self.local_output is not None:
            out["Output"] = self.local_output
        return out


CheckListener = Callable[[str, str], None]
#: what a reader can see of a service / check (indexes and timers aside)
_SERVICE_FIELDS = ("name", "tags", "address", "port", "meta", "enable_tag_override",
                   "weights", "kind", "tagged_addresses", "socket_path")
_CHECK_FIELDS = ("name", "status", "notes", "output", "service_id", "service_name",
                 "service_tags", "type", "definition", "interval", "timeout")


def _same(a: object, b: object, fields: tuple[str, ...]) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in fields)


class Registry:
    """The catalog's node/service/check tables."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.checks: dict[tuple[str, str], Check] = {}
        self.svc_index: dict[str, int] = {}
        self.node_index: dict[str, int] = {}  # node or its services changed
        self.node_check_index: dict[str, int] = {}  # one of the node's checks changed
        #: (node, service id or "") -> {check id: check}; health reads stay O(instances)
        self.by_owner: dict[tuple[str, str], dict[str, Check]] = {}
        #: service name -> {(node, id): service}
        self.by_name: dict[str, dict[tuple[str, str], Service]] = {}
        #: called with (node, check_id) when a check turns critical or disappears
        self.on_check_lost: list[CheckListener] = []

    # ---- index helpers -------------------------------------------------------------------
    def _touch_service(self, name: str) -> int:
        idx = self.store.touch(f"svc:{name}")
        self.svc_index[name] = idx
        return idx

    def _touch_service_checks(self, name: str) -> None:
        """Wake health/checks/:name readers: one of that service's own checks changed (a node
        check does not, as in Consul)."""
        self.store.touch(f"svcchecks:{name}")

    def _touch_node(self, node: str, table: str) -> int:
        """A change to a node or its services (what catalog/node/:node shows)."""
        idx = self.store.touch(table, f"node:{node}")
        self.node_index[node] = idx
        return idx

    def _touch_node_checks(self, node: str) -> int:
        """A change to one of a node's checks (what health/node/:node shows)."""
        idx = self.store.touch("table:checks", f"nodechecks:{node}")
        self.node_check_index[node] = idx
        return idx

    def node_services_index(self, node: str) -> int:
        return self.node_index.get(node) or self.store.table("nodes", "services")

    def node_checks_index(self, node: str) -> int:
        return self.node_check_index.get(node) or self.store.table("checks")

    def service_index(self, name: str) -> int:
        """Index for reads of one service (Consul's per-service index, else the tables)."""
        return self.svc_index.get(name) or self.store.table("nodes", "services")

    def _touch_node_services(self, node: str) -> None:
        for svc in self.services.values():
            if svc.node == node:
                self._touch_service(svc.name)

    # ---- nodes -----------------------------------------------------------------------------
    def ensure_node(self, name: str, address: str, *, node_id: str = "",
                    datacenter: str = "dc1", tagged: dict[str, str] | None = None,
                    meta: dict[str, str] | None = None) -> Node:
        node = self.nodes.get(name)
        changed = (node is None or node.address != address
                   or (tagged is not None and tagged != node.tagged_addresses)
                   or (meta is not None and meta != node.meta))
        if not changed:
            return node  # type: ignore[return-value]
        idx = self._touch_node(name, "table:nodes")
        if node is None:
            # nodes registered through /v1/catalog/register without an ID have none
            node = Node(name=name, address=address, id=node_id, datacenter=datacenter,
                        create_index=idx)
            self.nodes[name] = node
        node.address = address
        if tagged is not None:
            node.tagged_addresses = dict(tagged)
        if meta is not None:
            node.meta = dict(meta)
        node.modify_index = idx
        self._touch_node_services(name)
        return node

    def remove_node(self, name: str) -> bool:
        if name not in self.nodes:
            return False
        for key in [k for k in self.services if k[0] == name]:
            self.remove_service(*key)
        for key in [k for k in self.checks if k[0] == name]:
            self.remove_check(*key)
        del self.nodes[name]
        self._touch_node(name, "table:nodes")
        return True

    # ---- services --------------------------------------------------------------------------
    def put_service(self, svc: Service) -> Service:
        """Insert or replace; an identical re-registration moves no index (as Consul's
        catalog skips writing a service that did not change), so it wakes nobody."""
        key = (svc.node, svc.id)
        old = self.services.get(key)
        if old is not None and _same(old, svc, _SERVICE_FIELDS):
            svc.create_index, svc.modify_index = old.create_index, old.modify_index
            self._unname(old)
            self.load_service(svc)
            return svc
        idx = self._touch_node(svc.node, "table:services")
        svc.create_index = old.create_index if old else idx
        svc.modify_index = idx
        if old is not None:
            self._unname(old)
        self.load_service(svc)
        self._touch_service(svc.name)
        self._touch_service_checks(svc.name)
        if old and old.name != svc.name:
            self._touch_service(old.name)
            self._touch_service_checks(old.name)
        for chk in self.by_owner.get((svc.node, svc.id), {}).values():
            chk.service_name, chk.service_tags = svc.name, list(svc.tags)
        return svc

    def remove_service(self, node: str, sid: str) -> bool:
        svc = self.services.pop((node, sid), None)
        if svc is None:
            return False
        self._unname(svc)
        self._touch_node(node, "table:services")
        self._touch_service(svc.name)
        self._touch_service_checks(svc.name)
        for cid in list(self.by_owner.get((node, sid), {})):
            self.remove_check(node, cid)
        return True

    def load_service(self, svc: Service) -> None:
        """Store a service in the table and the by-name index (no index bump)."""
        self.services[(svc.node, svc.id)] = svc
        self.by_name.setdefault(svc.name, {})[(svc.node, svc.id)] = svc

    def _unname(self, svc: Service) -> None:
        named = self.by_name.get(svc.name)
        if named is not None:
            named.pop((svc.node, svc.id), None)
            if not named:
                del self.by_name[svc.name]

    def service_names(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for svc in self.services.values():
            tags = out.setdefault(svc.name, [])
            for t in svc.tags:
                if t not in tags:
                    tags.append(t)
        return out

    def instances(self, name: str) -> list[Service]:
        found = list(self.by_name.get(name, {}).values())
        return sorted(found, key=lambda s: (s.node, s.id))

    # ---- checks ----------------------------------------------------------------------------
    def put_check(self, chk: Check) -> Check:
        """Insert or replace; a check that reads the same keeps its indexes (no wake-up)."""
        key = (chk.node, chk.id)
        old = self.checks.get(key)
        if old is not None and _same(old, chk, _CHECK_FIELDS):
            chk.create_index, chk.modify_index = old.create_index, old.modify_index
            chk.critical_since = old.critical_since
            self._unindex(old)
            self.load_check(chk)
            return chk
        idx = self._touch_node_checks(chk.node)
        chk.create_index = old.create_index if old else idx
        chk.modify_index = idx
        if chk.status == CRITICAL and chk.critical_since is None:
            chk.critical_since = (old.critical_since if old and old.status == CRITICAL
                                  else time.monotonic())
        if old is not None:
            self._unindex(old)
        self.load_check(chk)
        self._touch_check_owner(chk)
        if old and old.service_id != chk.service_id:
            self._touch_check_owner(old)
        if chk.status == CRITICAL:
            self._lost(chk.node, chk.id)
        return chk

    def load_check(self, chk: Check) -> None:
        """Store a check in the table and its owner index (no index bump: restore uses it)."""
        self.checks[(chk.node, chk.id)] = chk
        self.by_owner.setdefault((chk.node, chk.service_id), {})[chk.id] = chk

    def _unindex(self, chk: Check) -> None:
        owned = self.by_owner.get((chk.node, chk.service_id))
        if owned is not None:
            owned.pop(chk.id, None)
            if not owned:
                del self.by_owner[(chk.node, chk.service_id)]

    def _touch_check_owner(self, chk: Check) -> None:
        if chk.service_id:
            svc = self.services.get((chk.node, chk.service_id))
            if svc:
                self._touch_service(svc.name)
                self._touch_service_checks(svc.name)
        else:
            self._touch_node_services(chk.node)

    def remove_check(self, node: str, cid: str) -> bool:
        chk = self.checks.pop((node, cid), None)
        if chk is None:
            return False
        self._unindex(chk)
        self._touch_node_checks(node)
        self._touch_check_owner(chk)
        self._lost(node, cid)
        return True

    def set_status(self, node: str, cid: str, status: str, output: str) -> bool:
        """Update a check; a no-op (no index bump) when nothing changes, as Consul's agent."""
        chk = self.checks.get((node, cid))
        if chk is None:
            return False
        if chk.status == status and chk.output == output:
            return False
        idx = self._touch_node_checks(node)
        if status == CRITICAL and chk.status != CRITICAL:
            chk.critical_since = time.monotonic()
        elif status != CRITICAL:
            chk.critical_since = None
        chk.status, chk.output, chk.modify_index = status, output, idx
        self._touch_check_owner(chk)
        if status == CRITICAL:
            self._lost(node, cid)
        return True

    def _lost(self, node: str, cid: str) -> None:
        for listener in self.on_check_lost:
            listener(node, cid)

    def node_checks(self, node: str) -> list[Check]:
        """The node's own checks, by CheckID (Consul's state store order)."""
        return sorted(self.by_owner.get((node, ""), {}).values(), key=lambda c: c.id)

    def service_checks(self, node: str, sid: str) -> list[Check]:
        """A service instance's checks, by CheckID."""
        if not sid:
            return []
        return sorted(self.by_owner.get((node, sid), {}).values(), key=lambda c: c.id)

    # ---- read shapes -----------------------------------------------------------------------
    def health_entries(self, name: str, tags: list[str], passing: bool) -> list[dict[str, Any]]:
        out = []
        for svc in self.instances(name):
            if any(t not in svc.tags for t in tags):
                continue
            node = self.nodes.get(svc.node)
            checks = self.node_checks(svc.node) + self.service_checks(svc.node, svc.id)
            if passing and any(c.status != PASSING for c in checks):
                continue
            out.append({"Node": node.to_json() if node else None,
                        "Service": svc.health_json(),
                        "Checks": [c.to_json() for c in checks]})
        return out

    def catalog_entry(self, svc: Service) -> dict[str, Any]:
        node = self.nodes.get(svc.node) or Node(name=svc.node, address="")
        return {"ID": node.id, "Node": node.name, "Address": node.address,
                "Datacenter": node.datacenter, "TaggedAddresses": node.tagged_addresses or None,
                "NodeMeta": node.meta or None, "ServiceKind": svc.kind, "ServiceID": svc.id,
                "ServiceName": svc.name, "ServiceTags": list(svc.tags),
                "ServiceAddress": svc.address,
                **({"ServiceTaggedAddresses": svc.tagged_addresses}
                   if svc.tagged_addresses else {}),
                "ServiceWeights": dict(svc.weights), "ServiceMeta": dict(svc.meta),
                "ServicePort": svc.port, "ServiceSocketPath": svc.socket_path,
                "ServiceEnableTagOverride": svc.enable_tag_override,
                "ServiceProxy": dict(PROXY), "ServiceConnect": {},
                "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index}
