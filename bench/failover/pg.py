"""`python -m bench.failover --service postgres`: autopilot-run PostgreSQL against Patroni
3.0.2 + etcd, side by side, in one run, measured the way ../shared/anchors.md measured
Patroni (a client writing autocommit INSERTs, polling every member after an error).

  kill   SIGKILL of every process of the primary -> a write acknowledged elsewhere
         (failover) and the client's write gap; lost acknowledged commits;
  term   graceful hand-over: autopilot SIGTERM of the primary's supervisor; Patroni
         `patronictl switchover` (its graceful path): the write gap;
  loss   the primary's walsenders are stopped 0.3 s before the kill (new commits on the
         primary alone in async mode; waiting in sync mode), and, with `stall`, one
         replica's walreceiver is stopped 1 s before the kill: acknowledged commits lost;
  cpu    spurious failovers while bounded busy loops saturate the CPU (default settings).
Writes bench/results/failover-postgres.json.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autopilot.lab.cluster import Lab
from autopilot.lab.pgload import PgDriver, create_schema, missing_rows, stall
from autopilot.lab.workload import Member, Timeline, Workload
from bench.failover.patroni import PatroniCluster
from bench.failover.run import run_group, table
from bench.failover.sides import cpu_burners, stop_burners

RESULTS = Path(__file__).resolve().parent.parent / "results" / "failover-postgres.json"


class AutopilotPg:
    def __init__(self, profile: str, sync: bool) -> None:
        self.label = f"autopilot {profile}" + (" sync" if sync else " async")
        self.profile, self.sync = profile, sync
        self.lab = Lab(Path(tempfile.mkdtemp(prefix="ap-bench-pglab-")))
        self.up = False

    def prepare(self) -> None:
        if not self.up:
            self.lab.up(nodes=3, service="postgres", profile=self.profile, no_loss=self.sync,
                        net=None)
            self.up = True
        for node in self.lab.state.nodes.values():
            if not self.lab.tree(node):
                self.lab.start(node.n)
        self.lab.wait_converged(240)
        self._wait_lag0()

    def _wait_lag0(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            offs = {r["offset"] for r in self.lab.status(partitions=False)}
            if len(offs) == 1:
                return
            time.sleep(0.2)

    @property
    def members(self) -> list[Member]:
        return [Member(n.name, n.ip, n.port) for n in self.lab.state.nodes.values()]

    def primary(self) -> str:
        prim = self.lab.primaries()
        assert len(prim) == 1, prim
        return prim[0]

    def kill(self, name: str) -> None:
        self.lab.kill(name)

    def graceful(self, name: str) -> None:
        self.lab.stop(name)

    def stall(self, name: str, kind: str) -> None:
        stall(self.lab.tree(self.lab.node(name)), kind)

    def resume(self, name: str, kind: str) -> None:
        stall(self.lab.tree(self.lab.node(name)), kind, resume=True)

    def leader_epoch(self) -> int | None:
        leader = self.lab.leader()
        return leader.get("epoch") if leader else None

    def jitter(self) -> float:
        return 0.0

    def finish(self) -> None:
        """Between groups: nothing (the lab is reused); close() at the end."""

    def close(self) -> None:
        if self.up:
            self.lab.down()
            self.up = False


class PatroniPg:
    def __init__(self, ttl: int, loop_wait: int, retry: int, sync: bool) -> None:
        self.label = f"patroni ttl {ttl}/loop {loop_wait}" + (" sync" if sync else " async")
        self.args = (ttl, loop_wait, retry, sync)
        self.loop_wait = loop_wait
        self.cluster: PatroniCluster | None = None

    def prepare(self) -> None:
        if self.cluster is None:
            self.cluster = PatroniCluster(*self.args).start()
        for name in self.cluster.names:
            self.cluster.start_member(name)
        self.cluster.wait_healthy(240)

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
        self.cluster.kill(name)

    def graceful(self, name: str) -> None:
        assert self.cluster
        view = self.cluster.cluster_view().get("members", [])
        cand = next((m["name"] for m in view if m.get("role") == "sync_standby"), None) or \
            next(m["name"] for m in view if m["name"] != name)
        self.cluster.switchover(name, cand)

    def _procs(self, name: str, kind: str) -> list:
        assert self.cluster
        return self.cluster.procs(name)

    def stall(self, name: str, kind: str) -> None:
        stall(self._procs(name, kind), kind)

    def resume(self, name: str, kind: str) -> None:
        stall(self._procs(name, kind), kind, resume=True)

    def leader_epoch(self) -> int | None:
        assert self.cluster
        return self.cluster.leader_epoch()

    def jitter(self) -> float:
        return random.uniform(0, self.loop_wait)  # anchors: the kill at a random lease point

    def finish(self) -> None:
        """Between groups: nothing (the cluster is reused); close() at the end."""

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def trial(side: Any, fault: str, budget: float, stall_replica: bool = False) -> dict[str, Any]:
    side.prepare()
    members = side.members
    create_schema(members)
    tl = Timeline()
    old = side.primary()
    wl = Workload(members, tl, max_seconds=budget + 60, op_timeout=1.0,
                  driver=PgDriver()).start()
    stalled = None
    try:
        if not wl.wait_acks(50, 20):
            raise RuntimeError("the workload could not write before the fault")
        time.sleep(side.jitter())
        if stall_replica:
            stalled = next(m.name for m in members if m.name != old)
            side.stall(stalled, "walreceiver")
            time.sleep(1.0)
        if fault == "loss":
            side.stall(old, "walsender")
            time.sleep(0.3)
        t_fault = tl.add("fault", f"{fault} {old}")
        if fault == "term":
            side.graceful(old)
        else:
            side.kill(old)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if wl.failover(t_fault, old)["failover_s"] is not None:
                break
            if stalled and time.monotonic() > t_fault + 1.0 and side.primary_promoted(old):
                # a strict new primary waits for a standby: give the stalled one back
                side.resume(stalled, "walreceiver")
                stalled = None
            time.sleep(0.02)
        wl.wait_acks(20, 3, after=time.monotonic())
    finally:
        if stalled:
            side.resume(stalled, "walreceiver")
        wl.stop()
    figures: dict[str, Any] = dict(wl.failover(t_fault, old))
    acked = [a.seq for a in wl.results.acks]
    figures["acked"] = len(acked)
    new = wl.current if wl.current != old else None
    if new is None and fault == "term":
        new = wl.current
    target = next((m for m in members if m.name == new), None)
    figures["lost"] = len(missing_rows(target, acked)) if target else None
    figures["new_primary"] = new
    return figures


def _promoted_elsewhere(side: Any, old: str) -> bool:
    try:
        return side.primary() != old
    except (AssertionError, StopIteration, OSError):
        return False


AutopilotPg.primary_promoted = _promoted_elsewhere  # type: ignore[attr-defined]
PatroniPg.primary_promoted = _promoted_elsewhere  # type: ignore[attr-defined]


def trial_cpu(side: Any, seconds: float, burners: int) -> dict[str, Any]:
    side.prepare()
    create_schema(side.members)
    tl = Timeline()
    wl = Workload(side.members, tl, interval=0.02, max_seconds=seconds + 30,
                  driver=PgDriver()).start()
    changes = 0
    try:
        wl.wait_acks(20, 20)
        last = side.leader_epoch()
        procs = cpu_burners(burners, seconds)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.5)
                try:
                    epoch = side.leader_epoch()
                except Exception:  # noqa: BLE001 - a slow answer under load is no failover
                    continue
                if epoch is not None and epoch != last:
                    changes += 1
                    last = epoch
        finally:
            stop_burners(procs)
    finally:
        wl.stop()
    return {"spurious_failovers": changes, "acked": len(wl.results.acks),
            "failed_writes": wl.results.failures}


def main(args: Any, argv: list[str]) -> int:
    only = set(args.only.split(","))
    n = args.trials
    burners = 2 * (os.cpu_count() or 2) + 2
    results: dict[str, Any] = {}
    started = time.time()
    ap_fast, ap_fast_sync, ap_default = (AutopilotPg("fast", False), AutopilotPg("fast", True),
                                         AutopilotPg("default", False))
    pat_floor, pat_floor_sync, pat_default = (PatroniPg(5, 1, 2, False),
                                              PatroniPg(5, 1, 2, True),
                                              PatroniPg(30, 10, 10, False))
    # one side at a time (2 cores): each is brought up once and reused by its groups
    plan: list[tuple[Any, list[tuple[str, int, Any]]]] = [
        (ap_fast, [("kill", n, lambda s: trial(s, "kill", 30)),
                   ("loss async", n, lambda s: trial(s, "loss", 40)),
                   ("loss async +replica stall", n, lambda s: trial(s, "loss", 40, True))]),
        (ap_fast_sync, [("kill", n, lambda s: trial(s, "kill", 30)),
                        ("term", n, lambda s: trial(s, "term", 30)),
                        ("loss sync", n, lambda s: trial(s, "loss", 40)),
                        ("loss sync +replica stall", n,
                         lambda s: trial(s, "loss", 40, True))]),
        (ap_default, [("kill", n, lambda s: trial(s, "kill", 40)),
                      ("cpu", args.cpu_trials,
                       lambda s: trial_cpu(s, args.cpu_seconds, burners))]),
        (pat_floor, [("kill", n, lambda s: trial(s, "kill", 30)),
                     ("loss async", n, lambda s: trial(s, "loss", 40)),
                     ("loss async +replica stall", n, lambda s: trial(s, "loss", 40, True))]),
        (pat_floor_sync, [("kill", n, lambda s: trial(s, "kill", 30)),
                          ("term", n, lambda s: trial(s, "term", 30)),
                          ("loss sync", n, lambda s: trial(s, "loss", 40)),
                          ("loss sync +replica stall", n,
                           lambda s: trial(s, "loss", 40, True))]),
        (pat_default, [("kill", args.patroni_default_trials, lambda s: trial(s, "kill", 60)),
                       ("cpu", args.cpu_trials,
                        lambda s: trial_cpu(s, args.cpu_seconds, burners))]),
    ]
    wanted = [w.strip() for w in getattr(args, "pg_sides", "autopilot,patroni").split(",")]
    for side, groups in plan:
        if not any(side.label.startswith(w) for w in wanted):
            continue
        try:
            for label, count, fn in groups:
                if label.split(" ")[0] in only and count:
                    run_group(label, side, count, lambda s=side, f=fn: f(s), results)
        finally:
            side.close()
    out = {"meta": {"command": " ".join(["python -m bench.failover", *argv]),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": platform.platform(), "cpus": os.cpu_count(),
                    "seconds": round(time.time() - started, 1), "cpu_burners": burners},
           "results": results}
    out_path = args.out if args.out != Path(RESULTS).with_name("failover.json") else RESULTS
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2))
    print()
    print(table(results))
    print(f"\nwrote {out_path} ({out['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(1)
