"""Issue 16's six ways to lose acknowledged writes or stop taking them, on a real 3-node lab.

Each test injects the fault while a client writes and reads throughout, then checks the
invariants I1-I5 of failure-scenarios.md (harness.Scenario.finish) and the case's own
claim; any violation fails with the whole timeline. These are races: each was run several
times locally (see the report in docs/stateful.md's measurement section)."""

from __future__ import annotations

import shutil
import time

import pytest
import requests

from autopilot.lab.cluster import Lab
from autopilot.lab.workload import missing_keys
from tests.chaos.harness import Scenario

pytestmark = pytest.mark.chaos

#: a catalog wipe (counted from when it answers again) or a Consul leader change must not
#: cost more than this without writes; the issue measured 10.5-11.8 s (wipe) and 18.5 s+
#: (leader change). Re-registration, candidacy (candidacyTimeout 2 s if a post is missing)
#: and promotion fit in it with room for a loaded CI machine.
OUTAGE_BUDGET = 6.0  # s


def leader_epoch(lab: Lab) -> int | None:
    leader = lab.leader()
    return leader["epoch"] if leader else None


def acked_before(sc: Scenario, t: float) -> list[int]:
    assert sc.workload is not None
    return [a.seq for a in sc.workload.results.acks if a.t < t]


def lost_on_primary(sc: Scenario, seqs: list[int]) -> list[int]:
    prim = next(m for m in sc.members if m.name in sc.lab.primaries())
    return missing_keys(prim, seqs)


def wipe_catalog(sc: Scenario) -> float:
    """The catalog restarts with nothing: no services, sessions or KV (LockIndex from 1).
    Returns when it answers again (monotonic): outages are counted from there, since how
    long a catalog takes to start is not what is tested."""
    sc.fault("wipe the catalog: SIGKILL", sc.lab.kill, "catalog")
    shutil.rmtree(sc.lab.dir / "catalog", ignore_errors=True)
    sc.lab.start("catalog")
    return sc.timeline.add("catalog-up", "the wiped catalog answers again")


def outage_after(sc: Scenario, t: float) -> float | None:
    """Longest stretch without an acknowledged write after `t` (up to the last ack)."""
    assert sc.workload is not None
    times = [t] + sorted(a.t for a in sc.workload.results.acks if a.t > t)
    if len(times) < 2:
        return None
    return max(b - a for a, b in zip(times, times[1:], strict=False))


# ---------------------------------------------------------------- 1. restart right after kill
@pytest.mark.timeout(120)
@pytest.mark.parametrize("no_loss", [False, True], ids=["async", "wait"])
def test_primary_restarted_right_after_its_kill_loses_nothing(lab_factory, no_loss: bool
                                                              ) -> None:
    """A container restart policy: SIGKILL the primary and start it again at once, with its
    AOF. It comes back detached (a replica of nothing: no replica can sync from it), its
    supervisor does not adopt the old session (a new redis-server, a new identity), and the
    replica that kept following wins the election: no acknowledged write is lost."""
    lab = lab_factory(nodes=3, no_loss=no_loss, env={"REDIS_APPENDONLY": "1"})
    sc = Scenario(lab, no_loss=no_loss).start()
    old = sc.primary()
    epoch = leader_epoch(lab)
    sc.wait(lambda: sc.workload.wait_acks(200, 0.1), 15, "writes before the fault")
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old} (primary)", lab.kill, old)
    sc.fault(f"start {old} again at once", lab.start, old)
    sc.killed.discard(old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 20,
            "another node accepting writes")
    figures = sc.finish()
    new_epoch = leader_epoch(lab)
    if lab.primaries() == [old]:
        sc.fail(f"{old}, restarted with a new history, was elected over replicas ahead of it")
    if new_epoch is None or epoch is None or new_epoch <= epoch:
        sc.fail(f"epoch {epoch} -> {new_epoch}: the old leadership was adopted")
    # async: only what the replicas had not received when the primary died may be gone
    settled = acked_before(sc, t - 0.5)
    lost = lost_on_primary(sc, settled)
    if lost:
        sc.fail(f"{len(lost)} writes acknowledged >0.5 s before the kill are gone: {lost[:10]}")
    if no_loss:
        assert figures["lost"] == 0


