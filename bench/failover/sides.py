"""The systems under test, behind the one interface bench/failover/harness.py drives.

`AutopilotSide` runs `autopilot lab` (network and PID namespaces, the embedded catalog) with
Redis or PostgreSQL and reuses it across trials: a killed or stopped node is started again
and rejoins as a replica before the next trial. `SentinelSide` builds a fresh Sentinel
cluster per trial on loopback. Patroni's side is in bench/failover/patroni.py.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from autopilot.lab.cluster import Lab, format_table
from autopilot.lab.pgload import PgDriver, create_schema, stall
from autopilot.lab.pgwire import PgError, Postgres
from autopilot.lab.state import profile_env
from autopilot.lab.workload import Member, hold_back_replication
from bench.failover.harness import copy_small_files
from bench.failover.sentinel import SentinelCluster


def _seconds(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))


def _cmdline(p: psutil.Process) -> str:
    """A process's pid, status and command line, or why not (it may have just exited)."""
    try:
        return f"{p.pid} {p.status()} {' '.join(p.cmdline())}"
    except psutil.Error as exc:
        return f"{p.pid} {type(exc).__name__}"


def pg_in_sync(primary: Member, replicas: int, sync: bool) -> bool:
    """`replicas` streaming replicas have replayed everything the primary wrote (and, in
    sync mode, one is a synchronous standby): the state a trial starts from."""
    try:
        with Postgres(primary.host, primary.port, timeout=2) as pg:
            row = pg.query(
                "select count(*) filter (where state = 'streaming' and "
                "replay_lsn = pg_current_wal_lsn()), count(*) filter (where sync_state in "
                "('sync', 'quorum')) from pg_stat_replication")[0]
    except (OSError, PgError, IndexError):
        return False
    return int(row[0] or 0) >= replicas and (not sync or int(row[1] or 0) >= 1)


