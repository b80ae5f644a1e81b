"""The election's data-safety pieces that need no catalog: config keys, the candidacy
decision, the epoch file, the no-leader lease extension."""

from __future__ import annotations

from pathlib import Path

from autopilot.config import ConfigError, load_text
from autopilot.election.candidacy import (
    UNKNOWN,
    PeerMemory,
    Post,
    abstained,
    decide,
    post_value,
)
from autopilot.election.epochs import EpochStore, state_path
from autopilot.election.lease import Lease


def election(text: str):
    return load_text(text, "t.json5").jobs[0].election


def errors(text: str) -> str:
    try:
        load_text(text, "t.json5")
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("no error")


def test_data_safety_keys() -> None:
    e = election('{consul: "c", jobs: [{name: "db", election: {identity: "id.sh",'
                 ' position: ["pos.sh", "-x"], detach: "detach.sh", maximumLagOnFailover: 1048576,'
                 ' successor: "next.sh", candidacyTimeout: "1500ms", stateDir: "/data/autopilot",'
                 ' noLeaderTolerance: "6s"}}]}')
    assert e.identity == ["id.sh"] and e.position == ["pos.sh", "-x"]
    assert e.detach == ["detach.sh"] and e.maximum_lag_on_failover == 1048576
    assert e.successor == ["next.sh"]
    assert e.candidacy_timeout == 1.5 and e.state_dir == "/data/autopilot"
    assert e.no_leader_tolerance == 6.0
    d = election('{consul: "c", jobs: [{name: "db", election: true}]}')
    assert d.identity is None and d.position is None and d.detach is None
    assert d.successor is None
    assert d.maximum_lag_on_failover == 0 and d.no_leader_tolerance is None
    errs = errors('{consul: "c", jobs: [{name: "db", election: {maximumLagOnFailover: -1,'
                  ' candidacyTimeout: "2m", noLeaderTolerance: "11s"}}]}')
    for piece in ["jobs[0].election.maximumLagOnFailover: must be >= 0",
                  "jobs[0].election.candidacyTimeout: must be between 0s and 60s",
                  "jobs[0].election.noLeaderTolerance: must be between 0s and sessionTTL"]:
        assert piece in errs, errs


def post(sid: str, pos: int, *, epoch: int = 5, live: bool = True,
         eligible: bool = True, at: float = 1.0) -> Post:
    return Post(service_id=sid, node=sid, position=pos, epoch_seen=epoch, eligible=eligible,
                live=live, at=at)


def test_the_most_up_to_date_candidate_runs_first() -> None:
    posts = [post("a", 100), post("b", 300), post("c", 200)]
    everyone = {"a", "b", "c"}
    assert decide("b", posts, everyone, 5, 0.0, 2.0, 0).acquire
    assert not decide("a", posts, everyone, 5, 0.0, 2.0, 0).acquire
    # a peer that has not posted yet holds the best back, until the timeout
    few = [post("a", 100), post("b", 300)]
    d = decide("b", few, everyone, 5, 0.1, 2.0, 0)
    assert not d.acquire and "c" in d.why
    assert decide("b", few, everyone, 5, 2.0, 2.0, 0).acquire
    # posts from an earlier round (a lower epoch seen) do not count
    assert not decide("b", [*few, post("c", 50, epoch=4)], everyone, 5, 0.1, 2.0, 0).acquire
    # an abstention counts as a post; a dead member's post makes no runner
    assert decide("b", [*few, post("c", 999, eligible=False)], everyone, 5, 0.1, 2.0, 0).acquire
    assert decide("b", [*few, post("c", 999, live=False)], everyone, 5, 0.1, 2.0, 0).acquire
    # equal positions: the lowest service ID
    assert decide("a", [post("a", 7), post("b", 7)], {"a", "b"}, 5, 0, 2, 0).acquire
    # unknown positions rank lowest
    assert decide("b", [post("a", UNKNOWN), post("b", 0)], {"a", "b"}, 5, 0, 2, 0).acquire


def test_a_tie_goes_to_the_leader_followed_last() -> None:
    """After a catalog wipe every member may hold the same data: the primary stays where it
    was instead of moving to the lowest service ID (a needless failover)."""
    tie = [post("a", 7), post("b", 7), post("c", 7)]
    assert decide("b", tie, {"a", "b", "c"}, 5, 0, 2, 0, prefer="b").acquire
    assert not decide("a", tie, {"a", "b", "c"}, 5, 0, 2, 0, prefer="b").acquire
    # more data still wins over the preference
    ahead = [post("a", 8), post("b", 7)]
    assert decide("a", ahead, {"a", "b"}, 5, 0, 2, 0, prefer="b").acquire
    assert not decide("b", ahead, {"a", "b"}, 5, 0, 2, 0, prefer="b").acquire
    # a preferred leader that abstains or is gone does not hold the others up
    assert decide("a", [post("a", 7), post("b", 7, eligible=False)], {"a", "b"}, 5, 0, 2, 0,
                  prefer="b").acquire


