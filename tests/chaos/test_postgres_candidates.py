"""Who may become the primary, with real lag (docs/postgres.md): `nofailover`, a replica
ahead of the winner, and `maximumLagOnFailover`, against a real 3-node PostgreSQL 15 lab.

Lag is made for real: one replica's link to the primary is cut (iptables in its network
namespace: the WAL written from then on reaches the other replica only, and a reconnect
cannot fetch it); the best candidate's supervisor is frozen right after it posted its
candidacy (a candidate that is live and the best, but does not take the lock).
"""

from __future__ import annotations

import base64
import json
import signal
import time

import psutil
import pytest
import requests

from autopilot.lab.cluster import Lab
from autopilot.lab.pgwire import PgError, Postgres
from tests.chaos.postgres_scenario import FAILOVER_BUDGET, PgScenario, hooks_log, pg_lab
from tests.helpers import holds, wait_for

pytestmark = pytest.mark.chaos


def cut_link(lab: Lab, replica: str, primary: str) -> None:
    """Drop everything between `replica` and `primary` (rules in the replica's namespace,
    gone with it at teardown); the catalog and the clients still reach both."""
    ip = lab.node(primary).ip
    n = lab.node(replica).n
    lab.net.in_ns(n, "iptables", "-A", "INPUT", "-s", ip, "-j", "DROP")
    lab.net.in_ns(n, "iptables", "-A", "OUTPUT", "-d", ip, "-j", "DROP")


def signal_procs(procs: list[psutil.Process], sig: int) -> int:
    n = 0
    for p in procs:
        try:
            p.send_signal(sig)
            n += 1
        except psutil.Error:
            pass
    return n


def value(lab: Lab, node: str, sql: str) -> str | None:
    n = lab.node(node)
    try:
        with Postgres(n.ip, n.port, timeout=3) as pg:
            return pg.value(sql)
    except (OSError, PgError):
        return None


def restart_with(lab: Lab, node: str, **env: str) -> None:
    """Restart one node's supervisor with extra environment (the lab's env is shared by
    every node: it is set for this one start only)."""
    lab.stop(node, 45.0)
    saved = dict(lab.state.env)
    lab.state.env.update(env)
    try:
        lab.start(node)
    finally:
        lab.state.env.clear()
        lab.state.env.update(saved)
        lab.save()


def autopilot_log(lab: Lab, node: str) -> str:
    try:
        with open(f"{lab.node(node).dir}/autopilot.log", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.timeout(600)
def test_pg_nofailover_replica_ahead_of_the_winner_rewinds_and_never_promotes(
        lab_factory) -> None:
    """Async mode. A `nofailover` replica holds WAL the other replica never received when
    the primary is SIGKILLed: the other one is promoted (the nofailover one is not a
    candidate), and the nofailover one, ahead of the winner, does not diverge silently: it
    is rewound onto the new primary and follows it, without the rows only it had. Then it
    is the only node left: it stays a read-only replica, nobody is promoted; once the
    primary comes back it follows it again."""
    lab = pg_lab(lab_factory)
    old = next(r["node"] for r in lab.wait_converged(30) if r["role"] == "primary")
    nf, other = sorted(n.name for n in lab.state.nodes.values() if n.name != old)
    restart_with(lab, nf, PG_NOFAILOVER="1")
    lab.wait_converged(120)
    wait_for(lambda: "nofailover" in lab.catalog_entries().get(
        lab.node(nf).address, {}).get("tags", []), 30, message=f"{nf} tagged nofailover")
    sc = PgScenario(lab).start()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")

    # WAL that `other` never receives, `nf` does
    cut_link(lab, other, old)
    sc.timeline.add("FAULT", f"link {old} - {other} cut")
    after = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(30, 0.1, after=after), 10,
            "writes the other replica does not receive")
    top = max(a.seq for a in sc.workload.results.acks if a.node == old)
    sc.wait(lambda: value(lab, nf, f"select count(*) from w where seq = {top}") == "1", 10,
            f"the nofailover replica {nf} holding seq {top}")
    assert value(lab, other, f"select count(*) from w where seq = {top}") == "0"

    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], FAILOVER_BUDGET + 10,
            "a new primary accepting writes")
    assert sc.workload.current == other, sc.timeline.format()
    rows = sc.lab.wait_converged(90)  # nf follows other: only after a rewind
    assert next(r for r in rows if r["node"] == nf)["role"] == "replica"
    log = hooks_log(lab, nf)
    assert "rewinding" in log and "pg_rewind from" in log, log
    assert "promoted" not in log, log
    assert value(lab, nf, f"select count(*) from w where seq = {top}") == "0", \
        "the rows only the nofailover replica had must be gone after the rewind"

    # the nofailover node alone: never promoted, read-only
    sc.killed.add(other)
    sc.fault(f"SIGKILL {other} (the nofailover node is alone)", lab.kill, other)
    holds(lambda: lab.primaries() == [] and value(lab, nf, "select pg_is_in_recovery()") == "t",
          20, message=f"{nf} staying a read-only replica")
    assert lab.leader() is None, lab.leader()
    assert "promoted" not in hooks_log(lab, nf)
    # the primary comes back: it wins (it has the data) and nf follows it again
    sc.fault(f"restart {other}", lab.start, other)
    sc.killed.discard(other)
    figures = sc.finish(converge_timeout=120)
    assert sc.workload.current == other
    print(f"FIGURE pg nofailover ahead replica {figures}")