def fresh_table(side: Any, timeout: float = 30) -> None:
    """Create the client's tables and empty `w`: the client numbers its writes from 1 in
    every trial, and a row left by an earlier trial would make the same INSERT fail
    (duplicate key) until the numbers pass it, so a reused cluster's trials would start in
    a run of failing writes (anchors.md keys each row by trial for the same reason)."""
    create_schema(side.members, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            prim = next(m for m in side.members if m.name == side.primary())
            with Postgres(prim.host, prim.port, timeout=5) as pg:
                pg.query("truncate w")
            return
        except (AssertionError, StopIteration, OSError, PgError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_pg_in_sync(side: Any, sync: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            prim = next(m for m in side.members if m.name == side.primary())
        except (AssertionError, StopIteration, OSError, RuntimeError):
            prim = None
        if prim is not None and pg_in_sync(prim, len(side.members) - 1, sync):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{side.label}: replicas not streaming and caught up within {timeout}s")


class AutopilotSide:
    def __init__(self, profile: str, durable: bool, service: str = "redis") -> None:
        mode = (" sync" if durable else " async") if service == "postgres" else \
            (" no-loss" if durable else "")
        self.label = f"autopilot {profile}{mode}"
        self.profile, self.durable, self.service = profile, durable, service
        self.no_loss = durable  # the Redis trials' name for it
        self.lab: Lab | None = None

    def prepare(self) -> None:
        """Before a trial: every node running, one primary, all replicas in sync."""
        if self.lab is None:
            self.lab = Lab(Path(tempfile.mkdtemp(prefix=f"ap-bench-{self.service}-")))
            self.lab.up(nodes=3, service=self.service, profile=self.profile,
                        no_loss=self.durable, net=None)
        for node in self.lab.state.nodes.values():
            if not self.lab.tree(node):
                self.lab.start(node.n)
        if self.service == "postgres":
            self.lab.wait_converged(240)
            fresh_table(self)
            wait_pg_in_sync(self, self.durable, 60)
        else:
            self.lab.wait_converged(60)

    @property
    def members(self) -> list[Member]:
        assert self.lab
        return [Member(n.name, n.ip, n.port) for n in self.lab.state.nodes.values()]

    def workload_options(self) -> dict[str, Any]:
        return {"op_timeout": 1.0, "driver": PgDriver()} if self.service == "postgres" else {}

    def primary(self) -> str:
        assert self.lab
        prim = self.lab.primaries()
        assert len(prim) == 1, prim
        return prim[0]

    def jitter(self) -> float:
        """U(0, the health-check interval): autopilot's equivalent of Patroni's loop_wait.
        The lock lives as long as the node's check, whose TTL the elected job renews after
        every check (200 ms fast, 1 s default), as Patroni's leader renews its key every
        loop_wait; a kill at U(0, interval) falls anywhere in that renewal cycle, so the
        detection (TTL minus the time since the last renewal) is sampled over its range."""
        return random.uniform(0, _seconds(profile_env(self.service, self.profile)
                                          ["AP_HEALTH_INTERVAL"]))

    def kill(self, name: str) -> None:
        assert self.lab
        self.lab.kill(name)

    def graceful(self, name: str) -> None:
        assert self.lab
        self.lab.stop(name, timeout=45)

    def _tree(self, name: str) -> list:
        assert self.lab
        return self.lab.tree(self.lab.node(name))

    def hold_back(self, name: str, seconds: float) -> None:
        """New writes on the primary alone: Redis loses PSYNC and its replica links;
        PostgreSQL's walsenders are SIGSTOPped."""
        if self.service == "postgres":
            stall(self._tree(name), "walsender")
            time.sleep(seconds)
        else:
            hold_back_replication(next(m for m in self.members if m.name == name), seconds)

    def stall(self, name: str) -> None:
        stall(self._tree(name), "walreceiver")

    def resume(self, name: str) -> None:
        stall(self._tree(name), "walreceiver", resume=True)

    def logs(self) -> dict[str, Path]:
        """Each node's autopilot log (the failover breakdown reads the election's steps)."""
        assert self.lab
        return {n.name: Path(n.dir) / "autopilot.log" for n in self.lab.state.nodes.values()}

    def leader_epoch(self) -> int | None:
        assert self.lab
        leader = self.lab.leader()
        return leader.get("epoch") if leader else None

    def keep(self, dest: Path) -> None:
        """A failed trial's evidence: the lab directory's logs and state (every node's
        autopilot and hook logs, PostgreSQL's log) and what the lab sees now (each node's
        role and catalog entry, the lock, each node's processes)."""
        assert self.lab
        copy_small_files(self.lab.dir, dest)
        rows = self.lab.status(partitions=False)
        procs = {n.name: [_cmdline(p) for p in self.lab.tree(n)]
                 for n in self.lab.state.nodes.values()}
        (dest / "bench-snapshot.txt").write_text(
            format_table(rows) + "\n\nleader: " + json.dumps(self.lab.leader())
            + "\ncatalog: " + json.dumps(self.lab.catalog_entries(), indent=1)
            + "\nprocesses: " + json.dumps(procs, indent=1) + "\n")

    def close(self) -> None:
        """Nothing left running, no directory left behind (idempotent)."""
        lab, self.lab = self.lab, None
        if lab is not None:
            try:
                lab.down()
            finally:
                shutil.rmtree(lab.dir, ignore_errors=True)


class SentinelSide:
    def __init__(self, down_after_ms: int, no_loss: bool) -> None:
        self.label = f"sentinel down-after {down_after_ms} ms" + (" no-loss" if no_loss else "")
        self.down_after_ms, self.no_loss = down_after_ms, no_loss
        self.durable = no_loss
        self.cluster: SentinelCluster | None = None

    def prepare(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.cluster = SentinelCluster(self.down_after_ms, self.no_loss).start()

    @property
    def members(self) -> list[Member]:
        assert self.cluster
        return self.cluster.members

    def workload_options(self) -> dict[str, Any]:
        return {}

    def primary(self) -> str:
        assert self.cluster
        name = self.cluster.primary_name()
        assert name
        return name

    def jitter(self) -> float:
        return 0.0  # a fresh cluster per trial: no cycle to be in phase with

    def kill(self, name: str) -> None:
        assert self.cluster
        self.cluster.signal(name, signal.SIGKILL)

    def graceful(self, name: str) -> None:
        """Sentinel has no hand-over: a SIGTERM of the primary (`docker stop`)."""
        assert self.cluster
        self.cluster.signal(name, signal.SIGTERM)

    def hold_back(self, name: str, seconds: float) -> None:
        hold_back_replication(next(m for m in self.members if m.name == name), seconds)

    def leader_epoch(self) -> int | None:
        assert self.cluster
        name = self.cluster.primary_name()
        return self.cluster.ports[[m.name for m in self.members].index(name)] if name else None

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
