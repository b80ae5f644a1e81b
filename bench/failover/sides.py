"""The two systems under test, behind one small interface the trials drive.

`AutopilotSide` runs the lab (network and PID namespaces) and reuses it across trials: a
killed or stopped node is started again and rejoins as a replica before the next trial.
`SentinelSide` builds a fresh Sentinel cluster per trial on loopback.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import psutil

from autopilot.lab.cluster import Lab
from autopilot.lab.workload import Member
from bench.failover.sentinel import SentinelCluster


class AutopilotSide:
    def __init__(self, profile: str, no_loss: bool) -> None:
        self.label = f"autopilot {profile}" + (" no-loss" if no_loss else "")
        self.profile, self.no_loss = profile, no_loss
        self.lab = Lab(Path(tempfile.mkdtemp(prefix="ap-bench-lab-")))
        self.up = False

    def prepare(self) -> None:
        """Before a trial: every node running, one primary, all replicas in sync."""
        if not self.up:
            self.lab.up(nodes=3, profile=self.profile, no_loss=self.no_loss, net=None)
            self.up = True
        for node in self.lab.state.nodes.values():
            if not self.lab.tree(node):
                self.lab.start(node.n)
        self.lab.wait_converged(60)

    @property
    def members(self) -> list[Member]:
        return [Member(n.name, n.ip, n.port) for n in self.lab.state.nodes.values()]

    def primary(self) -> str:
        prim = self.lab.primaries()
        assert len(prim) == 1, prim
        return prim[0]

    def kill(self, name: str) -> None:
        self.lab.kill(name)

    def term(self, name: str) -> None:
        self.lab.stop(name)

    def redis_procs(self, names: list[str]) -> list[psutil.Process]:
        out = []
        for name in names:
            pid = self.lab.redis_pid(self.lab.node(name))
            if pid:
                out.append(psutil.Process(pid))
        return out

    def logs(self) -> dict[str, Path]:
        """Each node's autopilot log (the failover breakdown reads the election's steps)."""
        return {n.name: Path(n.dir) / "autopilot.log" for n in self.lab.state.nodes.values()}

    def leader_epoch(self) -> int | None:
        leader = self.lab.leader()
        return leader.get("epoch") if leader else None

    def finish(self) -> None:
        if self.up:
            self.lab.down()
            self.up = False


class SentinelSide:
    def __init__(self, down_after_ms: int, no_loss: bool) -> None:
        self.label = f"sentinel down-after {down_after_ms} ms" + (" no-loss" if no_loss else "")
        self.down_after_ms, self.no_loss = down_after_ms, no_loss
        self.cluster: SentinelCluster | None = None

    def prepare(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.cluster = SentinelCluster(self.down_after_ms, self.no_loss).start()

    @property
    def members(self) -> list[Member]:
        assert self.cluster
        return self.cluster.members

    def primary(self) -> str:
        assert self.cluster
        name = self.cluster.primary_name()
        assert name
        return name

    def kill(self, name: str) -> None:
        assert self.cluster
        self.cluster.signal(name, signal.SIGKILL)

    def term(self, name: str) -> None:
        assert self.cluster
        self.cluster.signal(name, signal.SIGTERM)

    def redis_procs(self, names: list[str]) -> list[psutil.Process]:
        assert self.cluster
        return [psutil.Process(self.cluster.redis_pid(n)) for n in names]

    def leader_epoch(self) -> int | None:
        assert self.cluster
        name = self.cluster.primary_name()
        return self.cluster.ports[[m.name for m in self.members].index(name)] if name else None

    def finish(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def cpu_burners(n: int, seconds: float) -> list[psutil.Popen]:
    """`n` busy loops that end on their own after `seconds` (bounded even if we crash)."""
    code = f"import time\nend=time.time()+{seconds}\nwhile time.time()<end: pass\n"
    return [psutil.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop_burners(procs: list[psutil.Popen]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
