"""Candidacy: when the lock is free, the most up-to-date member should win it.

Each member posts ``{node, service_id, position, epoch_seen, at, eligible}`` under
``<lock key>/candidates/<service id>``, acquired with its own session (the post stops
being *live* when the member's session ends: its check failed or it went away). This module
holds only the decision, a pure function of what the member read, so it can be tested
without a catalog; rounds.py does the reading and writing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Post:
    service_id: str
    node: str
    position: int  # UNKNOWN when the member could not tell
    epoch_seen: int
    eligible: bool  # False: it abstains this round (hook refused, stopping)
    live: bool  # the key is held by the member's session

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
                   live=bool(entry.get("Session")))


def post_value(node: str, service_id: str, position: int | None, epoch_seen: int,
               eligible: bool = True) -> dict[str, Any]:
    return {"node": node, "service_id": service_id,
            "position": UNKNOWN if position is None else position,
            "epoch_seen": epoch_seen, "at": round(time.time(), 3), "eligible": eligible}


def rank(p: Post, prefer: str | None = None) -> tuple[int, int, str]:
    """Sort key: the highest position first; on a tie ``prefer`` (the leader the member
    followed last: moving the primary for no gain in data is a needless failover, e.g.
    after a catalog wipe where every member holds the same data), then the lowest ID."""
    return (-p.position, 0 if p.service_id == prefer else 1, p.service_id)


@dataclass(frozen=True)
class Decision:
    acquire: bool
    why: str
    best: str | None = None


PATIENCE = 3  # × timeout: how long a round waits for a peer it must not lose (see decide)


def decide(me: str, posts: list[Post], expected: set[str], round_epoch: int,
           elapsed: float, timeout: float, max_lag: int,
           patient: frozenset[str] | set[str] = frozenset(),
           prefer: str | None = None) -> Decision:
    """Should member ``me`` (whose own post is among ``posts``) try to acquire now?

    - Posts count for this round when ``epoch_seen >= round_epoch`` (older ones were
      written while an earlier leader was known).
    - The best live eligible post runs once every peer in ``expected`` (the live peers
      this member knows of) has posted this round, or ``timeout`` after the round began;
      ``PATIENCE × timeout`` while a peer in ``patient`` is missing (the leader everybody
      followed, absent from a wiped catalog: it is likely the most up to date, and it has
      to register again, fence and post before it can run).
    - Any other member waits while the best one is live, for that wait plus ``timeout``;
      after that it may run, unless it is behind the best by more than ``max_lag`` (0: no
      limit), in which case it waits as long as the best is live.
    - ``prefer`` breaks ties of position (see ``rank``); members that disagree on it can
      both run, and the lock then decides, as without candidacy.
    """
    current = {p.service_id: p for p in posts if p.epoch_seen >= round_epoch}
    mine = current.get(me)
    if mine is None or not mine.eligible:
        return Decision(False, "not a candidate this round")
    runners = sorted((p for p in current.values() if p.eligible and p.live),
                     key=lambda p: rank(p, prefer))
    if not runners:
        runners = [mine]
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
    behind = best.position - mine.position if mine.position != UNKNOWN or \
        best.position == UNKNOWN else None
    if max_lag and (behind is None or behind > max_lag):
        return Decision(False, f"{best.service_id} is live and ahead by more than "
                               f"maximumLagOnFailover", best.service_id)
    if elapsed < limit + timeout:
        return Decision(False, f"{best.service_id} is ahead", best.service_id)
    return Decision(True, f"{best.service_id} did not take the lock in time",
                    best.service_id)
