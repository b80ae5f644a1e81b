"""PostgreSQL failure scenarios (../shared/failure-scenarios.md) against a real 3-node lab.

Same harness and invariants as the Redis scenarios: a client writes (autocommit INSERTs) and
probes every node throughout; I1-I5 are checked at the end and any violation fails with
the timeline. The faults that make a lost-write check mean something on PostgreSQL are
SIGSTOPs of its own processes: the primary's walsenders (new WAL stays on the primary
alone) or one replica's walreceiver (it stops acknowledging).

Budget: each test starts a cluster from nothing (initdb, two pg_basebackups), so they are
few and each checks several things.
"""

from __future__ import annotations

import time

import pytest
import requests

from autopilot.lab.pgload import stall
from tests.chaos.postgres_scenario import (
    FAILOVER_BUDGET,
    PgScenario,
    hooks_log,
    pg_lab,
)

pytestmark = pytest.mark.chaos

@pytest.mark.timing
@pytest.mark.timeout(420)
def test_pg_kill_primary_fails_over_and_old_primary_rewinds(lab_factory) -> None:
    """S1 + S4 + S11 (async): one primary from a simultaneous start; SIGKILL of the primary
    after it wrote WAL no replica received; a replica takes writes within the budget; the
    old primary comes back, is rewound (pg_rewind) and follows, never a second primary."""
    lab = pg_lab(lab_factory)
    sc = PgScenario(lab).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    sc.stall(old, "walsender", 2)
    sc.timeline.add("FAULT", f"walsenders of {old} stopped: new WAL on {old} alone")
    after = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=after), 10,
            "writes only the old primary holds")
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old} (supervisor and postgres)", lab.kill, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a new primary accepting writes")
    fo = sc.workload.failover(t, old)
    assert fo["failover_s"] is not None and fo["failover_s"] < FAILOVER_BUDGET, fo
    sc.fault(f"restart {old}", lab.start, old)
    sc.killed.discard(old)
    figures = sc.finish(converge_timeout=90)
    assert "pg_rewind" in hooks_log(lab, old), hooks_log(lab, old)
    # async mode: the writes only the old primary had are lost, and measured
    assert figures["lost"] >= 1, figures


@pytest.mark.timeout(420)
def test_pg_sync_stalled_replica_does_not_win(lab_factory) -> None:
    """Sync mode (ANY 1): one replica's replication is stalled before the primary dies. The
    other replica acknowledged every commit since; the stalled one must not be promoted,
    and no acknowledged commit is lost (I2)."""
    lab = pg_lab(lab_factory, no_loss=True)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    stalled_node = next(n.name for n in lab.state.nodes.values() if n.name != old)
    sc.stall(stalled_node, "walreceiver", 1)
    sc.timeline.add("FAULT", f"walreceiver of {stalled_node} stopped")
    after = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(30, 0.1, after=after), 10,
            "commits acknowledged by the other replica alone")
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    # the new primary requires a synchronous standby: it takes writes only once the stalled
    # replica streams again, so wait for the promotion, then lift the stall
    new = sc.wait(lambda: next((r["node"] for r in lab.status(partitions=False)
                                if r["role"] == "primary"), None),
                  FAILOVER_BUDGET + 20, "a promoted primary")
    assert new != stalled_node, sc.timeline.format()
    stall(lab.tree(lab.node(stalled_node)), "walreceiver", resume=True)
    sc.timeline.add("heal", f"walreceiver of {stalled_node} resumed")
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 30,
            "the new primary accepting writes")
    assert sc.workload.current == new, sc.timeline.format()
    figures = sc.finish(converge_timeout=60)
    assert figures["lost"] == 0, figures


@pytest.mark.timeout(420)
def test_pg_sync_frozen_primary_acknowledges_nothing(lab_factory) -> None:
    """Sync mode: the primary is frozen (SIGSTOP of its whole node) past the TTL, a replica
    is promoted, then the old primary resumes: it fences before any commit it still had
    in flight can be acknowledged (I1, I2), and rejoins as a replica (S11)."""
    lab = pg_lab(lab_factory, no_loss=True)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    replicas = sorted(n.name.replace("-", "_") for n in lab.state.nodes.values()
                      if n.name != old)
    sc.wait(lambda: sorted(sync_record(lab).get("sync", [])) == replicas, 20,
            "both replicas in the published sync set")
    t = sc.fault(f"SIGSTOP {old}", lab.pause, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 20,
            "a new primary accepting writes")
    resumed = sc.fault(f"SIGCONT {old}", lab.resume, old)
    sc.wait(lambda: lab.primaries() == [sc.workload.current], 30,
            "the old primary to stop being writable")
    # commits acknowledged while `lab pause` was still stopping the node's processes are
    # fine (and must survive: I2 below); none may be acknowledged once it runs again
    late = [a for a in sc.workload.results.acks if a.node == old and a.t > resumed]
    assert not late, f"{len(late)} commits acknowledged by the old primary after SIGCONT"
    # the new primary's first synchronous standby: the other replica (in the published
    # set, it answered, not ahead: on the new primary's history), never the old primary
    # (it may hold WAL no standby received). (A replica not in the set yet, e.g. within a
    # second of its first streaming, is not named: commits wait for the sync job then.)
    new = sc.workload.current
    (other,) = [n.name for n in lab.state.nodes.values() if n.name not in (old, new)]
    log = hooks_log(lab, new)
    assert f"synchronous: {other.replace('-', '_')}; re-pointed:" in log, log
    figures = sc.finish(converge_timeout=90)
    assert figures["lost"] == 0, figures


@pytest.mark.timing
@pytest.mark.timeout(420)
def test_pg_sigterm_hands_over_without_loss(lab_factory) -> None:
    """S5 (sync mode): SIGTERM of the primary's supervisor hands over to a replica; the
    write gap is short and no acknowledged commit is lost."""
    lab = pg_lab(lab_factory, no_loss=True)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    sc.killed.add(old)
    # the node's supervisor may take its whole stopTimeout (30 s in the example config:
    # demote hook, then the job's own 20 s) on a loaded machine; the lab's default wait is 20 s
    t = sc.fault(f"SIGTERM {old}", lab.stop, old, 45.0)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 20,
            "a new primary accepting writes")
    fo = sc.workload.failover(t, old)
    figures = sc.finish(converge_timeout=60)
    assert figures["lost"] == 0, figures
    print(f"FIGURE pg sigterm write gap {fo['write_gap_s']:.3f}s")
    # measured 6.0 s at load average 38 on 2 cores (the benchmark measures it properly);
    # what this bounds is a hand-over, not a wait for a TTL to lapse
    assert fo["write_gap_s"] is not None and fo["write_gap_s"] < 10.0, fo
    # the new primary's published sync set names its standbys, never itself: with itself
    # in it, the next failover's promote check would wait for the dead primary forever
    new = sc.primary().replace("-", "_")
    record: dict = {}

    def published() -> bool:
        r = requests.get(f"{lab.catalog_url}/v1/kv/service/postgres/sync?raw", timeout=2)
        record.update(r.json() if r.status_code == 200 else {})
        return record.get("leader") == new

    sc.wait(published, 10, "the new primary's sync record")
    assert new not in record["sync"] and record["sync"], record


def sync_record(lab) -> dict:
    """The published sync set (service/postgres/sync), {} while there is none."""
    try:
        r = requests.get(f"{lab.catalog_url}/v1/kv/service/postgres/sync?raw", timeout=2)
        return r.json() if r.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}
