"""Data safety at the election level (issue 16, docs/stateful.md#data-safety), driven
in-process against the real catalog process, with real hook processes: identity-checked
adoption, detach before any promotion, candidacy by position, an epoch that survives a
catalog wipe, and Consul leader elections (the catalog's no-leader fault switch)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, stays, until
from tests.integration.election_members import (
    Member,
    converged,
    hook,
    hook_lines,
    key_holder,
    leaders,
    lock_value,
    run,
    start_members,
    stop_all,
)


def ident_hook(tmp: Path, node: str) -> list[str]:
    """Prints the node's current "data incarnation" (a file the test rewrites)."""
    return ["sh", "-c", f"cat {tmp}/ident-{node}"]


def sessions(cat: CatalogProcess) -> set[str]:
    return {s["ID"] for s in requests.get(cat.url + "/v1/session/list", timeout=5).json() or []}


async def restart_scenario(catalog: CatalogProcess, tmp: Path, *, same_data: bool) -> None:
    for node in ("n0", "n1"):
        (tmp / f"ident-{node}").write_text(f"{node}-incarnation-1\n")
    members = [Member(catalog, node, tmp, port=7600 + i, identity=ident_hook(tmp, node))
               for i, node in enumerate(("n0", "n1"))]
    restarted: Member | None = None
    lead: Member | None = None
    try:
        for m in members:
            m.register()
            await m.start()
        for m in members:
            m.healthy()
        (lead,) = await until(lambda: leaders(members), 10, "a leader")
        other = next(m for m in members if m is not lead)
        await until(lambda: other.ctx.facts["db"].get("role") == "replica", 5, "a replica")
        held = key_holder(catalog)
        assert held is not None
        # the winner recorded its data incarnation in the lock value at promotion
        assert lock_value(held)["identity"] == f"{lead.node}-incarnation-1"
        epoch = lock_value(held)["epoch"]
        old_session = lead.election.session
        lead.crash()
        if not same_data:  # the service restarted empty: a new incarnation
            (tmp / f"ident-{lead.node}").write_text(f"{lead.node}-incarnation-2\n")
        restarted = Member(catalog, lead.node, tmp, port=lead.job.port,
                           identity=ident_hook(tmp, lead.node))
        t0, wall0 = time.monotonic(), time.time()
        await restarted.start()
        restarted.healthy()
        if same_data:
            await until(lambda: restarted.election.primary, 5, "the restarted member to lead")
            assert restarted.election.session == old_session
            assert restarted.ctx.facts["db"]["epoch"] == epoch
            assert not other.codes("elected")
            return
        # a different incarnation: the old session is destroyed at once, never adopted
        await until(lambda: old_session not in sessions(catalog), 3,
                    "the old session to be destroyed")
        destroyed_after = time.monotonic() - t0
        await until(lambda: other.election.primary or restarted.election.primary, 6,
                    "a new leader")
        winner = other if other.election.primary else restarted
        assert not restarted.election.session == old_session
        new_epoch = lock_value(key_holder(catalog))["epoch"]
        assert new_epoch > epoch
        # the restarted member never resumed leadership with its old session and epoch
        # (the hook log is the node's: the killed incarnation's lines come first)
        since = [ln for ln in hook_lines(restarted.hooks) if float(ln[1]) >= wall0]
        assert all(int(ln[3]) > epoch for ln in since if ln[0] == "promote"), since
        if winner is other:
            await until(lambda: restarted.ctx.child_env.get("AUTOPILOT_LEADER_NODE")
                        == other.node, 3, "the restarted member to follow")
            # its job may still act as the old primary: fenced (the hook runs right after
            # the role is published)
            await until(lambda: [ln[0] for ln in hook_lines(restarted.hooks)
                                 if float(ln[1]) >= wall0] == ["demote"], 3,
                        "the restarted member's demote hook, and no promote")
        print(f"FIGURE identity mismatch: old session destroyed {destroyed_after:.2f}s after "
              f"the restart; new leader {winner.node} at epoch {new_epoch}")
    finally:
        await stop_all(*members, restarted)


