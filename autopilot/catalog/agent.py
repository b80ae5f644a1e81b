"""The local agent: its node, service/check registration rules, TTL timers, active checks,
maintenance mode and the reaper for ``DeregisterCriticalServiceAfter``."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import re
import time
import uuid
from typing import Any

import aiohttp

from autopilot.catalog.durations import DurationError, format_duration, parse_duration
from autopilot.catalog.probes import run_probe
from autopilot.catalog.registry import (
    CRITICAL,
    PASSING,
    SERF_CHECK,
    STATUSES,
    Check,
    Registry,
    Service,
)
from autopilot.catalog.store import Store

CONSUL_SERVICE = "consul"
#: the Consul release whose answers the catalog reproduces
CONSUL_VERSION = "1.10.12"
OUTPUT_MAX = 4096
REAP_PERIOD = 0.5  # seconds; Consul reaps every ~30 s, we are faster on purpose
MAINT_NOTE = ("Maintenance mode is enabled for this service, but no reason was provided. "
              "This is a default message.")
NODE_MAINT_NOTE = ("Maintenance mode is enabled for this node, but no reason was provided. "
                   "This is a default message.")


class AgentError(Exception):
    """An error answered with ``status`` and ``message`` (Consul's own texts)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _duration(value: Any, field: str) -> int:
    """Durations in bodies are Go strings ("10s") or nanosecond numbers."""
    if value in (None, ""):
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise AgentError(400, f"Request decode failed: {exc}") from None


def clip_output(text: str) -> str:
    if len(text) <= OUTPUT_MAX:
        return text
    return f"{text[:OUTPUT_MAX]} ... (captured {OUTPUT_MAX} of {len(text)} bytes)"


_CANON = {"address": "Address", "port": "Port"}
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


def _meta_problem(meta: dict[str, str]) -> str | None:
    """Consul's metadata rules (validateMetadata): at most 64 pairs, keys of letters,
    digits, ``_`` and ``-`` up to 128 characters, no ``consul-`` prefix, values up to 512."""
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        why = ("Key cannot be blank" if key == "" else
               "Key contains invalid characters" if not _META_KEY.match(key) else
               "Key is too long (limit: 128 characters)" if len(key) > 128 else
               "Key prefix 'consul-' is reserved for internal use"
               if key.startswith("consul-") else
               "Value is too long (limit: 512 characters)" if len(value) > 512 else None)
        if why:
            return f"Couldn't load metadata pair ('{key}', '{value}'): {why}"
    return None


def _default_tagged(given: dict[str, Any] | None, address: str,
                    port: int) -> dict[str, Any] | None:
    """Consul's agent adds ``lan_ipv4``/``wan_ipv4`` (or ``_ipv6``) tagged addresses for a
    service whose Address is an IP, unless the registration sets them itself."""
    # the decoder takes {"address", "port"} in any case, as Consul's does
    tagged = {k: {_CANON.get(f.lower(), f): x for f, x in v.items()} if isinstance(v, dict)
              else v for k, v in (given or {}).items()}
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return tagged or None
    fam = "ipv4" if ip.version == 4 else "ipv6"
    for where in ("lan", "wan"):
        tagged.setdefault(f"{where}_{fam}", {"Address": address, "Port": port})
    return tagged


class Agent:
    def __init__(self, store: Store, registry: Registry, node: str, address: str,
                 datacenter: str, check_update_interval: float = 300.0) -> None:
        self.store, self.registry = store, registry
        self.node, self.address, self.datacenter = node, address, datacenter
        #: Consul's ``check_update_interval``: an update that changes only a check's
        #: output reaches the catalog this much later (0: at once)
        self.check_update_interval = check_update_interval
        self._deferred: dict[str, asyncio.TimerHandle] = {}
        self._ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Register this node with a passing serfHealth check, as a dev agent has."""
        addr = self.address
        self.registry.ensure_node(self.node, addr, datacenter=self.datacenter,
                                  node_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node)),
                                  tagged={"lan": addr, "lan_ipv4": addr, "wan": addr,
                                          "wan_ipv4": addr},
                                  meta={"consul-network-segment": ""})
        if (self.node, SERF_CHECK) not in self.registry.checks:
            self.registry.put_check(Check(node=self.node, id=SERF_CHECK,
                                          name="Serf Health Status", status=PASSING,
                                          output="Agent alive and reachable", type=""))
        if (self.node, CONSUL_SERVICE) not in self.registry.services:
            # a dev agent's server registers itself in the catalog (not as an agent service)
            self.registry.put_service(Service(
                node=self.node, id=CONSUL_SERVICE, name=CONSUL_SERVICE, port=8300,
                meta={"non_voter": "false", "raft_version": "3", "read_replica": "false",
                      "serf_protocol_current": "2", "serf_protocol_max": "5",
                      "serf_protocol_min": "1", "version": CONSUL_VERSION}))
        self.store.commit()

    def owns(self, svc: Service) -> bool:
        """Agent endpoints show the agent's own services, not the server's `consul` entry."""
        return svc.node == self.node and svc.id != CONSUL_SERVICE

    async def start(self) -> None:
        for chk in list(self.registry.checks.values()):
            if chk.node == self.node:
                self._activate(chk)
        self._reaper = asyncio.create_task(self._reap_loop())

    async def stop(self) -> None:
        tasks = [t for t in [self._reaper, *self._probes.values()] if t]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for h in [*self._ttl_timers.values(), *self._deferred.values()]:
            h.cancel()
        if self._http:
            await self._http.close()

    # ---- services --------------------------------------------------------------------------
    def register_service(self, body: dict[str, Any], replace_checks: bool = False) -> Service:
        name = body.get("Name") or body.get("Service") or ""
        if not name:
            raise AgentError(400, "Missing service name")
        sid = body.get("ID") or name
        port = body.get("Port") or 0
        problem = _meta_problem(body.get("Meta") or {})
        if problem:
            raise AgentError(400, f"Invalid Service Meta: {problem}")
        address = body.get("Address") or ""
        svc = Service(node=self.node, id=sid, name=name, tags=list(body.get("Tags") or []),
                      address=address, port=port,
                      meta=dict(body.get("Meta") or {}),
                      enable_tag_override=bool(body.get("EnableTagOverride")),
                      kind=body.get("Kind") or "",
                      tagged_addresses=_default_tagged(body.get("TaggedAddresses"),
                                                       address, port),
                      socket_path=body.get("SocketPath") or "")
        if body.get("Weights"):
            w = body["Weights"]
            svc.weights = {"Passing": int(w.get("Passing", 1) or 1),
                           "Warning": int(w.get("Warning", 1) or 0)}
        defs = ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or [])
        checks = []
        for n, d in enumerate(defs, start=1):
            default_id = f"service:{sid}:{n}" if len(defs) > 1 else f"service:{sid}"
            checks.append(self.build_check(d, default_id, svc, inline=True))
        self.registry.put_service(svc)
        keep = {c.id for c in checks}
        if replace_checks:
            for old in self.registry.service_checks(self.node, sid):
                if old.id not in keep:
                    self._forget(old.id)
        for chk in checks:
            self._install(chk)
        return svc

    def deregister_service(self, sid: str) -> bool:
        if sid == CONSUL_SERVICE:
            return False
        for chk in self.registry.service_checks(self.node, sid):
            self._deactivate(chk.id)
        return self.registry.remove_service(self.node, sid)

    def set_maintenance(self, sid: str, enable: bool, reason: str) -> None:
        svc = self.registry.services.get((self.node, sid))
        if svc is None or not self.owns(svc):
            raise AgentError(404, f'No service registered with ID "{sid}"')
        cid = f"_service_maintenance:{sid}"
        if enable:
            if (self.node, cid) not in self.registry.checks:
                self.registry.put_check(Check(
                    node=self.node, id=cid, name="Service Maintenance Mode", status=CRITICAL,
                    notes=reason or MAINT_NOTE, service_id=sid, service_name=svc.name,
                    service_tags=list(svc.tags), type="maintenance"))
        else:
            self.registry.remove_check(self.node, cid)

    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        cid = "_node_maintenance"
        if enable:
            if (self.node, cid) not in self.registry.checks:
                self.registry.put_check(Check(node=self.node, id=cid,
                                              name="Node Maintenance Mode", status=CRITICAL,
                                              notes=reason or NODE_MAINT_NOTE,
                                              type="maintenance"))
        else:
            self.registry.remove_check(self.node, cid)

    # ---- checks ----------------------------------------------------------------------------
    def build_check(self, d: dict[str, Any], default_id: str, svc: Service | None,
                    inline: bool = False) -> Check:
        """A check from its definition; ``inline`` ones (inside a service registration)
        show empty Interval/Timeout strings, as Consul's agent does."""
        cid = d.get("CheckID") or d.get("ID") or default_id
        if not cid:
            raise AgentError(400, "Missing check name")
        status = d.get("Status") or CRITICAL
        if status not in STATUSES:
            raise AgentError(400, "Status for checks must 'passing', 'warning', 'critical'")
        ttl = _duration(d.get("TTL"), "TTL")
        interval = _duration(d.get("Interval"), "Interval")
        timeout = _duration(d.get("Timeout"), "Timeout")
        dereg = _duration(d.get("DeregisterCriticalServiceAfter"),
                          "DeregisterCriticalServiceAfter")
        kind = ("http" if d.get("HTTP") else "tcp" if d.get("TCP") else
                "script" if d.get("Args") or d.get("ScriptArgs") else
                "alias" if d.get("AliasService") or d.get("AliasNode") else "ttl")
        if interval > 0 and ttl > 0:
            raise AgentError(400, "Invalid check: Interval and TTL cannot both be specified")
        if kind == "ttl" and ttl <= 0:
            raise AgentError(400, "Invalid check: TTL must be > 0 for TTL checks")
        if kind in ("http", "tcp", "script") and interval <= 0:
            raise AgentError(400, "Invalid check: Interval must be > 0 for Script, HTTP, "
                                  "H2PING, or TCP checks")
        if kind in ("script", "alias"):
            raise AgentError(400, f"Invalid check: {kind} checks are not supported by the "
                                  "embedded catalog")
        if svc is None and d.get("ServiceID"):
            svc = self.registry.services.get((self.node, d["ServiceID"]))
            if svc is None:
                raise AgentError(500, f"ServiceID \"{d['ServiceID']}\" does not exist")
        name = d.get("Name") or (f"Service '{svc.name}' check" if svc else cid)
        definition: dict[str, Any] = {
            "Interval": format_duration(interval), "Timeout": format_duration(timeout),
            "DeregisterCriticalServiceAfter": format_duration(dereg)}
        if kind == "http":
            definition.update(HTTP=d["HTTP"], Method=d.get("Method") or "GET",
                              Header=d.get("Header") or {}, Body=d.get("Body") or "",
                              TLSSkipVerify=bool(d.get("TLSSkipVerify")))
        if kind == "tcp":
            definition["TCP"] = d["TCP"]
        return Check(node=self.node, id=cid, name=name, status=status,
                     notes=d.get("Notes") or "", service_id=svc.id if svc else "",
                     service_name=svc.name if svc else "",
                     service_tags=list(svc.tags) if svc else [], type=kind,
                     definition=definition, ttl_ns=ttl, deregister_after_ns=dereg,
                     interval="" if inline else format_duration(interval),
                     timeout="" if inline else format_duration(timeout))

    def register_check(self, d: dict[str, Any]) -> Check:
        if not d.get("Name"):
            raise AgentError(400, "Missing check name")
        chk = self.build_check(d, d.get("Name", ""), None)
        self._install(chk)
        return chk

    def _install(self, chk: Check) -> None:
        old = self.registry.checks.get((self.node, chk.id))
        if old is not None:  # keep the known state of a re-registered check (no flapping)
            chk.status, chk.output = old.status, old.output
            chk.critical_since, chk.local_output = old.critical_since, old.local_output
        self._deactivate(chk.id)
        self.registry.put_check(chk)
        self._activate(chk)

    def deregister_check(self, cid: str) -> bool:
        self._deactivate(cid)
        return self.registry.remove_check(self.node, cid)

    def _forget(self, cid: str) -> None:
        self._deactivate(cid)
        self.registry.remove_check(self.node, cid)

    def update_ttl(self, cid: str, status: str, output: str) -> None:
        chk = self.registry.checks.get((self.node, cid))
        if chk is None or chk.type != "ttl":
            raise AgentError(500, f'CheckID "{cid}" does not have associated TTL')
        self._arm_ttl(chk)
        self.update_check(cid, status, clip_output(output))

    def update_check(self, cid: str, status: str, output: str) -> bool:
        """Apply a check result the way Consul's agent syncs it: a status change goes to
        the catalog at once (and wakes blocking queries); an output-only change is kept
        locally (``/v1/agent/checks`` shows it) and written ``check_update_interval``
        later, so frequent notes cost no index bump. True when the catalog changed."""
        chk = self.registry.checks.get((self.node, cid))
        if chk is None:
            return False
        if chk.status == status and self.check_update_interval > 0:
            current = chk.output if chk.local_output is None else chk.local_output
            if output == current:
                return False
            chk.local_output = None if output == chk.output else output
            if chk.local_output is not None and cid not in self._deferred:
                every = self.check_update_interval
                self._deferred[cid] = asyncio.get_running_loop().call_later(
                    every / 2 + random.uniform(0, every), self._sync_output, cid)
            return False
        chk.local_output = None
        return self.registry.set_status(self.node, cid, status, output)

    def _sync_output(self, cid: str) -> None:
        self._deferred.pop(cid, None)
        chk = self.registry.checks.get((self.node, cid))
        if chk is None or chk.local_output is None:
            return
        output, chk.local_output = chk.local_output, None
        if self.registry.set_status(self.node, cid, chk.status, output):
            self.store.commit()

    # ---- timers and probes -----------------------------------------------------------------
    def _activate(self, chk: Check) -> None:
        if chk.type == "ttl" and chk.ttl_ns > 0:
            self._arm_ttl(chk)
        elif chk.type in ("http", "tcp"):
            self._probes[chk.id] = asyncio.get_running_loop().create_task(self._probe(chk))

    def _deactivate(self, cid: str) -> None:
        timer = self._ttl_timers.pop(cid, None)
        if timer:
            timer.cancel()
        task = self._probes.pop(cid, None)
        if task:
            task.cancel()
        deferred = self._deferred.pop(cid, None)
        if deferred:
            deferred.cancel()

    def _arm_ttl(self, chk: Check) -> None:
        old = self._ttl_timers.pop(chk.id, None)
        if old:
            old.cancel()
        if chk.ttl_ns > 0:
            self._ttl_timers[chk.id] = asyncio.get_running_loop().call_later(
                chk.ttl_ns / 1e9, self._ttl_expired, chk.id)

    def _ttl_expired(self, cid: str) -> None:
        self._ttl_timers.pop(cid, None)
        chk = self.registry.checks.get((self.node, cid))
        if chk is None:
            return
        if self.update_check(cid, CRITICAL, "TTL expired"):
            self.store.commit()

    async def _probe(self, chk: Check) -> None:
        interval = parse_duration(chk.definition["Interval"]) / 1e9
        timeout = parse_duration(chk.definition["Timeout"]) / 1e9 or 10.0
        while True:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            status, output = await run_probe(self._http, chk, timeout)
            if (self.node, chk.id) not in self.registry.checks:
                return
            if self.update_check(chk.id, status, clip_output(output)):
                self.store.commit()
            await asyncio.sleep(interval)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_PERIOD)
            self.reap(time.monotonic())

    def reap(self, now: float) -> None:
        doomed = {c.service_id for c in self.registry.checks.values()
                  if c.node == self.node and c.service_id and c.deregister_after_ns > 0
                  and c.status == CRITICAL and c.critical_since is not None
                  and now - c.critical_since >= c.deregister_after_ns / 1e9}
        for sid in doomed:
            self.deregister_service(sid)
        if doomed:
            self.store.commit()