def test_the_leader_absent_from_a_wiped_catalog_is_waited_for_longer() -> None:
    posts = [post("a", 100), post("b", 90)]
    # "c" led and is absent from the catalog: 3 x timeout for it, not 1 x
    assert not decide("a", posts, {"a", "b", "c"}, 5, 2.5, 2.0, 0, {"c"}).acquire
    assert decide("a", posts, {"a", "b", "c"}, 5, 6.0, 2.0, 0, {"c"}).acquire
    # and the others do not run before the best may
    assert not decide("b", posts, {"a", "b", "c"}, 5, 7.9, 2.0, 0, {"c"}).acquire
    assert decide("b", posts, {"a", "b", "c"}, 5, 8.0, 2.0, 0, {"c"}).acquire
    # once it posted, nobody waits any longer
    assert decide("c", [*posts, post("c", 1000)], {"a", "b", "c"}, 5, 0.1, 2.0, 0,
                  {"c"}).acquire


def test_a_leader_that_stopped_on_purpose_is_told_by_its_abstaining_post() -> None:
    """A stopping leader posts ``eligible: false`` before it releases (its session then
    goes: the post is not live). Written since it led (epoch_seen >= the epoch it led at),
    it means it left on purpose: rounds.py does not wait for it as for a leader that a
    catalog wipe made absent (a wipe leaves no post at all)."""
    gone = post("c", UNKNOWN, epoch=5, live=False, eligible=False)
    assert abstained("c", [post("a", 1), gone], 5)
    assert not abstained("c", [post("a", 1)], 5)  # a wiped catalog: no post
    assert not abstained("c", [gone], 6)  # written before it led at epoch 6
    assert not abstained("c", [post("c", 9, epoch=5, live=False)], 5)  # an eligible post
    assert not abstained("b", [gone], 5)


def test_a_post_says_whether_its_member_is_restarting() -> None:
    for restarting in (True, False):
        v = post_value("n", "db-n", 7, 3, True, restarting=restarting)
        p = Post.parse({"value": v, "Session": "s"})
        assert p is not None and p.restarting is restarting and p.live
    assert "restarting" not in post_value("n", "db-n", 7, 3)  # only when true


def test_others_give_a_best_that_posted_late_its_own_wait() -> None:
    """The best posted 3.5 s into b's round (the last leader back in a restart round) and
    waits up to the timeout for its own missing peer: b does not run with less data before
    2 x timeout after it first saw that post, though its own round is long over."""
    posts = [post("a", 9000), post("b", 100)]
    everyone = {"a", "b", "c"}
    assert not decide("b", posts, everyone, 5, 4.5, 2.0, 0, ages={"a": 1.0}).acquire
    assert not decide("b", posts, everyone, 5, 6.9, 2.0, 0, ages={"a": 3.4}).acquire
    assert decide("b", posts, everyone, 5, 7.5, 2.0, 0, ages={"a": 4.0}).acquire
    assert decide("b", posts, everyone, 5, 4.5, 2.0, 0).acquire  # (without ages: as before)


def test_others_wait_and_the_lag_limit_holds_while_the_best_lives() -> None:
    posts = [post("a", 100), post("b", 300)]
    assert not decide("a", posts, {"a", "b"}, 5, 3.9, 2.0, 0).acquire
    assert decide("a", posts, {"a", "b"}, 5, 4.0, 2.0, 0).acquire  # the best did not run
    # behind by more than maximumLagOnFailover: never while the best is live
    assert not decide("a", posts, {"a", "b"}, 5, 60.0, 2.0, 150).acquire
    assert decide("a", posts, {"a", "b"}, 5, 4.0, 2.0, 250).acquire
    # the best's session ended: the next best runs
    assert decide("a", [post("a", 100), post("b", 300, live=False)], {"a"}, 5, 0, 2.0,
                  150).acquire
    # a member that abstains never runs
    assert not decide("a", [post("a", 100, eligible=False)], {"a"}, 5, 9, 2.0, 0).acquire