# ---------------------------------------------------------------- 2. resume during promotion
@pytest.mark.timeout(120)
def test_primary_resumed_during_the_promotion_gets_nothing_acknowledged(lab_factory) -> None:
    """No-loss mode: the primary is frozen (SIGSTOP) and resumed just as another member holds
    the lock and promotes. The replicas detached from it as soon as the lock left it, so
    `WAIT 1` on the resumed zombie confirms nothing, and nothing acknowledged is lost."""
    lab = lab_factory(nodes=3, no_loss=True)
    sc = Scenario(lab, no_loss=True, probe_wait_ms=50).start()
    old = sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(100, 0.1), 15, "writes before the fault")
    sc.killed.add(old)  # a paused supervisor is not "running" until resumed
    t = sc.fault(f"SIGSTOP {old} (primary)", lab.pause, old)

    def new_holder() -> bool:
        leader = lab.leader()
        return bool(leader and leader.get("node") != old)

    sc.wait(new_holder, 20, "another member to take the lock")
    sc.fault(f"SIGCONT {old} while the new holder promotes", lab.resume, old)
    sc.killed.discard(old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 20,
            "the new primary accepting writes")
    figures = sc.finish()
    assert figures["lost"] == 0, sc.timeline.format()


# ---------------------------------------------------------------- 3. and 4. catalog wiped
def _hand_over(sc: Scenario, lab: Lab) -> None:
    """SIGTERM the primary, wait for the next one, start the old one again as a replica."""
    old = sc.primary()
    sc.killed.add(old)
    t = sc.fault(f"SIGTERM {old} (hand-over)", lab.stop, old)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 20, "the next primary")
    sc.killed.discard(old)
    sc.fault(f"start {old} again", lab.start, old)
    sc.primary(timeout=30)  # converged again


@pytest.mark.timeout(150)
def test_catalog_wiped_after_two_hand_overs(lab_factory) -> None:
    """Two hand-overs raise the epoch; then the catalog loses its state (LockIndex starts at
    1 again). The epoch stays monotonic (each member keeps the highest it saw), replicas
    follow the new leader, and writes resume within seconds: no lost acknowledged write."""
    lab = lab_factory(nodes=3, no_loss=True)
    sc = Scenario(lab, no_loss=True).start()
    sc.primary()
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 15, "writes before the faults")
    _hand_over(sc, lab)
    _hand_over(sc, lab)
    epoch = leader_epoch(lab)
    assert epoch is not None and epoch >= 3, f"two hand-overs, epoch {epoch}"
    before = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=before), 10, "writes before the wipe")
    t = wipe_catalog(sc)
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=t + 0.1), 30, "writes after the wipe")
    figures = sc.finish(converge_timeout=30)
    new_epoch = leader_epoch(lab)
    if new_epoch is None or new_epoch <= epoch:
        sc.fail(f"epoch went from {epoch} to {new_epoch} across the wipe")
    gap = outage_after(sc, t)
    sc.timeline.add("outage", f"{gap}")
    if gap is None or gap > OUTAGE_BUDGET:
        sc.fail(f"no acknowledged write for {gap} s after the wipe (> {OUTAGE_BUDGET} s)")
    assert figures["lost"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("no_loss", [False, True], ids=["async", "wait"])
def test_catalog_wiped(lab_factory, no_loss: bool) -> None:
    """The catalog restarts empty: services re-register, the election's blocking query
    resets its index at once, and the primary (it holds the most recent data) wins again:
    writes resume within seconds and no acknowledged write is lost (no-loss mode)."""
    lab = lab_factory(nodes=3, no_loss=no_loss)
    sc = Scenario(lab, no_loss=no_loss).start()
    old = sc.primary()
    epoch = leader_epoch(lab)
    sc.wait(lambda: sc.workload.wait_acks(100, 0.1), 15, "writes before the wipe")
    wiped = time.monotonic()
    t = wipe_catalog(sc)
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=t + 0.1), 30, "writes after the wipe")
    figures = sc.finish(converge_timeout=30)
    new_epoch = leader_epoch(lab)
    if new_epoch is None or epoch is None or new_epoch <= epoch:
        sc.fail(f"epoch went from {epoch} to {new_epoch} across the wipe")
    gap = outage_after(sc, t)
    sc.timeline.add("outage", f"{gap}")
    if gap is None or gap > OUTAGE_BUDGET:
        sc.fail(f"no acknowledged write for {gap} s after the wipe (> {OUTAGE_BUDGET} s)")
    settled = acked_before(sc, wiped - 0.5)
    lost = lost_on_primary(sc, settled)
    if lost:
        sc.fail(f"{len(lost)} writes acknowledged before the wipe are gone: {lost[:10]}")
    if lab.primaries() != [old]:
        sc.timeline.add("note", f"primary moved from {old} to {lab.primaries()}")
    if no_loss:
        assert figures["lost"] == 0