@pytest.mark.timeout(40)
def test_restart_with_the_same_data_resumes_leadership(catalog: CatalogProcess, tmp_path: Path):
    run(lambda: restart_scenario(catalog, tmp_path, same_data=True))


@pytest.mark.timeout(40)
def test_restart_with_lost_data_never_resumes_leadership(catalog: CatalogProcess,
                                                         tmp_path: Path):
    """Issue 16 case 1 at the election level: a killed primary restarted at once (empty)."""
    run(lambda: restart_scenario(catalog, tmp_path, same_data=False))


@pytest.mark.timeout(40)
def test_failing_identity_hook_means_no_adoption(catalog: CatalogProcess, tmp_path: Path):
    """A hook that cannot tell (service not answering) counts as a different incarnation."""
    async def scenario() -> None:
        (tmp_path / "ident-n0").write_text("a\n")
        lead = Member(catalog, "n0", tmp_path, port=7650, identity=ident_hook(tmp_path, "n0"))
        restarted: Member | None = None
        try:
            lead.register()
            await lead.start()
            lead.healthy()
            await until(lambda: lead.election.primary, 10, "a leader")
            old = lead.election.session
            lead.crash()
            (tmp_path / "ident-n0").unlink()  # the hook now fails
            restarted = Member(catalog, "n0", tmp_path, port=7650,
                               identity=ident_hook(tmp_path, "n0"))
            await restarted.start()
            restarted.healthy()
            await until(lambda: old not in sessions(catalog), 3, "the old session to go")
            assert restarted.election.session != old
        finally:
            await stop_all(lead, restarted)

    run(scenario)


def pos_hook(tmp: Path, node: str) -> list[str]:
    """Prints the node's position (a file the test rewrites); no file: not a candidate."""
    return ["sh", "-c", f"cat {tmp}/pos-{node}"]


def detach_hook(m_log: Path) -> list[str]:
    return ["sh", "-c", f'echo "detach $(date +%s.%N) $AUTOPILOT_ROLE '
                        f'x$AUTOPILOT_LEADER_NODE" >> {m_log}']


def times(m: Member, kind: str, since: float = 0.0) -> list[float]:
    return [float(ln[1]) for ln in hook_lines(m.hooks) if ln[0] == kind and float(ln[1]) >= since]


async def positioned_cluster(catalog: CatalogProcess, tmp: Path, **extra) -> list[Member]:
    members = []
    for i, node in enumerate(("n0", "n1", "n2")):
        (tmp / f"pos-{node}").write_text("0\n")
        m = Member(catalog, node, tmp, port=7700 + i, position=pos_hook(tmp, node),
                   detach=detach_hook(tmp / f"hooks-{node}.log"), **extra)
        members.append(m)
    await start_members(members)
    await converged(members)
    return members


def rig_positions(tmp: Path, members: list[Member], lead: Member) -> tuple[Member, Member]:
    """The follower with the LOWER service ID gets the LOWER position, so neither the
    tie-break nor a race can pick the right one by luck."""
    low, high = sorted((m for m in members if m is not lead), key=lambda m: m.sid)
    (tmp / f"pos-{low.node}").write_text("100\n")
    (tmp / f"pos-{high.node}").write_text("5000\n")
    return low, high


