"""Candidacy: when the lock is free, the most up-to-date member should win it.

Each member posts ``{node, service_id, position, epoch_seen, at, eligible}`` (and
``restarting``, see rounds.py's restart round) under
``<lock key>/candidates/<service id>``, acquired with its own session (the post stops
being *live* when the member's session ends: its check failed or it went away). This module
holds only the decision, a pure function of what the member read, so it can be tested
without a catalog; rounds.py does the reading and writing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

UNKNOWN = -1  # position of a member whose hook printed nothing: lowest


@dataclass
class Round:
    """One candidacy round: from the moment this member sees the lock free until a holder
    appears."""

    start: float
    epoch: int  # the highest epoch known when it began: posts older than it do not count
    posted_at: float | None = None
    session: str | None = None  # the session our post was acquired with
    eligible: bool = False
    position: int | None = None
    why: str = ""  # the last decision, logged when it changes
    #: service ID -> (its post's ``at``, when we first saw that post live): see decide's
    #: ``ages``
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Post:
    """One member's candidacy post, as read from the posts' prefix in the KV."""

    service_id: str
    node: str
    position: int  # UNKNOWN when the member could not tell
    epoch_seen: int
    eligible: bool  # False: it abstains this round (hook refused, stopping)
    live: bool  # the key is held by the member's session
    at: float = 0.0  # when the member wrote it (its wall clock): tells two posts apart
    #: its member started less than 2 x sessionTTL ago and has seen no leader alive since
    #: (rounds.py: a restart round lasts only while every live candidate says so)
    restarting: bool = False

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> Post | None:
        v = entry.get("value") or {}
        sid = v.get("service_id")
        if not isinstance(sid, str) or not sid:
            return None
        pos = v.get("position")
        epoch = v.get("epoch_seen")
        return cls(service_id=sid, node=str(v.get("node", "")),
                   position=pos if isinstance(pos, int) and not isinstance(pos, bool)
                   else UNKNOWN,
                   epoch_seen=epoch if isinstance(epoch, int) else 0,
                   eligible=v.get("eligible", True) is not False,
                   live=bool(entry.get("Session")),
                   at=float(v["at"]) if isinstance(v.get("at"), (int, float)) else 0.0,
                   restarting=v.get("restarting") is True)

    def same_post(self, other: Post) -> bool:
        """The same post (written once), whether or not it is live now."""
        return (self.at, self.position, self.epoch_seen, self.eligible) == \
            (other.at, other.position, other.epoch_seen, other.eligible)


def post_value(node: str, service_id: str, position: int | None, epoch_seen: int,
               eligible: bool = True, restarting: bool = False) -> dict[str, Any]:
    value = {"node": node, "service_id": service_id,
             "position": UNKNOWN if position is None else position,
             "epoch_seen": epoch_seen, "at": round(time.time(), 3), "eligible": eligible}
    if restarting:
        value["restarting"] = True
    return value


def abstained(sid: str, posts: list[Post], since_epoch: int) -> bool:
    """``sid``'s post abstains (``eligible: false``) and was written at ``since_epoch``
    or later, live or not. For the leader a member followed from ``since_epoch`` on, that
    is the post a stopping member writes before it releases the lock: it left on purpose
    (a hand-over), and it says not to wait for it. A catalog wipe leaves no such post."""
    return any(p.service_id == sid and not p.eligible and p.epoch_seen >= since_epoch
               for p in posts)


def rank(p: Post, prefer: str | None = None) -> tuple[int, int, str]:
    """Sort key: the highest position first; on a tie ``prefer`` (the leader the member
    followed last: moving the primary for no gain in data is a needless failover, e.g.
    after a catalog wipe where every member holds the same data), then the lowest ID."""
    return (-p.position, 0 if p.service_id == prefer else 1, p.service_id)


@dataclass
class _Seen:
    """A peer's last post in PeerMemory, with when it was last seen live."""

    post: Post
    seen: float  # monotonic: when we last saw it live (or first read it)
    dropped: bool = False  # its member's check was seen failing since: it counts no more


class PeerMemory:
    """The last post of each peer in this *episode* (from the loss of the leader we
    followed until a new holder is promoted), live or not.

    A round sees only the live posts: a best candidate whose promote failed loses its
    session, and its post stops being live while it backs off. maximumLagOnFailover
    must still keep a lagging member out then, so every member remembers each peer's
    last post, and ``ahead`` returns those that still count:

    - only posts of this episode: ``epoch_seen`` at least the epoch of the last promoted
      leader we saw (``floor``; a new floor forgets everything). Before we saw any
      promoted leader (we just started) only posts we saw live count;
    - only while the peer's check passes in the catalog; once we see it fail (critical,
      or the instance deregistered) that post never counts again, even if the check
      passes again later (a restarted peer may hold other data): the peer's next post
      replaces it;
    - a newer post of the peer replaces it (an abstaining one counts for nothing);
    - at most ``stale_after`` seconds after we last saw it live: a member that still
      runs posts again sooner (its backoff after a failed promote is at most the session
      TTL), so a post older than that belongs to a peer that stopped running although its
      check passes (broken election, stuck hook): availability wins again.
    """

    def __init__(self) -> None:
        self.floor = -1
        self._seen: dict[str, _Seen] = {}

    def note(self, me: str, posts: list[Post], health: dict[str, str], floor: int,
             now: float) -> None:
        """What one read of the posts and of the service's health showed."""
        if floor != self.floor:
            self.floor, self._seen = floor, {}
        peers = {p.service_id: p for p in posts if p.service_id != me}
        for sid in set(self._seen) - set(peers):
            del self._seen[sid]  # withdrawn: it followed a promoted leader
        for sid, p in peers.items():
            old = self._seen.get(sid)
            if old is not None and old.post.same_post(p):
                old.post = p  # its liveness may have changed
                if p.live:
                    old.seen = now
            elif p.epoch_seen < floor or (floor <= 0 and not p.live):
                self._seen.pop(sid, None)  # replaced by a post that does not count
            else:
                self._seen[sid] = _Seen(p, now)
        for sid, e in self._seen.items():
            if health.get(sid) != "passing":
                e.dropped = True

    def ahead(self, health: dict[str, str], now: float, stale_after: float) -> list[Post]:
        """The remembered posts that are not live now and still count (see the class)."""
        return [e.post for sid, e in self._seen.items()
                if not e.post.live and e.post.eligible and not e.dropped
                and health.get(sid) == "passing" and now - e.seen <= stale_after]