# ---------------------------------------------------------------- 5. stalled replica, async
@pytest.mark.timeout(120)
def test_async_a_stalled_replica_does_not_win(lab_factory) -> None:
    """Async mode: one replica's stream stalls for ~2 s, then the primary dies. Candidacy
    ranks the replicas by position: the one that kept up wins, so only the writes in flight
    at the kill can be lost, not the stalled replica's 2 s of lag."""
    lab = lab_factory(nodes=3)
    sc = Scenario(lab).start()
    old = sc.primary()
    lag, good = [n for n in lab.state.nodes.values() if n.name != old]
    sc.wait(lambda: sc.workload.wait_acks(50, 0.1), 15, "writes before the fault")
    drop = ["INPUT", "-s", lab.node(old).ip, "-j", "DROP"]
    sc.fault(f"stall replication to {lag.name}", lab.net.in_ns, lag.n, "iptables", "-A", *drop)
    stalled = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(200, 0.1, after=stalled), 15,
            "writes the stalled replica misses")
    sc.wait(lambda: time.monotonic() - stalled >= 2.0, 5, "2 s of stall")
    sc.killed.add(old)
    t = sc.fault(f"SIGKILL {old}", lab.kill, old)
    # keep the stall until a new primary is chosen (the dead primary's kernel would
    # retransmit its buffers to the stalled replica and erase the lag)
    sc.wait(lambda: sc.workload.failover(t, old)["failover_s"], 20,
            "a new primary accepting writes")
    sc.fault(f"unstall {lag.name}", lab.net.in_ns, lag.n, "iptables", "-D", *drop)
    figures = sc.finish()
    if lab.primaries() != [good.name]:
        sc.fail(f"the stalled replica {lag.name} won (lost {figures.get('lost')})")
    settled = acked_before(sc, t - 0.5)
    lost = lost_on_primary(sc, settled)
    if lost:
        sc.fail(f"{len(lost)} writes acknowledged >0.5 s before the kill are gone: {lost[:10]}")


# ---------------------------------------------------------------- 6. Consul leader change
@pytest.mark.timeout(120)
@pytest.mark.parametrize("no_loss", [False, True], ids=["async", "wait"])
def test_consul_leader_change_keeps_the_primary(lab_factory, no_loss: bool) -> None:
    """A Consul server leader election, approximated by the catalog answering 500 "No
    cluster leader" for 3 s (the same answer Consul gives meanwhile). Nobody can acquire
    the lock then, so the primary keeps its lease (election.noLeaderTolerance) and writes
    go on; afterwards the cluster is converged with the same primary and no lost write."""
    lab = lab_factory(nodes=3, no_loss=no_loss, env={"AUTOPILOT_CATALOG_FAULTS": "1"})
    sc = Scenario(lab, no_loss=no_loss).start()
    old = sc.primary()
    epoch = leader_epoch(lab)
    sc.wait(lambda: sc.workload.wait_acks(100, 0.1), 15, "writes before the fault")

    def no_leader(seconds: float) -> None:
        requests.put(f"{lab.catalog_url}/v1/autopilot-fault/no-leader?seconds={seconds}",
                     timeout=5).raise_for_status()

    t = sc.fault('catalog answers 500 "No cluster leader" for 3 s', no_leader, 3.0)
    sc.wait(lambda: time.monotonic() > t + 3.5, 10, "the leader election to end")
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=t + 3.5), 20, "writes afterwards")
    figures = sc.finish(converge_timeout=30)
    gap = outage_after(sc, t)
    sc.timeline.add("outage", f"{gap}")
    if gap is None or gap > OUTAGE_BUDGET:
        sc.fail(f"no acknowledged write for {gap} s (> {OUTAGE_BUDGET} s)")
    if lab.primaries() != [old] or leader_epoch(lab) != epoch:
        sc.fail(f"a Consul leader election of 3 s deposed the primary {old} "
                f"(epoch {epoch} -> {leader_epoch(lab)})")
    if no_loss:
        assert figures["lost"] == 0