@pytest.mark.timeout(60)
def test_failover_detaches_first_and_the_most_advanced_replica_wins(catalog: CatalogProcess,
                                                                    tmp_path: Path):
    """Issue 16 cases 2 and 5 at the election level: the primary fails; both followers run
    `detach` before anybody's `promote`; the replica with the highest position wins."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            wall0 = time.time()
            lead.unhealthy()  # its check fails: the catalog drops its session at once
            await until(lambda: high.election.primary or low.election.primary, 8,
                        "a new primary")
            assert high.election.primary and not low.election.primary, "lower position won"
            promote = times(high, "promote", wall0)[0]
            for m in (low, high):
                d = times(m, "detach", wall0)
                assert d and d[0] < promote, f"{m.node} detached after the promote"
            # detach ran with no leader in its environment, and said so to the jobs
            row = next(ln for ln in hook_lines(low.hooks) if ln[0] == "detach")
            assert row[2:] == ["replica", "x"]
            assert [e for t, e in low.events if e == "leaderChanged:db" and t >= wall0]
            await until(lambda: low.ctx.child_env.get("AUTOPILOT_LEADER_NODE") == high.node,
                        3, "the other replica to follow the winner")
            epoch = lock_value(key_holder(catalog))["epoch"]
            assert low.ctx.child_env["AUTOPILOT_LEADER_EPOCH"] == str(epoch)
            # the posts are cleared once the round is over
            await until(lambda: requests.get(
                f"{catalog.url}/v1/kv/service/db/leader/candidates/?recurse", timeout=2
            ).status_code == 404, 3, "the candidacy posts to be cleared")
            print(f"FIGURE failover with candidacy: promote {promote - wall0:.2f}s after the "
                  f"check failed (lock-delay 1s)")
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_handover_goes_to_the_most_advanced_replica_quickly(catalog: CatalogProcess,
                                                            tmp_path: Path):
    """SIGTERM hand-over with candidacy: the stopping primary abstains, so nobody waits for
    it; the best replica is promoted well inside the hand-over budget."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            wall0 = time.time()
            await lead.election.before_shutdown()
            await until(lambda: high.election.primary or low.election.primary, 5,
                        "a new primary")
            assert high.election.primary
            promote = times(high, "promote", wall0)[0]
            demote = times(lead, "demote", wall0)[0]
            assert all(times(m, "detach", wall0)[0] < promote for m in (low, high))
            gap = promote - demote
            print(f"FIGURE hand-over with candidacy: demote -> promote {gap * 1000:.0f} ms")
            assert gap < 0.5, f"hand-over took {gap:.3f}s"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(60)