def test_a_remembered_best_keeps_a_lagging_member_out_until_its_check_fails() -> None:
    """maximumLagOnFailover against the peers' last posts of this failover (PeerMemory),
    not only the live ones: a best candidate backing off after a failed promote."""
    mem, ok = PeerMemory(), {"a": "passing", "b": "passing"}
    mem.note("a", [post("a", 100), post("b", 5000)], ok, 5, now=0.0)  # b live: the round
    gone = [post("a", 100), post("b", 5000, live=False)]  # b's promote failed
    mem.note("a", gone, ok, 5, now=1.0)
    (b,) = mem.ahead(ok, 1.0, 60.0)
    assert b.service_id == "b"
    out = decide("a", gone, {"a", "b"}, 5, 30.0, 0.5, 100, remembered=[b])
    assert not out.acquire and "not running now" in out.why and out.best == "b"
    assert decide("a", gone, {"a", "b"}, 5, 30.0, 0.5, 100).acquire  # what it did before
    assert decide("a", gone, {"a", "b"}, 5, 30.0, 0.5, 0, remembered=[b]).acquire  # no limit
    assert decide("a", gone, {"a", "b"}, 5, 30.0, 0.5, 4900, remembered=[b]).acquire
    # too old: a peer that still runs posts again within stale_after
    assert mem.ahead(ok, 62.0, 60.0) == []
    # its check fails once: forgotten for good, even when it passes again
    mem.note("a", gone, {"a": "passing", "b": "critical"}, 5, now=2.0)
    mem.note("a", gone, ok, 5, now=3.0)
    assert mem.ahead(ok, 3.0, 60.0) == []
    # ... until it posts again (a restarted peer: its new post replaces the old one)
    mem.note("a", [post("a", 100), post("b", 7, at=2.0)], ok, 5, now=4.0)
    mem.note("a", [post("a", 100), post("b", 7, at=2.0, live=False)], ok, 5, now=4.0)
    assert [p.position for p in mem.ahead(ok, 4.0, 60.0)] == [7]
    # an abstaining post counts for nothing; a deregistered peer neither
    mem.note("a", [post("b", 9000, at=3.0, eligible=False, live=False)], ok, 5, now=5.0)
    assert mem.ahead(ok, 5.0, 60.0) == []
    # posts of an earlier failover (epoch_seen below the last promoted leader's) never count
    mem.note("a", [post("b", 9000, epoch=4, live=False, at=4.0)], ok, 5, now=6.0)
    assert mem.ahead(ok, 6.0, 60.0) == []
    # a member that never saw a promoted leader (just started) trusts only live posts
    fresh = PeerMemory()
    fresh.note("a", [post("b", 9000, epoch=1, live=False)], ok, 0, now=0.0)
    assert fresh.ahead(ok, 0.0, 60.0) == []
    # a newer promoted leader starts a new episode: everything is forgotten
    mem.note("a", [post("b", 9000, epoch=5, at=5.0)], ok, 5, now=7.0)
    mem.note("a", [post("b", 9000, epoch=5, at=5.0, live=False)], ok, 6, now=7.0)
    assert mem.ahead(ok, 7.0, 60.0) == []


def test_epoch_file_only_grows_and_survives(tmp_path: Path) -> None:
    path = state_path(str(tmp_path / "st"), "service/db/leader", "db-n1")
    assert path.parent == tmp_path / "st" and "/" not in path.name
    store = EpochStore(path)
    assert store.seen == 0
    assert store.note(4) and not store.note(3) and store.seen == 4
    assert EpochStore(path).seen == 4  # a restarted supervisor remembers it
    path.write_text("garbage")
    assert EpochStore(path).seen == 0  # unreadable: starts from the catalog's


def test_a_lost_acquire_attempt_is_persisted_but_not_seen(tmp_path: Path) -> None:
    """An attempt's epoch is on disk before it is used and the next attempt goes past it,
    but the epoch a member's rounds and posts carry (``seen``) stays the highest one in
    use: a loser of a simultaneous start must not count its peers' next posts as stale."""
    store = EpochStore(tmp_path / "e.json")
    store.note(1)  # the leader's
    first = store.next_epoch(0)  # tried while the watch did not show the leader yet
    store.claim(first)
    second = store.next_epoch(0)
    store.claim(second)
    assert (first, second) == (2, 3) and store.seen == 1
    assert store.next_epoch(1) == 4  # past every epoch tried
    again = EpochStore(tmp_path / "e.json")  # a restarted supervisor
    assert again.next_epoch(0) == 4 and again.seen == 1  # on disk: never written twice
    store.note(4)  # a holder at 4 (ours, once an attempt wins)
    assert store.seen == 4 and store.next_epoch(4) == 5


def test_no_leader_extension_never_revives_a_lapsed_lease() -> None:
    now = [100.0]
    lease = Lease(3.0, margin=0.6, clock=lambda: now[0])
    assert lease.start(sent_at=100.0) and lease.deadline == 102.4
    now[0] = 101.0
    assert lease.extend(100.0 + 8.0) and lease.deadline == 108.0
    assert lease.extend(104.0) and lease.deadline == 108.0  # never earlier
    now[0] = 108.5
    assert not lease.valid() and not lease.extend(120.0)
