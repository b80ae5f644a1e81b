"""PostgreSQL when the catalog goes away or the supervisor dies (failure-scenarios.md S7,
S9, S14), against a real 3-node lab in sync mode, so that I2 (no acknowledged commit
lost) is checked, not only measured. A client writes and probes every node throughout;
I1-I5 are checked at the end by the harness.

- S7: the primary cut off from the catalog only (iptables in its namespace) stops
  acknowledging (it fences within its lease) before a replica is promoted.
- Consul electing a leader (the catalog's fault switch: 500 "No cluster leader" for 4 s,
  inside the election's noLeaderTolerance): the primary keeps serving, nobody else is
  promoted.
- S9: the catalog killed for a while: the primary fences, nobody is promoted without the
  catalog, the servers keep running; with the catalog back, one primary again.
- S14: only the primary's supervisor SIGKILLed (PostgreSQL keeps running): on restart the
  node resumes a role without a second primary.
"""

from __future__ import annotations

import time

import psutil
import pytest
import requests

from autopilot.lab.cluster import Lab
from autopilot.lab.postgres import role as pg_role
from tests.chaos.postgres_scenario import FAILOVER_BUDGET, UP_TIMEOUT, PgScenario, hooks_log
from tests.helpers import holds

pytestmark = pytest.mark.chaos


def sync_lab(lab_factory, **kw) -> Lab:
    lab = lab_factory(service="postgres", nodes=3, profile="default", no_loss=True, **kw)
    lab.wait_converged(UP_TIMEOUT)
    return lab


def acks_on(sc: PgScenario, node: str, after: float, before: float = float("inf")) -> int:
    return sum(1 for a in sc.workload.results.acks if a.node == node and after < a.t < before)