@dataclass(frozen=True)
class Decision:
    """What `decide` says: run for the lock now or not, why (logged when it changes), and
    the best candidate it saw."""

    acquire: bool
    why: str
    best: str | None = None


PATIENCE = 3  # × timeout: how long a round waits for a peer it must not lose (see decide)


def decide(me: str, posts: list[Post], expected: set[str], round_epoch: int,
           elapsed: float, timeout: float, max_lag: int,
           patient: frozenset[str] | set[str] = frozenset(),
           prefer: str | None = None, remembered: list[Post] | None = None,
           ages: dict[str, float] | None = None) -> Decision:
    """Should member ``me`` (whose own post is among ``posts``) try to acquire now?

    - Posts count for this round when ``epoch_seen >= round_epoch`` (older ones were
      written while an earlier leader was known).
    - The best live eligible post runs once every peer in ``expected`` (the live peers
      this member knows of) has posted this round, or ``timeout`` after the round began;
      ``PATIENCE × timeout`` while a peer in ``patient`` is missing (the leader everybody
      followed, absent from a wiped catalog: it is likely the most up to date, and it has
      to register again, fence and post before it can run).
    - Any other member waits while the best one is live, for that wait plus ``timeout``,
      and at least ``2 x timeout`` after it first saw the best's post (``ages``: seconds
      since it first saw each peer's post live): a best that posted late (e.g. the last
      leader coming back in a restart round) waits up to ``timeout`` for its own missing
      peers from its own round's start, and the others must not run meanwhile with less
      data because their own round began earlier. After that it may run, unless it is
      behind the best by more than ``max_lag`` (0: no limit), in which case it waits as
      long as the best is live.
    - ``prefer`` breaks ties of position (see ``rank``); members that disagree on it can
      both run, and the lock then decides, as without candidacy.
    - ``remembered``: peers that are not running now but whose last post of this episode
      still counts (``PeerMemory.ahead``: e.g. a best candidate backing off after a failed
      promote, its check passing). A member behind one of them by more than ``max_lag``
      does not run either, whatever the live posts say.
    """
    current = {p.service_id: p for p in posts if p.epoch_seen >= round_epoch}
    mine = current.get(me)
    if mine is None or not mine.eligible:
        return Decision(False, "not a candidate this round")
    runners = sorted((p for p in current.values() if p.eligible and p.live),
                     key=lambda p: rank(p, prefer))
    if not runners:
        runners = [mine]
    if max_lag:
        for p in sorted(remembered or (), key=lambda p: rank(p, prefer)):
            if p.service_id != me and p.eligible and _lags(mine, p, max_lag):
                return Decision(False, f"{p.service_id} is not running now but passes its "
                                       f"check, and its last post was ahead by more than "
                                       f"maximumLagOnFailover", p.service_id)
    best = runners[0]
    missing = sorted(expected - set(current) - {me})
    limit = timeout * (PATIENCE if set(missing) & set(patient) else 1)
    if best.service_id == me:
        if not missing:
            return Decision(True, "best candidate, every peer posted", me)
        if elapsed >= limit:
            return Decision(True, f"best candidate; no post from {', '.join(missing)} "
                                  f"after {limit:g}s", me)
        return Decision(False, f"waiting for posts from {', '.join(missing)}", me)
    if max_lag and _lags(mine, best, max_lag):
        return Decision(False, f"{best.service_id} is live and ahead by more than "
                               f"maximumLagOnFailover", best.service_id)
    best_age = (ages or {}).get(best.service_id)
    if elapsed < limit + timeout or (best_age is not None and best_age < 2 * timeout):
        return Decision(False, f"{best.service_id} is ahead", best.service_id)
    return Decision(True, f"{best.service_id} did not take the lock in time",
                    best.service_id)


def _lags(mine: Post, other: Post, max_lag: int) -> bool:
    """``mine`` is behind ``other`` by more than ``max_lag`` (an unknown position lags
    behind any known one)."""
    if mine.position == UNKNOWN:
        return other.position != UNKNOWN
    return other.position - mine.position > max_lag
