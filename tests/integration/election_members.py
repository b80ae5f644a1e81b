"""In-process election members for the election tests: each Member is one node with its
own Context/bus (hostname = node name) and its job's Election, against the real catalog
process and with real hook processes; the job's health is published on the bus as the job
would. Used by test_election.py, test_election_safety.py and
test_election_consul_leader.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import requests

from autopilot import events as ev
from autopilot.config.model import Config, ConsulConfig, ElectionConfig, HealthConfig, JobConfig
from autopilot.context import Context
from autopilot.discovery.client import ConsulClient
from autopilot.election import Election, components
from tests.helpers import CatalogProcess, free_port, until


def hook(log: Path, name: str, extra: str = "") -> list[str]:
    """A hook that appends `name wallclock role epoch leader-node` to ``log``."""
    return ["sh", "-c", f'{extra}echo "{name} $(date +%s.%N) $AUTOPILOT_ROLE '
                        f'$AUTOPILOT_LEADER_EPOCH $AUTOPILOT_LEADER_NODE" >> {log}']


def hook_lines(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []


class Member:
    """One node: its own Context/bus (hostname = node name) and its job's Election."""

    crashed = False  # crash() was called: stop_all only closes its client

    def __init__(self, cat: CatalogProcess, node: str, tmp: Path, *, port: int,
                 check_ttl: str = "30s", address: str | None = None,
                 health: HealthConfig | None = None, **election: Any) -> None:
        self.cat = cat
        self.url = f"http://{address}" if address else cat.url  # how this node reaches it
        self.node = node
        self.hooks = tmp / f"hooks-{node}.log"
        election.setdefault("promote", hook(self.hooks, "promote"))
        election.setdefault("demote", hook(self.hooks, "demote"))
        election.setdefault("lock_delay", 1.0)
        election.setdefault("state_dir", str(tmp / "state"))  # per test: the epoch files
        self.job = JobConfig(name="db", port=port, health=health,
                             election=ElectionConfig(**election))
        cfg = Config(consul=ConsulConfig(address=address or cat.address), jobs=[self.job])
        self.ctx = Context(config=cfg, bus=ev.EventBus(), consul=ConsulClient(cfg.consul),
                           hostname=node)
        self.sid = self.ctx.service_id("db")
        self.check_ttl = check_ttl
        self.events: list[tuple[float, str]] = []
        self.ctx.bus.add_listener(lambda e: self.events.append((time.time(), str(e))))
        self.election: Election = components(self.ctx)[0]

    # the job's side, as ServiceRegistration and the health checker would do it
    def register(self) -> None:
        requests.put(self.url + "/v1/agent/service/register", timeout=5, json={
            "ID": self.sid, "Name": "db", "Port": self.job.port, "Address": "127.0.0.1",
            "Check": {"CheckID": f"service:{self.sid}", "TTL": self.check_ttl,
                      "Status": "passing"}}).raise_for_status()

    def check(self, status: str) -> None:
        requests.put(f"{self.url}/v1/agent/check/{status}/service:{self.sid}",
                     timeout=1).raise_for_status()

    async def heartbeat(self, interval: float) -> None:
        """TTL passes as the registration sends them on each healthy check."""
        while True:
            try:
                await asyncio.to_thread(self.check, "pass")
                self.healthy()
            except requests.RequestException:
                pass
            await asyncio.sleep(interval)

    def healthy(self) -> None:
        self.ctx.bus.publish(ev.Event(ev.HEALTHY, "db"))

    def unhealthy(self) -> None:
        self.check("fail")
        self.ctx.bus.publish(ev.Event(ev.UNHEALTHY, "db"))

    def codes(self, code: str) -> list[float]:
        return [t for t, e in self.events if e == f"{code}:db"]

    async def start(self) -> None:
        await self.election.start()

    async def stop(self) -> None:
        await self.election.stop()
        assert self.ctx.consul is not None
        self.ctx.consul.close()

    def crash(self) -> None:
        """What a SIGKILL of the supervisor leaves: nothing released, destroyed or renewed.

        The election is marked closed (its loops end at their next wake-up without another
        decision) and the node loses the catalog, as a dead process would: its client is
        closed and replaced by one whose address refuses every connection, so a renew or a
        release still due fails instead of reaching the catalog. The session and the lock
        stay as they were until their TTL or a restarted member acts on them."""
        self.election.closed = True
        assert self.ctx.consul is not None
        self.ctx.consul.close()
        self.ctx.consul = ConsulClient(ConsulConfig(address=f"127.0.0.1:{free_port()}"))
        self.crashed = True


async def stop_all(*members: Member | None) -> None:
    """The end of a scenario: stop every member given (None is skipped); one that crashed
    only has its client closed (a dead supervisor hands nothing over)."""
    for m in members:
        if m is None:
            continue
        if m.crashed:
            assert m.ctx.consul is not None
            m.ctx.consul.close()
        else:
            await m.stop()


def lock_value(entry: dict) -> dict:
    return json.loads(base64.b64decode(entry["Value"]))


def key_holder(cat: CatalogProcess) -> dict | None:
    r = requests.get(cat.url + "/v1/kv/service/db/leader", timeout=5)
    return r.json()[0] if r.status_code == 200 else None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


async def start_members(members: list[Member]) -> list[Member]:
    """Register and start every member, then make them all healthy at the same instant."""
    for m in members:
        m.register()
        await m.start()
    for m in members:  # the same instant: every member becomes healthy together
        m.healthy()
    return members


async def converged(members: list[Member], leader_timeout: float = 10.0,
                    replicas_timeout: float = 5.0) -> Member:
    """Wait for one leader and every other member a replica; the leader."""
    (lead,) = await until(lambda: leaders(members), leader_timeout, "a leader")
    await until(lambda: sum(m.ctx.facts["db"].get("role") == "replica" for m in members)
                == len(members) - 1, replicas_timeout, "the others replicas")
    return lead


async def cluster(cat: CatalogProcess, tmp: Path, n: int = 3, **election: Any) -> list[Member]:
    return await start_members(
        [Member(cat, f"n{i}", tmp, port=7000 + i, **election) for i in range(n)])


def leaders(members: list[Member]) -> list[Member]:
    return [m for m in members if m.election.primary]