def best_posted(lab: Lab, service_id: str, epoch: int) -> bool:
    """`service_id` has a live candidacy post for the round after leader epoch `epoch`."""
    try:
        r = requests.get(f"{lab.catalog_url}/v1/kv/service/postgres/leader/candidates/"
                         f"{service_id}", timeout=1)
    except requests.RequestException:
        return False
    if r.status_code != 200:
        return False
    entry = r.json()[0]
    post = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
    return bool(entry.get("Session")) and post.get("eligible", True) and \
        int(post.get("epoch_seen", -1)) >= epoch


@pytest.mark.timeout(600)
def test_pg_lagging_replica_stays_out_while_a_better_candidate_is_live(lab_factory) -> None:
    """Async mode, maximumLagOnFailover 64 KiB. One replica lags ~1 MB behind the other when
    the primary is SIGKILLed. The better one posts its candidacy, then its supervisor
    freezes before it can take the lock (SIGSTOP; its post stays live until its check TTL
    of 10 s lapses). Without the limit the lagging one would run candidacyTimeout x 2 = 4 s
    into the round ("did not take the lock in time"); with it, it stays out while the
    better post is live. The better one resumes and the cluster converges."""
    lab = pg_lab(lab_factory, env={"PG_MAXIMUM_LAG_ON_FAILOVER": "65536",
                                   "AP_HEALTH_TTL": "10s", "AP_LOCK_DELAY": "3s"})
    sc = PgScenario(lab).start()
    old = sc.primary()
    best, lagging = sorted(n.name for n in lab.state.nodes.values() if n.name != old)
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 20, "writes before the fault")

    cut_link(lab, lagging, old)
    sc.timeline.add("FAULT", f"link {old} - {lagging} cut")
    n = lab.node(old)
    with Postgres(n.ip, n.port, timeout=30) as pg:  # ~1 MB of WAL the lagging one lacks
        pg.query("create table pad as select g, repeat('x', 500) as v "
                 "from generate_series(1, 2000) g")
        lsn = pg.value("select pg_current_wal_lsn()")
    sc.wait(lambda: value(lab, best, f"select pg_last_wal_receive_lsn() >= '{lsn}'") == "t",
            20, f"{best} receiving the padding")
    behind = value(lab, lagging, f"select pg_wal_lsn_diff('{lsn}', "
                                 "pg_last_wal_receive_lsn())::bigint")
    assert behind is not None and int(behind) > 65536, behind

    leader = lab.leader()
    assert leader is not None
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    sc.wait(lambda: best_posted(lab, f"postgres-{best}", int(leader["epoch"])), 40,
            f"{best} posting its candidacy")
    sup = lab.supervisor(lab.node(best))
    assert sup is not None
    sup.send_signal(signal.SIGSTOP)
    sc.timeline.add("FAULT", f"supervisor of {best} frozen after posting")
    try:
        holds(lambda: lagging not in lab.primaries(), 7,
              message=f"the lagging {lagging} staying out while {best}'s post is live")
        log = autopilot_log(lab, lagging)
        assert "ahead by more than maximumLagOnFailover" in log, log[-3000:]
        assert "did not take the lock in time" not in log
    finally:
        sup.send_signal(signal.SIGCONT)
        sc.timeline.add("heal", f"supervisor of {best} resumed")
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 60,
            "a new primary accepting writes")
    figures = sc.finish(converge_timeout=120)
    for line in autopilot_log(lab, lagging).splitlines():
        if "candidacy run=" in line:
            print(f"FIGURE {lagging}: {line[:200]}")
    print(f"FIGURE pg maximumLagOnFailover winner {sc.workload.current} {figures}")
