"""The candidacy round: while the lock is free, post our position and read the others'.

The decision itself is candidacy.decide (a pure function); this part does the reading and
writing around it, so the most up-to-date member tries to acquire first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from autopilot.aio import Backoff
from autopilot.election import candidacy, lock
from autopilot.election.base import CALL_TIMEOUT, ElectionState, last_line, log
from autopilot.election.candidacy import Round

POLL = 0.1  # a waiting round reads the posts and the peers' health this often, at least
POSTS_WAIT = 2.0  # the posts watch's blocking query: short, a round lasts a second or so


class Candidate(ElectionState):
    """Part of :class:`Election`: the candidacy round."""

    async def _position(self) -> int | None | bool:
        """The position hook's answer: an int, None (eligible, unknown) or False (not a
        candidate this round)."""
        if not self.ecfg.position:
            return None
        result = await self._hook("position", self.ecfg.position, "replica", None)
        if not result.ok:
            log.info("position hook refused: not a candidate this round", job=self.job,
                     rc=result.rc, timed_out=result.timed_out)
            return False
        text = last_line(result.output)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            log.error("position hook printed no integer: not a candidate this round",
                      job=self.job, output=text[:200])
            return False

    async def _post(self, position: int | None, *, eligible: bool, epoch: int) -> bool:
        sid = self.session
        if not sid:
            return False
        rnd = self._round
        value = candidacy.post_value(self.ctx.hostname, self.service_id, position, epoch,
                                     eligible, restarting=rnd is not None and self._fresh(rnd))
        try:
            ok = await self._call(lambda c: lock.put(c, self.post_key, value, session=sid,
                                                     timeout=CALL_TIMEOUT),
                                  timeout=CALL_TIMEOUT + 0.5)
        except lock.SessionGone:
            self._lose(sid, "session invalidated (candidacy post)")
            return False
        except Exception as exc:  # noqa: BLE001 - retried by the next step
            log.warning("candidacy post failed", job=self.job, error=str(exc) or repr(exc))
            return False
        self._posted = self._posted or bool(ok)
        return bool(ok)

    async def _clear_post(self) -> None:
        if not self._posted:
            return
        self._posted = False
        with contextlib.suppress(Exception):
            await self._call(lambda c: lock.delete(c, self.post_key, timeout=CALL_TIMEOUT),
                             timeout=CALL_TIMEOUT + 0.5)

    async def _candidacy(self) -> bool:
        """The lock is free: post our position, read the others', and say whether we may
        try to acquire now (see candidacy.decide). False: the step ends, a later one
        (``_poll_at``) looks again."""
        now = time.monotonic()
        rnd = self._round
        if rnd is None:
            rnd = self._round = Round(start=now, epoch=self.epochs.seen)
        if rnd.posted_at is None or rnd.session != self.session or (
                not rnd.eligible and now - rnd.posted_at >= 1.0):
            pos: int | None | bool
            if rnd.posted_at is None and self._detach_position is not None:
                # reported by the detach hook that opened this round (watch.py)
                pos, self._detach_position = self._detach_position, None
            else:
                pos = await self._position()
            eligible = pos is not False
            position = pos if isinstance(pos, int) and not isinstance(pos, bool) else None
            if not await self._post(position, eligible=eligible, epoch=rnd.epoch):
                self._poll_at = time.monotonic() + 0.2
                return False
            rnd.posted_at, rnd.eligible, rnd.position = time.monotonic(), eligible, position
            rnd.session = self.session
            log.info("candidacy posted", job=self.job, position=position, eligible=eligible,
                     epoch_seen=rnd.epoch)
        if not rnd.eligible:
            self._poll_at = rnd.posted_at + 1.0
            return False
        try:
            entries, health = await asyncio.gather(
                self._call(lambda c: lock.read_prefix(c, self.posts_prefix,
                                                      timeout=CALL_TIMEOUT),
                           timeout=CALL_TIMEOUT + 0.5),
                self._call(lambda c: lock.service_health(c, self.job, timeout=CALL_TIMEOUT),
                           timeout=CALL_TIMEOUT + 0.5))
        except Exception as exc:  # noqa: BLE001 - look again shortly
            log.warning("candidacy read failed", job=self.job, error=str(exc) or repr(exc))
            self._poll_at = time.monotonic() + 0.2
            return False
        posts = [p for p in (candidacy.Post.parse(e) for e in entries) if p is not None]
        for p in posts:
            if p.live:
                self.epochs.note(p.epoch_seen)
        expected = {sid for sid, st in health.items() if st == "passing"}
        patient: set[str] = set()
        prev = self._last_leader
        left = prev is not None and self._left_on_purpose(prev, posts)
        wait_for_prev = prev is not None and health.get(prev) != "critical" and not left
        restart = self._restart_round(rnd, posts)
        if restart:
            # wait for every registered member and longest for the last leader, whatever
            # their checks say; a post that is not live was written before the restart
            # and says nothing of what its member holds now: it does not count as posted
            posts = [p for p in posts if p.live or p.service_id == self.service_id]
            expected |= set(health)
            # the last promoted holder the key names; without one (a catalog wipe took
            # the key, or a holder that gave up emptied it) the holder we followed
            holder = self._last_holder()
            prev = holder or prev
            wait_for_prev = prev is not None and (holder is not None or not left)
        if prev and prev != self.service_id and wait_for_prev:
            # the leader we followed and whose check did not fail: after a wipe it must
            # register again, fence and get a session before it can post; wait longer
            expected.add(prev)
            patient.add(prev)
        now = time.monotonic()
        self._peers.note(self.service_id, posts, health, self._promoted_epoch, now)
        remembered = self._peers.ahead(health, now, self._stale_after())
        for p in posts:  # when we first saw each live post (a peer's round began by then)
            if p.live and rnd.seen.get(p.service_id, (None, 0.0))[0] != p.at:
                rnd.seen[p.service_id] = (p.at, now)
        decision = candidacy.decide(self.service_id, posts, expected, rnd.epoch,
                                    now - rnd.start, self.ecfg.candidacy_timeout,
                                    self.ecfg.maximum_lag_on_failover, patient,
                                    prefer=prev, remembered=remembered,
                                    ages={sid: now - t for sid, (_, t) in rnd.seen.items()})
        if decision.why != rnd.why:
            rnd.why = decision.why
            log.info("candidacy", job=self.job, run=decision.acquire, why=decision.why)
        if not decision.acquire:
            # a post (or a post's session ending) wakes us at once (_watch_posts); the poll
            # is for what the posts do not show: a silent peer's check turning critical,
            # and the deadlines of candidacy.decide
            self._poll_at = time.monotonic() + POLL
            watch = self._posts_watch
            if watch is None or watch.done() or watch.get_name() != self._watch_name(rnd):
                if watch is not None and not watch.done():
                    watch.cancel()  # an earlier round's, still parked in its query
                self._posts_watch = asyncio.create_task(self._watch_posts(rnd),
                                                        name=self._watch_name(rnd))
                self._tasks.append(self._posts_watch)
            return False
        return True

    def _left_on_purpose(self, prev: str, posts: list[candidacy.Post]) -> bool:
        """The leader we followed last left on purpose: we saw it release the lock naming
        a successor, or its post abstains since it led (a stopping member posts
        ``eligible: false`` before it releases). Its supervisor deregistered it, as a
        catalog wipe would: but a wipe leaves neither sign, and a leader that handed over
        is not coming back to post. Waiting PATIENCE x candidacyTimeout for it only
        stretched the write gap when the successor gave up (its promote failed, its
        check flapped): 13.4 s once at load 50 in the PostgreSQL chaos test."""
        return prev == self._handed_over_by or \
            candidacy.abstained(prev, posts, self._last_leader_epoch)

    def _fresh(self, rnd: Round) -> bool:
        """Round ``rnd`` begins less than twice the session TTL after this supervisor
        started, and since it started it saw no leader alive: it found the lock free, or
        held by a holder already promoted (``_born_holder``: maybe a dead primary whose
        session has not lapsed yet, its check still passing until its TTL), and saw
        nobody promoted since. A member that led itself (``_last_leader``) saw one.

        Twice: a dead holder's session lapses at the latest twice its TTL after its last
        renew (Consul may wait that long), whatever its check's TTL, and that renew came
        before this member started; its round begins by then."""
        return (rnd.start - self._born < 2 * self.ttl and not self._saw_live_leader
                and self._last_leader != self.service_id)

    def _restart_round(self, rnd: Round, posts: list[candidacy.Post]) -> bool:
        """A fresh round (``_fresh``) while no live candidate of another member says it
        is not restarting (its post's ``restarting``). No check tells who is coming back
        after a whole-cluster restart: every old one may have lapsed, and a member
        registered again is critical until its first pass. The round waits for every
        registered member (candidacyTimeout) and for the last promoted holder the key
        names (PATIENCE x candidacyTimeout), else the first member back wins alone with
        whatever data it kept.

        Two orders lead there: the lock was free when the member started (every old
        session had lapsed), or it was still held by the dead primary's session and the
        member followed that holder until it lapsed (it must not then keep the ordinary
        rules: its first round would see no live peer and it would win alone).

        A live, eligible post of a member that saw a leader alive (it ran before, or it
        saw a promotion) ends the restart round for us: the cluster did not restart as a
        whole, this is an ordinary failover, which that member sees with the ordinary
        rules (a member started a second before its primary died would otherwise wait
        3 x candidacyTimeout for it: chaos test_s4 caught that in a first version)."""
        if not self._fresh(rnd):
            return False
        return not any(p.live and p.eligible and not p.restarting
                       and p.service_id != self.service_id and p.epoch_seen >= rnd.epoch
                       for p in posts)

    def _last_holder(self) -> str | None:
        """The service ID the free key still names, if that holder was promoted: the
        leader before a restart of the whole cluster (a released key keeps its value)."""
        h = self.holder
        if h is None or h.held or not h.promoted:
            return None
        sid = h.info.get("service_id")
        return sid if isinstance(sid, str) and sid else None

    def _stale_after(self) -> float:
        """How long a peer's last post counts after we last saw it live (PeerMemory): a
        peer that still runs posts again sooner: its promote and demote hooks, its backoff
        (at most the session TTL), its position hook, a session, with room to spare."""
        return 2 * self.ttl + 3 * self.ecfg.hook_timeout

    def _watch_name(self, rnd: Round) -> str:
        return f"election-posts-{self.job}-{id(rnd)}"

    async def _watch_posts(self, rnd: Round) -> None:
        """While round ``rnd`` lasts, wake the decision loop whenever the posts change: a
        blocking query on the posts' prefix, so the best candidate runs as soon as the last
        live peer has posted (a 50 ms poll cost up to 50 ms of every failover)."""
        from autopilot.discovery.poll import BlockingQuery

        assert self.ctx.consul is not None
        query = BlockingQuery(self.ctx.consul, f"/v1/kv/{self.posts_prefix}",
                              [("recurse", "1")], wait=POSTS_WAIT, timeout=CALL_TIMEOUT,
                              retry=Backoff(0.1, 0.5))
        try:
            # the first answer is a plain read: it may already hold a post that arrived
            # after the step's own read, so it wakes the loop too
            while self._round is rnd and not self.closed:
                try:
                    await query.poll()
                except Exception:  # noqa: BLE001 - the poller backs off; the loop still polls
                    continue
                if self._round is rnd:
                    self._wake.set()
        finally:
            query.close()
            with contextlib.suppress(ValueError):
                self._tasks.remove(asyncio.current_task())  # type: ignore[arg-type]
