"""Replication slots of departed members (docs/postgres.md, "Replication slots"), against a
real 3-node PostgreSQL 15 lab.

A physical slot keeps every WAL segment its member has not received: the slot of a member
that left for good would fill the primary's disk. The primary's `postgres-slots` job drops
it once the member has been gone from the catalog (deregistered, or registered with a
critical check) for `PG_SLOT_GRACE` seconds; a member that only restarts is back within the
grace and keeps its slot, so it resumes streaming where it stopped.
"""

from __future__ import annotations

import time

import pytest

from autopilot.lab.cluster import Lab
from autopilot.lab.pgwire import PgError, Postgres
from tests.chaos.postgres_scenario import hooks_log
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos

UP_TIMEOUT = 240.0  # initdb and two clones on a loaded machine (measured 45-150 s)
GRACE = 30  # s; PG_SLOT_GRACE for the test (the default is 1800)


def slots(lab: Lab, node: str) -> dict[str, bool] | None:
    """slot name -> active, on `node`'s server (None when it does not answer)."""
    n = lab.node(node)
    try:
        with Postgres(n.ip, n.port, timeout=2) as pg:
            rows = pg.query("select slot_name, active from pg_replication_slots "
                            "where slot_type = 'physical'")
    except (OSError, PgError):
        return None
    return {str(name): active == "t" for name, active in rows}


def caught_up(lab: Lab, node: str, slot: str, lsn: str) -> bool:
    """`slot` on `node` holds nothing before `lsn` any more (its member received it)."""
    n = lab.node(node)
    try:
        with Postgres(n.ip, n.port, timeout=2) as pg:
            return pg.value(f"select restart_lsn >= '{lsn}'::pg_lsn from pg_replication_slots "
                            f"where slot_name = '{slot}'") == "t"
    except (OSError, PgError):
        return False


def slot_name(node: str) -> str:
    return node.replace("-", "_")


@pytest.mark.timing
@pytest.mark.timeout(600)
def test_pg_departed_members_slots_dropped_restarting_members_slot_kept(lab_factory) -> None:
    """A replica restarted (gone from the catalog for a few seconds) keeps its slot the whole
    time and streams through it again; then one replica stopped for good (deregistered) and
    one SIGKILLed (its entry stays, critical): both slots are dropped, and not before the
    grace has passed. The safety net max_slot_wal_keep_size is in effect."""
    lab = lab_factory(service="postgres", nodes=3, profile="default",
                      env={"PG_SLOT_GRACE": str(GRACE), "PG_SLOT_INTERVAL": "1s",
                           "PG_MAX_SLOT_WAL_KEEP_SIZE": "256MB"})
    rows = lab.wait_converged(UP_TIMEOUT)
    prim = next(r["node"] for r in rows if r["role"] == "primary")
    a, b = sorted(r["node"] for r in rows if r["node"] != prim)
    sa, sb = slot_name(a), slot_name(b)
    wait_for(lambda: slots(lab, prim) == {sa: True, sb: True}, 30,
             message=f"both replicas streaming through their slots on {prim}")
    n = lab.node(prim)
    with Postgres(n.ip, n.port, timeout=2) as pg:
        assert pg.value("show max_slot_wal_keep_size") == "256MB"

    # a restart: the slot must exist at every look until the member, back, has received
    # through it what the primary wrote while it was away. Only the log from here on counts:
    # during the bootstrap the replicas are not members yet (cloning), and a bootstrap longer
    # than GRACE (loaded machine) lets the primary drop the slot it made for them, which
    # their clone then creates again
    log_before = len(hooks_log(lab, prim))
    lab.stop(a, 45.0)
    with Postgres(n.ip, n.port, timeout=5) as pg:
        pg.query("create table if not exists while_away (x int)")
        lsn = pg.value("select pg_current_wal_lsn()")
    lab.start(a)
    deadline = time.monotonic() + 90
    while True:
        now = slots(lab, prim)
        assert now is None or sa in now, f"{sa} dropped during a restart: {now}\n" \
            f"{hooks_log(lab, prim)}"
        if now and now.get(sa) and caught_up(lab, prim, sa, str(lsn)):
            break
        assert time.monotonic() < deadline, f"{a} did not stream again within 90s: {now}"
        time.sleep(0.2)
    lab.wait_converged(60)
    assert f"dropped replication slot {sa}" not in hooks_log(lab, prim)[log_before:]

    # gone for good: one stopped (deregistered), one SIGKILLed (critical in the catalog)
    gone_at = time.monotonic()
    lab.stop(a, 45.0)
    lab.kill(b)
    dropped: dict[str, float] = {}
    deadline = gone_at + GRACE + 60
    while len(dropped) < 2:
        now = slots(lab, prim)
        for s in (sa, sb):
            if now is not None and s not in now and s not in dropped:
                dropped[s] = time.monotonic() - gone_at
        assert time.monotonic() < deadline, \
            f"slots not dropped {GRACE + 60}s after their members left: {now}\n" \
            f"{hooks_log(lab, prim)}"
        time.sleep(0.2)
    log = hooks_log(lab, prim)
    assert f"dropped replication slot {sa}" in log and f"dropped replication slot {sb}" in log
    # the grace is counted in whole seconds (date +%s): at least GRACE - 1 s after they left
    for s, after in dropped.items():
        assert after >= GRACE - 1, f"{s} dropped {after:.1f}s after its member left (grace " \
                                   f"{GRACE}s)\n{log}"
    print(f"FIGURE pg slots dropped after {dropped} (grace {GRACE}s)")
    # the primary keeps working alone (async mode)
    with Postgres(n.ip, n.port, timeout=5) as pg:
        pg.query("create table if not exists slots_alive (x int)")
