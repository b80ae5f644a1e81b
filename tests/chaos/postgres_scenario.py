"""What the PostgreSQL chaos tests share: the lab's timing, the scenario with the
PostgreSQL workload, a converged 3-node lab and a node's hook log."""

from __future__ import annotations

import threading

from autopilot.lab.cluster import Lab
from autopilot.lab.pgload import PgDriver, create_schema, server_processes, stall
from autopilot.lab.workload import Workload
from tests.chaos.harness import Scenario

# The lab's `default` timing (check every 1 s, TTL 3 s, lock-delay 1 s): a PostgreSQL check
# is a psql process, and on a 2-core machine at load 30+ the fast profile's 1.25 s TTL
# lapsed under healthy primaries (spurious failovers that are not what these tests test).
PROFILE = "default"
FAILOVER_BUDGET = 15.0  # s; TTL + lock-delay + candidacy + promote, measured 4-9 s loaded
UP_TIMEOUT = 240.0  # initdb and two clones on a loaded machine (measured 45-150 s)


class PgScenario(Scenario):
    """The Redis scenario's watcher and checks with the PostgreSQL workload."""

    def start(self) -> PgScenario:
        create_schema(self.members)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        self.workload = Workload(self.members, self.timeline, max_seconds=150,
                                 op_timeout=1.0, driver=PgDriver()).start()
        return self

    def stall(self, node: str, kind: str, count: int, timeout: float = 15.0) -> None:
        """SIGSTOP `node`'s `count` `kind` processes ("walsender", "walreceiver") once that
        many run. Right after convergence a replica's walreceiver may be restarting: the
        follow hook of the first election re-points primary_conninfo and PostgreSQL ends the
        walreceiver (seen: 1 walsender of 2, 0.3 s after both replicas streamed)."""
        def procs() -> list:
            return self.lab.tree(self.lab.node(node))

        def stalled() -> bool:
            if len(server_processes(procs(), kind)) != count:
                return False
            done = stall(procs(), kind)
            if done == count:
                return True
            stall(procs(), kind, resume=True)  # one came or went meanwhile: again
            return False

        self.wait(stalled, timeout, f"{count} {kind} process(es) on {node} to stall")


def pg_lab(lab_factory, **kw) -> Lab:
    lab = lab_factory(service="postgres", nodes=3, profile=PROFILE, **kw)
    lab.wait_converged(UP_TIMEOUT)
    return lab


def hooks_log(lab: Lab, name: str) -> str:
    try:
        with open(f"{lab.node(name).dir}/hooks.log") as f:
            return f.read()
    except OSError:
        return ""