# ---------------------------------------------------------------- 7. every node restarts at once
@pytest.mark.timeout(180)
def test_every_node_restarted_at_once_the_most_advanced_aof_wins(lab_factory) -> None:
    """Every node is SIGKILLed and started again at once, each with its AOF (a power cut of
    the whole cluster, a rolling restart gone wrong). Every redis-server comes back at offset
    0 under a new replication ID, so positions used to be all 0 and the lowest service ID
    won. Here the lowest one is a replica cut off from the primary's stream before the kill
    (asynchronous mode: the primary alone acknowledged the last writes), so that win would
    lose them. The position of an AOF-restored node is the offset its history had when a
    health check last saw it live: the old primary wins and keeps every write it
    acknowledged more than 0.5 s before the kill. The order is the worst one, made certain:
    every old check lapses, then that stale replica comes back first and passes its check
    before the others start; it used to see no live peer and win alone (flaky with all
    started at once, every run in this order). The restart round (docs/stateful.md) makes
    it wait for the registered members and the last leader."""
    from autopilot.lab.workload import Member, hold_back_replication

    lab = lab_factory(nodes=3, env={"REDIS_APPENDONLY": "1"})
    lowest = "node-1"  # service ID redis-node-1: the one a tie of positions goes to
    if lab.wait_converged(30) and lab.primaries() == [lowest]:
        lab.stop(lowest)  # hand over: the primary must not be the node a tie picks
        lab.start(lowest)
    sc = Scenario(lab).start()
    old = sc.primary()
    assert old != lowest, lab.status(partitions=False)
    sc.wait(lambda: sc.workload.wait_acks(100, 0.1), 15, "writes before the fault")
    n = lab.node(old)
    sc.fault(f"hold back {old}'s replication", hold_back_replication, Member(old, n.ip, n.port))
    t_cut = time.monotonic()
    sc.wait(lambda: sc.workload.wait_acks(100, 0.1, after=t_cut), 15,
            "writes only the primary holds")
    time.sleep(0.6)  # (three health checks: the primary's record follows its offset)
    names = sorted(lab.state.nodes, key=int)
    sc.killed.update(f"node-{k}" for k in names)
    t = sc.fault("SIGKILL every node", lambda: [lab.kill(k) for k in names])
    # the worst order, made certain: every old check lapses, then the stale replica comes
    # back first and passes its check before the others start (a round of its own would
    # then see no live peer: it used to win alone, with the oldest data)
    # three entries, all critical: a catalog read that failed reads as no entries at all
    sc.wait(lambda: [e["health"] for e in lab.catalog_entries().values()] == ["critical"] * 3,
            15, "every old check lapsed")
    sc.fault(f"start {lowest} first", lab.start, lowest)
    sc.wait(lambda: any(e["id"] == f"redis-{lowest}" and e["health"] == "passing"
                        for e in lab.catalog_entries().values()), 30,
            f"{lowest} passes its check")
    sc.fault("start the others", lambda: [lab.start(k) for k in names
                                          if f"node-{k}" != lowest])
    sc.killed.clear()
    sc.wait(lambda: sc.workload.wait_acks(20, 0.1, after=t + 0.1), 40,
            "writes after the restart")
    sc.finish(converge_timeout=40, check_i2=False)
    settled = acked_before(sc, t - 0.5)
    lost = lost_on_primary(sc, settled)
    if lab.primaries() != [old]:
        sc.fail(f"{lab.primaries()} won, not {old} whose AOF went furthest "
                f"({len(lost)} settled writes missing there)")
    if lost:
        sc.fail(f"{len(lost)} writes acknowledged >0.5 s before the kill are gone: {lost[:10]}")