def test_a_detach_hook_that_outlasts_the_acquire_backoff_does_not_delay_the_candidacy(
        catalog: CatalogProcess, tmp_path: Path):
    """A member's acquire backoff (after a lost attempt, 50 ms and up) ran out while its
    detach hook ran: its step compared the backoff with the time before the hook, found it
    not over and returned, and the loop, seeing that deadline already past, slept for 5 s.
    Its peers waited candidacyTimeout (2 s) for its post and the member behind won
    (test_a_lost_acquire_attempt_does_not_make_a_member_ignore_its_peers_posts failed so
    now and then under load: the best member's detach took 38 ms, its backoff 12 ms). Here
    the detach takes 0.5 s and the backoff 0.2 s, every time."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            slow = detach_hook(high.hooks)
            high.election.ecfg.detach = [*slow[:-1], "sleep 0.5; " + slow[-1]]
            wall0 = time.time()
            high.election._acquire_retry = time.monotonic() + 0.2  # a lost attempt's backoff
            await lead.election.before_shutdown()
            await until(lambda: high.election.primary or low.election.primary, 8,
                        "a new primary")
            assert high.election.primary, "the member behind won: the best one's candidacy " \
                "waited past its detach hook"
            gap = times(high, "promote", wall0)[0] - times(lead, "demote", wall0)[0]
            assert gap < 1.5, f"hand-over took {gap:.3f}s"  # detach 0.5 s, not the 2 s wait
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_lost_acquire_attempt_does_not_make_a_member_ignore_its_peers_posts(
        catalog: CatalogProcess, tmp_path: Path):
    """The best replica once tried to acquire while the lock was held and its watch had not
    shown the holder yet (at a simultaneous start a loser tries again within the
    lock-delay): that attempt's epoch used to count as seen, its next round's posts carried
    it and it took its peer's post (one epoch lower) for a stale one: at the hand-over it
    waited candidacyTimeout for a post it had (chaos S5: a 2.09 s write gap). Now the lost
    attempt's epoch is only reserved (EpochStore.claim) and the hand-over is as quick as
    without it."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            e = high.election
            held, e.holder = e.holder, None  # its watch has not shown the holder yet
            attempt = asyncio.ensure_future(e._try_acquire())
            await asyncio.sleep(0)  # the attempt picks its epoch now
            e.holder = held
            await attempt
            assert not e.primary and not e.holding  # lost: the lock is the leader's
            wall0 = time.time()
            await lead.election.before_shutdown()
            await until(lambda: high.election.primary or low.election.primary, 8,
                        "a new primary")
            assert high.election.primary
            gap = times(high, "promote", wall0)[0] - times(lead, "demote", wall0)[0]
            assert gap < 0.5, f"hand-over took {gap:.3f}s"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_member_whose_position_hook_refuses_is_not_a_candidate(catalog: CatalogProcess,
                                                                 tmp_path: Path):
    """Non-zero exit of `position` (e.g. a nofailover tag): it never runs, even when it is
    the only other member left; nobody waits for it either."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            (tmp_path / f"pos-{high.node}").unlink()  # high refuses
            wall0 = time.time()
            lead.unhealthy()
            await until(lambda: low.election.primary, 8, "the eligible replica to win")
            took = times(low, "promote", wall0)[0] - wall0
            assert not high.election.primary and not times(high, "promote", wall0)
            assert took < 2.5, f"waited for the abstaining member: {took:.2f}s"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
@pytest.mark.parametrize("max_lag", [100, 0])
def test_maximum_lag_keeps_a_lagging_member_out_while_the_best_lives(
        catalog: CatalogProcess, tmp_path: Path, max_lag: int):
    """The best candidate (position 5000) is held back: it waits up to 4 s for the post of a
    passing peer that never posts (a registered instance without an election). The lagging
    member (position 100, candidacyTimeout 0.5 s) would run after 2 x 0.5 s; with
    maximumLagOnFailover 100 it must not, as long as the best's post is live."""
    async def scenario() -> None:
        for node in ("n0", "n1", "n2"):
            (tmp_path / f"pos-{node}").write_text("0\n")
        ghost = Member(catalog, "ghost", tmp_path, port=7799)  # registered, never starts
        ghost.register()
        members = [Member(catalog, node, tmp_path, port=7790 + i,
                          position=pos_hook(tmp_path, node), candidacy_timeout=0.5,
                          maximum_lag_on_failover=max_lag)
                   for i, node in enumerate(("n0", "n1", "n2"))]
        try:
            await start_members(members)
            lead = await converged(members, 20, 10)
            low, high = rig_positions(tmp_path, members, lead)
            high.election.ecfg.candidacy_timeout = 4.0  # the best waits for the silent peer
            t0 = time.time()
            lead.unhealthy()
            await until(lambda: low.election.primary or high.election.primary, 10,
                        "a new primary")
            took = time.time() - t0
            if max_lag:
                assert high.election.primary and not times(low, "promote", t0), \
                    "the lagging member ran while the best candidate lived"
                assert took >= 3.0, f"the best did not wait for the silent peer ({took:.2f}s)"
            else:
                # no limit: the lagging member runs once the best is late (bounded wait)
                assert low.election.primary and took < 3.0, took
            print(f"FIGURE maximumLagOnFailover={max_lag}: "
                  f"{'high' if high.election.primary else 'low'} promoted after {took:.2f}s")
        finally:
            for m in members:
                await m.stop()
            if ghost.ctx.consul is not None:
                ghost.ctx.consul.close()

    run(scenario)