@pytest.mark.timeout(480)
def test_pg_primary_cut_off_from_the_catalog_fences_before_a_replica_is_promoted(
        lab_factory) -> None:
    """S7 + S11 (sync): the old primary's last acknowledged commit comes before the new
    primary's first; it rejoins as a replica after the heal; nothing acknowledged is lost."""
    lab = sync_lab(lab_factory)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    t = sc.fault(f"partition {old} from the catalog", lab.partition, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a new primary accepting writes")
    fo = sc.workload.failover(t, old)
    first_new = t + fo["failover_s"]
    late = acks_on(sc, old, first_new)
    assert late == 0, f"{old} acknowledged {late} commits after the new primary's first"
    assert "demoted" in hooks_log(lab, old), hooks_log(lab, old)
    sc.fault(f"heal {old}", lab.heal, old)
    figures = sc.finish(converge_timeout=120)
    assert figures["lost"] == 0, figures
    assert sc.workload.current != old
    print(f"FIGURE pg S7 partition failover {fo} {figures}")


@pytest.mark.timing
@pytest.mark.timeout(420)
def test_pg_catalog_without_leader_within_tolerance_primary_keeps_serving(
        lab_factory) -> None:
    """The catalog answers 500 "No cluster leader" for 4 s (noLeaderTolerance: 8 s): the
    primary keeps acknowledging commits all along, is not demoted, nobody else is promoted,
    and it holds the same lock session afterwards."""
    lab = sync_lab(lab_factory, env={"AUTOPILOT_CATALOG_FAULTS": "1"})
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    before = lab.leader()
    assert before is not None
    log_before = hooks_log(lab, old)
    t = sc.fault("catalog: no leader for 4 s", lambda: requests.put(
        f"{lab.catalog_url}/v1/autopilot-fault/no-leader?seconds=4", timeout=5
    ).raise_for_status())
    # commits in every 2 s of the window and after it, all on the primary
    for k in (0, 2, 4):
        sc.wait(lambda k=k: acks_on(sc, old, t + k, t + k + 2.0) > 0, 10,
                f"{old} acknowledging commits {k}-{k + 2} s into the window")
    holds(lambda: lab.primaries() == [old], 3, message=f"{old} the only primary")
    after = lab.leader()
    assert after is not None and after["session"] == before["session"], (before, after)
    assert hooks_log(lab, old)[len(log_before):].count("demoted") == 0, hooks_log(lab, old)
    assert all(a.node == old for a in sc.workload.results.acks if a.t > t)
    figures = sc.finish(converge_timeout=60)
    assert figures["lost"] == 0, figures


@pytest.mark.timeout(480)
def test_pg_catalog_down_no_promotion_then_one_primary(lab_factory) -> None:
    """S9 (sync): the catalog is SIGKILLed for ~10-20 s. The primary cannot renew and fences
    (no commit acknowledged past its lease); no node is promoted while the catalog is
    down; every PostgreSQL keeps running. With the catalog back (its state kept on disk),
    one primary again, everything acknowledged still there."""
    lab = sync_lab(lab_factory)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    sc.fault("SIGKILL the catalog", lab.kill, "catalog")
    # the lease (check TTL 3 s - interval 1 s, minus its margin) ends within 2 s of the
    # last renew; the fence makes every later commit wait; demote restarts it as a standby
    sc.wait(lambda: fenced_or_standby(lab, old), 30, f"{old} to stop taking writes")
    fenced_at = time.monotonic()
    sc.wait(lambda: all(r["role"] == "replica" for r in lab.status(partitions=False)), 30,
            "every server up as a standby")
    holds(lambda: all(r["role"] == "replica" for r in lab.status(partitions=False)), 8,
          message="no primary, every server up, while the catalog is down")
    late = acks_on(sc, old, fenced_at)
    assert late == 0, f"{late} commits acknowledged after {old} fenced"
    sc.fault("start the catalog again", lab.start, "catalog")
    sc.wait(lambda: sc.workload.failover(fenced_at, "-")["failover_s"], 60,
            "a primary accepting writes again")
    figures = sc.finish(converge_timeout=90)
    assert figures["lost"] == 0, figures
    print(f"FIGURE pg S9 catalog down: primary after {sc.workload.current} {figures}")


@pytest.mark.timeout(480)
def test_pg_supervisor_sigkill_alone_resumes_without_a_second_primary(lab_factory) -> None:
    """S14 (sync, no PID namespaces so PostgreSQL outlives its supervisor): SIGKILL of the
    primary's supervisor only; PostgreSQL keeps running (the run loop fences it as its
    parent goes); the supervisor restarts at once. At no moment do two nodes take writes,
    the node ends as the primary (it adopted its own server) or as a replica of a new one,
    and nothing acknowledged is lost."""
    lab = sync_lab(lab_factory, pidns=False)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    pm = lab.redis_pid(lab.node(old))
    assert pm is not None
    sc.killed.add(old)
    sc.fault(f"SIGKILL the supervisor of {old} only", lab.kill, old, "supervisor")
    assert psutil.pid_exists(pm), "PostgreSQL must outlive its supervisor"
    back = sc.fault(f"restart the supervisor of {old}", lab.start, old)
    sc.killed.discard(old)
    # the restarted supervisor has settled once a primary acknowledges commits again and
    # the node's supervisor reports a role (its check passes in the catalog)
    sc.wait(lambda: sc.workload.wait_acks(30, 0.1, after=back), 90,
            "commits acknowledged after the restart")
    figures = sc.finish(converge_timeout=120)
    assert figures["lost"] == 0, figures
    rows = {r["node"]: r["role"] for r in lab.status(partitions=False)}
    print(f"FIGURE pg S14: {old} is now {rows[old]}; primary {sc.workload.current}; "
          f"{figures}\n{hooks_log(lab, old)}")


@pytest.mark.timeout(480)
def test_pg_supervisor_sigkilled_and_gone_a_replica_takes_over_then_it_rejoins(
        lab_factory) -> None:
    """S14, the supervisor stays dead past its check TTL (sync, no PID namespaces): the
    PostgreSQL it leaves behind is fenced (its run loop sees its parent go) and stops
    acknowledging; a replica is promoted; no two nodes take writes at once. Restarted
    later, the supervisor adopts the server it finds and, having lost, rewinds it and
    follows the new primary."""
    lab = sync_lab(lab_factory, pidns=False)
    sc = PgScenario(lab, no_loss=True).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")
    pm = lab.redis_pid(lab.node(old))
    assert pm is not None
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL the supervisor of {old} only", lab.kill, old, "supervisor")
    n = lab.node(old)
    sc.wait(lambda: pg_role(n.ip, n.port)["role"] == "fenced", 5,
            f"the orphaned {old} fenced by its run loop")
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a replica promoted and accepting writes")
    fo = sc.workload.failover(t, old)
    assert psutil.pid_exists(pm), "PostgreSQL must outlive its supervisor"
    late = acks_on(sc, old, t + fo["failover_s"])
    assert late == 0, f"the orphaned {old} acknowledged {late} commits after the failover"
    assert "supervisor" in hooks_log(lab, old) and "fenced postmaster" in hooks_log(lab, old), \
        hooks_log(lab, old)
    back = sc.fault(f"restart the supervisor of {old}", lab.start, old)
    sc.killed.discard(old)
    sc.wait(lambda: sc.workload.wait_acks(30, 0.1, after=back), 90,
            "commits acknowledged after the restart")
    figures = sc.finish(converge_timeout=120)
    assert figures["lost"] == 0, figures
    assert sc.workload.current != old
    print(f"FIGURE pg S14 supervisor gone: failover {fo} {figures}\n{hooks_log(lab, old)}")


def fenced_or_standby(lab, name: str) -> bool:
    """No node is a primary and `name` answers as fenced or as a standby. Not "no primary"
    alone: a node that did not answer the lab's probe reads "down", and a primary slow to
    answer would then pass for fenced and set the moment after which it must acknowledge
    nothing too early."""
    roles = {r["node"]: r["role"] for r in lab.status(partitions=False)}
    return roles[name] in ("fenced", "replica") and "primary" not in roles.values()