@pytest.mark.timeout(60)
def test_maximum_lag_remembers_a_best_candidate_whose_promote_failed(
        catalog: CatalogProcess, tmp_path: Path):
    """The best candidate (position 5000) wins the round but its promote hook fails: it
    steps down, its session and so its post's liveness go with it, and it backs off (2 s)
    while its check still passes. The lagging member (position 100, maximumLagOnFailover
    100, candidacyTimeout 0.5 s) must stay out all that time, on the best's remembered
    post (without the memory it ran 0.5 s after the release: only live posts counted).
    Once the best's check fails, it may run and wins."""
    async def scenario() -> None:
        members = []
        for i, node in enumerate(("n0", "n1", "n2")):
            (tmp_path / f"pos-{node}").write_text("0\n")
            members.append(Member(catalog, node, tmp_path, port=7860 + i,
                                  position=pos_hook(tmp_path, node), candidacy_timeout=0.5,
                                  maximum_lag_on_failover=100))
        try:
            await start_members(members)
            lead = await converged(members)
            low, high = rig_positions(tmp_path, members, lead)
            failing = hook(high.hooks, "promote")
            high.election.ecfg.promote = [*failing[:-1], failing[-1] + "; exit 1"]
            t0 = time.time()
            lead.unhealthy()
            await until(lambda: times(high, "promote", t0) and times(high, "demote", t0), 8,
                        "the best's promote to fail and its demote to run")
            await until(lambda: not high.election.holding and high.election.session is None,
                        3, "the best to release and back off")
            released = time.time()
            # the best backs off for 2 s, its post not live, its check passing: what holds the
            # lagging member out is its memory of that post. Read while the best backs off:
            # at 2 s it runs again, and while it holds the lock (its promote failing again)
            # the lagging member has no round (it read as None now and then under load)
            await until(lambda: low.election._round is not None and "is not running now" in
                        low.election._round.why and "maximumLagOnFailover" in
                        low.election._round.why, 1.5,
                        "the lagging member held out by the best's remembered post")
            await stays(lambda: not low.election.holding and not low.election.primary, 2.5,
                        "the lagging member staying out while the best backs off")
            # the best is unhealthy now: the lagging member may run (availability)
            high.unhealthy()
            await until(lambda: low.election.primary, 8, "the lagging member to run")
            assert not high.election.primary
            assert min(times(low, "promote", t0)) >= released
            print(f"FIGURE lagging member promoted {time.time() - released:.2f}s after the "
                  f"best's failed promote released the lock (held out for 2.5 s of it)")
        finally:
            await stop_all(*members)

    run(scenario)


def reporting_detach(tmp: Path, node: str) -> list[str]:
    """A detach hook that logs its run and reports the position (``position=N``, the last
    line) from the file ``dpos-<node>``; without the file it reports nothing."""
    log = tmp / f"hooks-{node}.log"
    return ["sh", "-c", f'echo "detach $(date +%s.%N) $AUTOPILOT_ROLE x" >> {log}; '
                        f'echo "some output first"; '
                        f'[ -f {tmp}/dpos-{node} ] && echo "position=$(cat {tmp}/dpos-{node})"'
                        f'; true']


def logging_position(tmp: Path, node: str) -> list[str]:
    """The position hook of ``pos_hook``, logging each run."""
    log = tmp / f"hooks-{node}.log"
    return ["sh", "-c", f'echo "position $(date +%s.%N)" >> {log}; cat {tmp}/pos-{node}']


@pytest.mark.timeout(60)
def test_a_position_reported_by_detach_spares_the_position_hook(catalog: CatalogProcess,
                                                                tmp_path: Path):
    """A detach hook whose last line is ``position=N`` gives the round its position: the
    position hook is not started for that post (one process start less on every failover).
    The position hooks are rigged the other way round, so a post that used them would let
    the wrong member win."""
    async def scenario() -> None:
        members = []
        for i, node in enumerate(("n0", "n1", "n2")):
            (tmp_path / f"pos-{node}").write_text("0\n")
            members.append(Member(catalog, node, tmp_path, port=7820 + i,
                                  position=logging_position(tmp_path, node),
                                  detach=reporting_detach(tmp_path, node)))
        try:
            await start_members(members)
            lead = await converged(members)
            low, high = sorted((m for m in members if m is not lead), key=lambda m: m.sid)
            (tmp_path / f"dpos-{low.node}").write_text("100\n")
            (tmp_path / f"dpos-{high.node}").write_text("5000\n")
            (tmp_path / f"pos-{low.node}").write_text("9000\n")  # would win: must not count
            (tmp_path / f"pos-{high.node}").write_text("1\n")
            wall0 = time.time()
            lead.unhealthy()
            await until(lambda: high.election.primary or low.election.primary, 8,
                        "a new primary")
            assert high.election.primary and not low.election.primary, "the hook's position won"
            for m in (low, high):
                assert times(m, "detach", wall0), f"{m.node} did not detach"
                assert not times(m, "position", wall0), f"{m.node} ran its position hook"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(60)
def test_the_best_candidate_runs_when_the_last_post_arrives_not_at_the_next_poll(
        catalog: CatalogProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The best candidate waits for its live peers' posts; a blocking query on the posts
    wakes it when the last one arrives. With the fallback poll made 6 s long, only that
    wake-up can promote it in time: the slow peer posts ~1.5 s after the failure."""
    from autopilot.election import rounds

    monkeypatch.setattr(rounds, "POLL", 6.0)

    async def scenario() -> None:
        members = []
        for i, node in enumerate(("n0", "n1", "n2")):
            (tmp_path / f"pos-{node}").write_text("0\n")
            members.append(Member(catalog, node, tmp_path, port=7840 + i, lock_delay=0.05,
                                  position=pos_hook(tmp_path, node),
                                  detach=detach_hook(tmp_path / f"hooks-{node}.log")))
        try:
            await start_members(members)
            lead = await converged(members)
            low, high = rig_positions(tmp_path, members, lead)
            # the lower one's detach takes 1.5 s: the best must wait for its post
            low.election.ecfg.detach = ["sh", "-c", "sleep 1.5"]
            t0 = time.monotonic()
            lead.unhealthy()
            await until(lambda: high.election.primary or low.election.primary, 12,
                        "a new primary")
            took = time.monotonic() - t0
            assert high.election.primary
            # the slow post arrives at ~1.5 s; the next fallback poll would be at >= 6 s
            assert took < 4.5, f"promoted only at the poll: {took:.2f}s"
            print(f"FIGURE best candidate promoted {took:.2f}s after the failure "
                  f"(the last post at ~1.5 s)")
        finally:
            for m in members:
                await m.stop()

    run(scenario)


def restarted(old: Member, tmp: Path, **extra) -> Member:
    """A new incarnation of ``old``'s supervisor (same node, data and hooks)."""
    return Member(old.cat, old.node, tmp, port=old.job.port,
                  position=pos_hook(tmp, old.node),
                  detach=detach_hook(tmp / f"hooks-{old.node}.log"), **extra)


async def come_back(m: Member) -> Member:
    """Register (its first check passes), start, report healthy."""
    m.register()
    m.check("pass")
    await m.start()
    m.healthy()
    return m


@pytest.mark.timeout(60)
def test_a_whole_cluster_restart_waits_for_the_last_leader(catalog: CatalogProcess,
                                                           tmp_path: Path):
    """The whole cluster dies and every old check lapses (the lock goes free, the key keeps
    its last holder's value). The stalest member comes back first and passes its check: no
    peer passes, but this is a restart round (docs/stateful.md, "A restart round waits for
    everybody registered"): it waits for the registered members and longest for the last
    leader, which comes back with the most data and wins. Without the rule the first member
    back won alone at once."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        back: list[Member] = []
        try:
            (lead,) = leaders(members)
            low, _ = rig_positions(tmp_path, members, lead)
            (tmp_path / f"pos-{lead.node}").write_text("9000\n")
            for m in members:
                m.crash()
            for m in members:
                m.check("fail")  # the old checks lapse: sessions invalidated, lock released
            await until(lambda: not (key_holder(catalog) or {}).get("Session"), 5,
                        "the lock free")

            first = await come_back(restarted(low, tmp_path))
            back.append(first)
            await until(lambda: first.election._posted, 5, "the first member's post")
            await stays(lambda: not first.election.primary, 1.5,
                        "the first member back (position 100) did not win alone")
            last = await come_back(restarted(lead, tmp_path))
            back.append(last)
            await until(lambda: last.election.primary, 10, "the last leader to win")
            assert not first.election.primary
        finally:
            await stop_all(*members)
            for m in back:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(60)
def test_a_member_back_while_the_dead_primary_still_holds_the_lock_waits_for_it(
        catalog: CatalogProcess, tmp_path: Path):
    """The whole cluster dies. The stalest member comes back within the check TTL: the
    dead primary's session still holds the lock (its check has not lapsed yet), so the
    member follows that holder. Then the old checks lapse and the lock goes free. The
    member saw no leader alive since it started: its round is a restart round (it waits
    for the registered members and longest for the last leader), and the last leader,
    back with the most data, wins. Before, having followed a holder, it kept the ordinary
    rules: no peer passing, it won alone with the oldest data (102-104 settled writes lost
    in the Redis chaos test of the lock-free order). The last leader comes back 2.5 s into
    the first member's round, later than 2 x candidacyTimeout - its own wait for the
    silent third member: the first member must let it finish that wait (it used to run
    at once, "did not take the lock in time", with the older data)."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path)
        back: list[Member] = []
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            (tmp_path / f"pos-{lead.node}").write_text("9000\n")
            for m in members:
                m.crash()
            assert (key_holder(catalog) or {}).get("Session"), "the lock was released"
            first = await come_back(restarted(low, tmp_path))
            back.append(first)
            await until(lambda: first.ctx.child_env.get("AUTOPILOT_LEADER_NODE") == lead.node,
                        5, "the member back to follow the dead primary's stale holder")
            for m in (lead, high):
                m.check("fail")  # their checks lapse: the lock goes free, its value kept
            await until(lambda: not (key_holder(catalog) or {}).get("Session"), 5,
                        "the lock free")
            await until(lambda: first.election._posted, 5, "the first member's post")
            await stays(lambda: not first.election.primary, 2.5,
                        "the first member back (position 100) did not win alone")
            last = await come_back(restarted(lead, tmp_path))
            back.append(last)
            await until(lambda: last.election.primary, 10, "the last leader to win")
            assert not first.election.primary
        finally:
            await stop_all(*members, *back)

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_member_started_just_before_its_primary_dies_does_not_wait_for_it(
        catalog: CatalogProcess, tmp_path: Path):
    """The most advanced replica's supervisor restarts and follows the live primary; the
    primary dies a moment later (within the session TTL of the restart). That member saw
    no leader alive in its own lifetime either, but the other replica ran all along: its
    live post (not ``restarting``) says this is an ordinary failover, so nobody waits
    3 x candidacyTimeout for the dead primary; the restarted member wins about a
    lock-delay after the failure."""
    async def scenario() -> None:
        members = await positioned_cluster(catalog, tmp_path, candidacy_timeout=1.0)
        back: list[Member] = []
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            high.crash()
            again = await come_back(restarted(high, tmp_path, candidacy_timeout=1.0))
            back.append(again)
            await until(lambda: again.ctx.child_env.get("AUTOPILOT_LEADER_NODE") == lead.node,
                        5, "the restarted member to follow the live primary")
            t0 = time.time()
            lead.unhealthy()
            await until(lambda: again.election.primary or low.election.primary, 10,
                        "a new primary")
            assert again.election.primary, "not the most advanced member"
            took = times(again, "promote", t0)[0] - t0
            print(f"FIGURE member restarted just before its primary died: promoted "
                  f"{took:.2f}s after the failure (lock-delay 1s, candidacyTimeout 1s)")
            assert took < 2.5, f"waited for the dead primary: {took:.2f}s"
        finally:
            await stop_all(*members, *back)

    run(scenario)
