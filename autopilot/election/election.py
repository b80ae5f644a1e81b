"""One job's leader election: a Consul session bound to the job's own check, a KV lock,
fencing by a local lease deadline, and a graceful hand-over on shutdown.

All decisions happen in one task (``_main``), one step at a time; helpers only record
what they observed (the key's holder, a renew, a health event) and wake it. Every step
checks the lease first, so a leader resumed after a freeze demotes before anything else.
See docs/stateful.md for the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import structlog

from autopilot import events as ev
from autopilot.aio import Backoff, backoff_delay, cancel_all
from autopilot.config.model import ElectionConfig, JobConfig
from autopilot.context import Context
from autopilot.election import candidacy, lock
from autopilot.election.epochs import EpochStore, state_path
from autopilot.election.lease import Lease, default_margin
from autopilot.jobs.hooks import HookResult, run_hook
from autopilot.jobs.process import child_env

log = structlog.get_logger("autopilot.election")

WATCH_WAIT = 10.0  # blocking query wait on the election key, seconds
CALL_TIMEOUT = 3.0  # ordinary catalog calls (create, acquire, release, destroy)
ENV_KEYS = ("AUTOPILOT_LEADER_ADDRESS", "AUTOPILOT_LEADER_PORT", "AUTOPILOT_LEADER_NODE",
            "AUTOPILOT_LEADER_EPOCH")


def lease_length(session_ttl: float, job: JobConfig) -> float:
    """How long a successful renew lets us act as the leader (before the margin).

    The catalog invalidates the session when its TTL lapses, but also as soon as the
    service check it is bound to turns critical: a check TTL shorter than the session TTL
    would let the lock go first. Passes reach the catalog every health interval while the
    check passes, so the check cannot lapse earlier than ``ttl - interval`` after a moment
    we reached the catalog (a check that stops passing while we can still reach the catalog
    invalidates the session under our eyes: the key watch sees it at once)."""
    length = session_ttl
    health = job.health
    if health is not None and health.ttl > 0:
        check_bound = health.ttl - health.interval if health.ttl > health.interval \
            else health.ttl / 2
        length = min(length, check_bound)
    return length


@dataclass
class _Round:
    """One candidacy round: from the moment this member sees the lock free until a holder
    appears."""

    start: float
    epoch: int  # the highest epoch known when it began: posts older than it do not count
    posted_at: float | None = None
    session: str | None = None  # the session our post was acquired with
    eligible: bool = False
    position: int | None = None
    why: str = ""  # the last decision, logged when it changes


def _last_line(output: str) -> str:
    """A query hook's answer (identity, position): the last non-empty line it printed
    (stdout and stderr arrive together: a warning printed before it does not count)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Election:
    """Component: ``start()``, ``before_shutdown()`` (hand-over), ``stop()``."""

    fatal = False  # a failure to start is logged; autopilot runs on (see autopilot/component.py)

    def __init__(self, ctx: Context, job: JobConfig) -> None:
        assert job.election is not None
        self.ctx = ctx
        self.cfg = job
        self.ecfg: ElectionConfig = job.election
        self.job = job.name
        self.key = f"election.{job.name}"
        self.lock_key = self.ecfg.key or f"service/{job.name}/leader"
        self.service_id = ctx.service_id(job.name)
        self.check_id = f"service:{self.service_id}"
        self.ttl = float(max(10, round(self.ecfg.session_ttl)))  # what the catalog enforces
        self.lease = Lease(lease_length(self.ttl, job))
        self.renew_interval = min(self.ecfg.renew_interval or self.ttl / 3, self.lease.ttl / 3)
        #: while the catalog answers "No cluster leader", the lease may last this long after
        #: the last renew sent: never past what the session TTL itself guarantees
        safe = self.ttl - default_margin(self.ttl)
        tol = self.ecfg.no_leader_tolerance
        self.no_leader_tolerance = safe if tol is None else min(max(tol, 0.0), safe)
        self.epochs = EpochStore(state_path(self.ecfg.state_dir, self.lock_key,
                                            self.service_id))
        #: candidacy (the most up-to-date member runs first) needs a position or detach hook
        self.candidacy = bool(self.ecfg.position or self.ecfg.detach)
        self.posts_prefix = f"{self.lock_key}/candidates/"
        self.post_key = f"{self.posts_prefix}{self.service_id}"
        # observed state
        #: None until the job reports: then the catalog decides (a session bound to a
        #: critical or missing check cannot be created)
        self.healthy: bool | None = None
        self.maintenance = False
        self.session: str | None = None
        self.own_sessions: set[str] = set()  # every session this member created or adopted
        self.session_lost = False
        self.holder: lock.Holder | None = None
        self.holder_index = 0
        self.watch_ok = False  # at least one read of the key succeeded
        # decided state
        self.holding = False  # we acquired the lock and have not released it
        self.primary = False  # ELECTED published and not yet DEMOTED
        self.announced: tuple[str, int] | None = None  # leader identity we last published
        self.stopping = False
        self.handed_over = False
        self.closed = False  # loops end (a cancel can be swallowed: see tasks.py)
        self._wake = asyncio.Event()
        self._former_primary = False
        self._free_since = 0.0  # when the key was last seen losing its holder
        self._not_before = 0.0  # no candidacy before (after a failed promote)
        self._failures = 0
        self._create_retry = 0.0
        self._acquire_retry = 0.0
        self._acquire_backoff = Backoff(0.05, 1.0, jitter=False)
        self._round: _Round | None = None  # the candidacy round while the lock is free
        self._posted = False  # our post exists under posts_prefix
        self._last_leader: str | None = None  # service ID of the leader we last followed
        self._abandoned: set[str] = set()  # previous-incarnation sessions we refused
        self._pending: dict[str, str | None] = {}  # session -> key to release, then destroy
        self._cleaner: asyncio.Task | None = None
        self._no_leader_since = 0.0
        self._poll_at = 0.0  # the candidacy looks again at the posts then
        self._tasks: list[asyncio.Task] = []
        self._main_task: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None
        self._sub: ev.Subscription | None = None
        self._transition = asyncio.Lock()

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.ctx.consul is None:
            log.error("election needs consul; disabled", job=self.job)
            return
        self._sub = self.ctx.bus.subscribe(f"election.{self.job}")
        self.ctx.facts.setdefault(self.job, {}).setdefault("role", None)
        self._tasks = [asyncio.create_task(self._events(), name=f"election-events-{self.job}"),
                       asyncio.create_task(self._watch(), name=f"election-watch-{self.job}")]
        self._main_task = asyncio.create_task(self._main(), name=f"election-{self.job}")

    async def before_shutdown(self) -> None:
        """Hand-over: demote, release the lock and destroy the session, so a replica's
        blocking query wakes and it acquires at once (a release carries no lock-delay)."""
        if self.handed_over:
            return
        self.stopping = True
        self._wake.set()
        if self._main_task is not None:
            # let the current step finish (a promote in progress is cancelled by _guarded,
            # a demote hook runs to its end) rather than kill a hook half-way
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._main_task),
                                       self.ecfg.hook_timeout + 2 * CALL_TIMEOUT)
            await cancel_all([self._main_task])
        async with self._transition:
            if self.candidacy and self.session and not self.session_lost:
                # tell the others not to wait for our candidacy post in the coming round
                await self._post(None, eligible=False, epoch=self.epochs.seen)
            if self.primary or self.holding:
                await self._step_down("shutdown")
            await self._drop_session()
        self.handed_over = True

    async def stop(self) -> None:
        if self.ctx.consul is not None and not self.handed_over:
            await self.before_shutdown()
        self.closed = True
        if self._pending and self._cleaner is not None and not self._cleaner.done():
            # a release or destroy the catalog did not confirm yet: a last short chance
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._cleaner), 2.0)
        await cancel_all([*self._tasks, self._keeper, self._main_task, self._cleaner])
        self._tasks = []
        self._keeper = None
        self._cleaner = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    # ---- observers: record and wake ---------------------------------------------------

    async def _events(self) -> None:
        assert self._sub is not None
        while not self.closed:
            event = await self._sub.get()
            if event.source == self.job:
                if event.code == ev.HEALTHY:
                    if self.session is None:
                        self._create_retry = 0.0  # the check just passed: try right away
                    self.healthy = True
                elif event.code in (ev.UNHEALTHY, ev.STOPPING, ev.STOPPED, ev.EXIT_FAILED,
                                    ev.EXIT_SUCCESS):
                    self.healthy = False
                else:
                    continue
                self._wake.set()
            elif event.source == ev.GLOBAL and event.code in (ev.ENTER_MAINTENANCE,
                                                              ev.EXIT_MAINTENANCE):
                self.maintenance = event.code == ev.ENTER_MAINTENANCE
                self._wake.set()

    async def _watch(self) -> None:
        """Blocking queries on the election key (the shared poller, discovery/poll.py);
        records its holder.

        The poller applies Consul's index rules: an index that goes backwards resets to 0,
        a failed query is followed by a plain read, and the registration resets every query
        at once when it finds that the catalog lost our service (a wipe), so the watch never
        waits out an index the new catalog has not reached. Its retries here are short
        (0.1 s doubling to 0.5 s): one key per member, and a primary must learn quickly
        that the lock is gone."""
        from autopilot.discovery.poll import BlockingQuery

        assert self.ctx.consul is not None
        query = BlockingQuery(self.ctx.consul, f"/v1/kv/{self.lock_key}", wait=WATCH_WAIT,
                              timeout=CALL_TIMEOUT, retry=Backoff(0.1, 0.5))
        seen = 0  # the highest index read since the catalog last went backwards
        try:
            while not self.closed:
                fresh = query.index == 0  # a plain read: the catalog's state right now
                try:
                    resp = await query.poll()
                except Exception as exc:  # noqa: BLE001 - unreachable catalog: the poller retries
                    log.warning("election key watch failed", job=self.job,
                                error=str(exc) or repr(exc))
                    continue
                holder = None
                if resp.code == 200:
                    entries = resp.json() or []
                    holder = lock.parse_entry(entries[0] if entries else None)
                backwards = resp.index < seen
                if backwards:
                    log.warning("catalog index went backwards: the catalog lost its state",
                                job=self.job, index=resp.index, before=seen)
                self._observe(resp.index, holder, force=backwards or fresh)
                seen = resp.index
        finally:
            query.close()

    def _observe(self, idx: int, holder: lock.Holder | None, *, force: bool = False) -> None:
        if idx < self.holder_index and not force:
            return  # older than what we already know (our own post-acquire read)
        self.holder_index = idx
        self.watch_ok = True
        if holder is not None and holder.held:
            self.epochs.note(holder.epoch)
        if holder != self.holder:
            if self.holder is not None and self.holder.held and not (holder and holder.held):
                self._free_since = time.monotonic()  # a lock-delay may start now
                self._create_retry = 0.0  # a candidate needs a session: try right away
            self.holder = holder
            self._wake.set()

    async def _keep(self, session: str) -> None:
        """Renew the session; record each renew in the lease, or mark the session lost."""
        delay = self.renew_interval
        while self.session == session and not self.closed:
            await asyncio.sleep(min(delay, max(self.lease.remaining() / 2, 0.05)))
            if not self.lease.valid():
                self._lose(session, "lease expired before renew")
                return
            sent = time.monotonic()
            try:
                await self._call(lambda c: lock.renew_session(
                    c, session, timeout=max(0.2, min(self.lease.remaining() / 2, 3.0))),
                    timeout=max(0.3, min(self.lease.remaining() / 2 + 0.1, 3.5)))
                # (half the lease at most: a renew that Consul holds while it elects a
                # leader must leave time to see that our agent answers, see below)
            except lock.SessionGone:
                self._lose(session, "session invalidated")
                return
            except lock.NoLeader as exc:
                # nobody can take the lock while Consul has no leader, and a new leader
                # restarts the session timers: the lease may run on, up to what the session
                # TTL guarantees (docs/stateful.md, "Consul electing a new leader")
                self._tolerate_no_leader(str(exc))
                delay = 0.25
                continue
            except Exception as exc:  # noqa: BLE001 - verify before trusting the id again
                log.warning("session renew failed", job=self.job, error=str(exc) or repr(exc))
                if await self._agent_answers():
                    # our agent answers, so our check passes keep reaching it: only the
                    # servers fail us (a raft election: Consul forwards to a dead leader,
                    # or holds the request until a new one is elected). The session can
                    # then end only by its TTL, counted from our last successful renew.
                    self._tolerate_no_leader(str(exc) or repr(exc))
                    delay = 0.25
                    continue
                try:
                    exists = await self._call(lambda c: lock.session_exists(
                        c, session, timeout=1.0), timeout=1.5)
                except Exception:  # noqa: BLE001 - still unknown: the lease decides
                    exists = True
                if not exists:
                    self._lose(session, "session gone")
                    return
                delay = 0.5
                continue
            if self.session != session:
                return
            if not self.lease.grant(sent):
                self._lose(session, "renewed only after the lease ran out")
                return
            if self._no_leader_since:
                log.info("consul has a leader again; lease renewed", job=self.job,
                         after=round(time.monotonic() - self._no_leader_since, 2))
                self._no_leader_since = 0.0
            delay = self.renew_interval

    async def _agent_answers(self) -> bool:
        """Does our Consul agent answer at all (a local endpoint, no server involved)?"""
        try:
            return await self._call(lambda c: lock.agent_answers(c, timeout=0.5), timeout=0.8)
        except Exception:  # noqa: BLE001 - unreachable: the ordinary lease applies
            return False

    def _tolerate_no_leader(self, error: str) -> None:
        if not self._no_leader_since:
            self._no_leader_since = time.monotonic()
            granted = self.lease.granted_at
            until = (granted + self.no_leader_tolerance) if granted is not None else 0.0
            log.warning("consul servers fail while our agent answers (no leader?): keeping "
                        "the lease within noLeaderTolerance", job=self.job, error=error,
                        primary=self.primary,
                        lease_left=round(max(until - time.monotonic(), 0.0), 2))
        if self.lease.granted_at is not None and self.no_leader_tolerance > 0:
            self.lease.extend(self.lease.granted_at + self.no_leader_tolerance)
            self._wake.set()  # the main loop's next timeout follows the new deadline

    def _lose(self, session: str, why: str) -> None:
        if self.session == session:
            log.warning("session lost", job=self.job, reason=why)
            self.session_lost = True
            self._wake.set()

    # ---- the decision loop -------------------------------------------------------------

    async def _main(self) -> None:
        while not self.stopping and not self.closed:
            try:
                async with self._transition:
                    await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad step must not end the election
                log.error("election step failed", job=self.job, error=repr(exc))
                await asyncio.sleep(0.5)
            timeout = self._next_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        candidates = [5.0]
        if self.holding or self.primary:
            candidates.append(self.lease.remaining())
        for t in (self._acquire_retry, self._create_retry, self._not_before, self._poll_at):
            if t > now:
                candidates.append(t - now)
        return max(0.01, min(candidates))

    def eligible(self) -> bool:
        return self.healthy is not False and not self.maintenance and not self.stopping

    def _leader_lost_reason(self) -> str | None:
        """Why this leader must step down now, or None. The lease comes first."""
        if not self.lease.valid():
            return "lease expired"
        if self.session_lost:
            return "session invalidated"
        if not self.eligible():
            return "stopping" if self.stopping else "unhealthy"
        if self.holder is not None and self.holder.session != self.session:
            return "lock held by another session"
        if self.holder is None and self.watch_ok:
            return "lock key deleted"
        return None

    async def _step(self) -> None:
        now = time.monotonic()
        if self.holding or self.primary:
            reason = self._leader_lost_reason()
            if reason:
                await self._step_down(reason)
            return
        if self.session_lost:
            await self._drop_session()
        await self._follow()
        free = self.holder is None or not self.holder.held
        if not free:
            self._round = None  # somebody holds the lock: the round (if any) is over
        if not self.eligible() or now < self._not_before:
            if self.session and not self.eligible():
                await self._drop_session()
            return
        if self.session is None:
            if now < self._create_retry:
                return
            if not await self._create_session():
                return
        free = self.holder is None or not self.holder.held  # (the watch may have read since)
        if free and now >= self._acquire_retry:
            if self.candidacy and (not self.watch_ok or not await self._candidacy()):
                return  # (no candidacy before the first read of the key: it may be held)
            await self._try_acquire()
        elif self._held_by_former_self() and now >= self._acquire_retry:
            await self._adopt()

    async def _follow(self) -> None:
        """A replica learns who leads; publishes leaderChanged when the holder changes, and
        detaches as soon as the lock leaves the holder it followed."""
        h = self.holder
        if (self.ecfg.detach and self.announced is not None and not self.primary
                and self.watch_ok and (h is None or not h.held or (
                    h.identity() != self.announced and not h.promoted))):
            await self._detach()
        if h is None or not h.held or h.session in self.own_sessions:
            return
        if h.session in self._abandoned:
            return  # our previous incarnation's session, being destroyed: nobody to follow
        if self._held_by_former_self():
            self._former_primary = True  # adopt it (below) or, if it lapses, fence first
            return
        if not h.promoted:
            return  # the holder is still promoting: follow it once it says it is primary
        ident = h.identity()
        if ident == self.announced:
            return
        self.announced = ident
        self._last_leader = h.info.get("service_id") or None
        leader = self._leader_dict(h)
        self._publish_role("replica", leader)
        if self._former_primary:
            # our previous incarnation led and its job may still act as the primary
            self._former_primary = False
            log.warning("another member leads now: demoting what our previous incarnation "
                        "promoted", job=self.job)
            await self._hook("demote", self.ecfg.demote, "replica", leader)
        log.info("leader changed", job=self.job, leader=leader)
        self.ctx.bus.publish(ev.Event(ev.LEADER_CHANGED, self.job,
                                      detail=f"{leader.get('node')} epoch {h.epoch}"))
        await self._clear_post()

    async def _detach(self) -> None:
        """The lock left the primary we followed (freed, deleted, or taken by a holder
        that is still promoting): stop replicating from it before anybody promotes."""
        self.announced = None
        self._publish_role("replica", None)
        log.info("the lock left the leader we followed: detaching", job=self.job,
                 leader=self._last_leader)
        assert self.ecfg.detach
        result = await self._hook("detach", self.ecfg.detach, "replica", None)
        if not result.ok:
            log.error("detach hook failed", job=self.job, rc=result.rc,
                      timed_out=result.timed_out)
        self.ctx.bus.publish(ev.Event(ev.LEADER_CHANGED, self.job, detail="detached"))

    # ---- candidacy ---------------------------------------------------------------------

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
        text = _last_line(result.output)
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
        value = candidacy.post_value(self.ctx.hostname, self.service_id, position, epoch,
                                     eligible)
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
            rnd = self._round = _Round(start=now, epoch=self.epochs.seen)
        if rnd.posted_at is None or rnd.session != self.session or (
                not rnd.eligible and now - rnd.posted_at >= 1.0):
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
        if prev and prev != self.service_id and health.get(prev) != "critical":
            # the leader we followed and whose check did not fail: after a wipe it must
            # register again, fence and get a session before it can post; wait longer
            expected.add(prev)
            patient.add(prev)
        decision = candidacy.decide(self.service_id, posts, expected, rnd.epoch,
                                    time.monotonic() - rnd.start,
                                    self.ecfg.candidacy_timeout,
                                    self.ecfg.maximum_lag_on_failover, patient,
                                    prefer=prev)
        if decision.why != rnd.why:
            rnd.why = decision.why
            log.info("candidacy", job=self.job, run=decision.acquire, why=decision.why)
        if not decision.acquire:
            self._poll_at = time.monotonic() + 0.05
            return False
        return True

    # ---- session -----------------------------------------------------------------------

    async def _create_session(self) -> bool:
        sent = time.monotonic()
        try:
            sid = await self._call(lambda c: lock.create_session(
                c, name=f"autopilot {self.service_id}", check_id=self.check_id, ttl=self.ttl,
                lock_delay=self.ecfg.lock_delay, timeout=CALL_TIMEOUT), timeout=CALL_TIMEOUT + 0.5)
        except Exception as exc:  # noqa: BLE001 - e.g. our check is not passing yet
            self._failures += 1
            self._create_retry = time.monotonic() + backoff_delay(self._failures + 1, 0.1, 1.0,
                                                                  jitter=False)
            log.debug("session create failed", job=self.job, error=str(exc))
            return False
        self._failures = 0
        self.session = sid
        self.own_sessions.add(sid)
        self.session_lost = False
        self.lease.start(sent)
        self._acquire_retry = 0.0
        self._acquire_backoff.reset()
        self._keeper = asyncio.create_task(self._keep(sid), name=f"election-renew-{self.job}")
        log.info("session created", job=self.job, session=sid)
        return True

    def _forget_session(self) -> str | None:
        sid, self.session = self.session, None
        self.session_lost = False
        self._posted = False  # the post goes with the session
        self._no_leader_since = 0.0
        self.lease.clear()
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        return sid

    async def _drop_session(self) -> None:
        sid = self._forget_session()
        if sid:
            try:
                await self._call(lambda c: lock.destroy_session(c, sid, timeout=1.5),
                                 timeout=2.0)
            except Exception as exc:  # noqa: BLE001 - retried until the catalog confirms
                self._abandon(sid, None, str(exc) or repr(exc))

    def _abandon(self, sid: str, key: str | None, why: str) -> None:
        """A session we no longer use but the catalog did not confirm ending (it had no
        leader, or was unreachable): release ``key`` with it (no lock-delay), then destroy
        it, retrying until the catalog answers. Until then the session may keep the lock
        (a new Consul leader restarts every session's TTL)."""
        if sid not in self._pending or key:
            self._pending[sid] = key or self._pending.get(sid)
        log.warning("will release and destroy the old session as soon as the catalog "
                    "answers", job=self.job, session=sid, error=why)
        if self._cleaner is None or self._cleaner.done():
            self._cleaner = asyncio.create_task(self._clean(),
                                                name=f"election-cleanup-{self.job}")

    async def _clean(self) -> None:
        delay = 0.1
        while self._pending:
            for sid, key in list(self._pending.items()):
                try:
                    if key:
                        await self._call(lambda c, k=key, s=sid: lock.release(
                            c, k, s, timeout=1.5), timeout=2.0)
                        self._pending[sid] = None
                    await self._call(lambda c, s=sid: lock.destroy_session(c, s, timeout=1.5),
                                     timeout=2.0)
                except Exception:  # noqa: BLE001 - not yet: try again shortly
                    continue
                self._pending.pop(sid, None)
                log.info("old session released and destroyed", job=self.job, session=sid)
                self._create_retry = 0.0  # the catalog answers again: compete at once
                self._wake.set()
            if self._pending:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    # ---- becoming and ceasing to be the leader -----------------------------------------

    async def _my_value(self) -> dict[str, Any]:
        facts = self.ctx.facts.get(self.job, {})
        address = facts.get("address")
        port = facts.get("port") or self.cfg.port
        if not address:
            svc = await self._call(lambda c: lock.agent_service(c, self.service_id, timeout=2.0),
                                   timeout=2.5)
            if svc:
                address = svc.get("Address") or ""
                port = port or svc.get("Port") or 0
        return {"node": self.ctx.hostname, "address": address or "", "port": int(port or 0),
                "service_id": self.service_id}

    async def _try_acquire(self) -> None:
        sid = self.session
        assert sid is not None
        try:
            # followers wait for `promoted: true` before following us (see _announce); the
            # epoch grows past every one seen, and is on disk before it can be used
            epoch = max(self.epochs.seen, self.holder.epoch if self.holder else 0) + 1
            self.epochs.note(epoch)
            value = {**await self._my_value(), "promoted": False, "epoch": epoch}
            got = await self._call(lambda c: lock.acquire(c, self.lock_key, sid, value,
                                                          timeout=CALL_TIMEOUT),
                                   timeout=CALL_TIMEOUT + 0.5)
        except lock.SessionGone:
            self.session_lost = True
            self._wake.set()
            return
        except Exception as exc:  # noqa: BLE001 - unknown outcome: re-read before deciding
            log.warning("acquire failed", job=self.job, error=str(exc) or repr(exc))
            got = False
        if not got:
            # lock-delay or a race: the watch tells us about a new holder; retry otherwise,
            # right when the lock-delay (if it is ours too) ends, else with a backoff
            now = time.monotonic()
            delay_end = self._free_since + self.ecfg.lock_delay + 0.02
            if now < delay_end:
                self._acquire_retry = delay_end
            else:
                self._acquire_retry = now + self._acquire_backoff.next()
            return
        self.holding = True
        self._acquire_backoff.reset()
        try:
            idx, holder = await self._call(lambda c: lock.read_key(c, self.lock_key,
                                                                   timeout=CALL_TIMEOUT),
                                           timeout=CALL_TIMEOUT + 0.5)
        except Exception as exc:  # noqa: BLE001 - cannot learn our epoch: give it back
            await self._step_down(f"cannot read the lock after acquiring: {exc}")
            return
        self._observe(idx, holder, force=True)
        if holder is None or holder.session != sid:
            await self._step_down("lock not ours after acquire")
            return
        await self._promote(holder)

    def _held_by_former_self(self) -> bool:
        """The key is held by a session of this very service that we did not create: our
        previous incarnation (the supervisor was killed and restarted, its job kept
        running)."""
        h = self.holder
        return bool(h and h.held and h.session not in self.own_sessions
                    and h.session not in self._abandoned
                    and h.info.get("service_id") == self.service_id
                    and h.info.get("node") == self.ctx.hostname)

    async def _adopt(self) -> None:
        """Take over our previous incarnation's still-valid session instead of waiting for
        it to lapse: nobody else can hold the lock while it lives, so the lock is ours and
        the epoch does not change. The promote hook runs again (hooks must be idempotent)."""
        h = self.holder
        assert h is not None and h.session
        old = h.session
        self._acquire_retry = time.monotonic() + 1.0  # at most one attempt a second
        if self.ecfg.identity:
            want = h.info.get("identity")
            got = await self._identity()
            if not want or got != want:
                # the service lost the state it had when it was promoted (restarted empty,
                # restored, replaced): never resume leadership for it; end the old session
                # (its lock-delay then applies) and compete like any other member
                log.warning("not adopting the previous session: the service is not the "
                            "instance that was promoted", job=self.job, session=old,
                            recorded=want, now=got)
                self._abandoned.add(old)
                self._former_primary = True
                self._abandon(old, None, "identity changed")
                return
        try:
            info = await self._call(lambda c: lock.session_info(c, old, timeout=CALL_TIMEOUT),
                                    timeout=CALL_TIMEOUT + 0.5)
            if not info or not lock.bound_to(info, self.check_id):
                return
            sent = time.monotonic()
            await self._call(lambda c: lock.renew_session(c, old, timeout=CALL_TIMEOUT),
                             timeout=CALL_TIMEOUT + 0.5)
        except Exception as exc:  # noqa: BLE001 - it lapses by itself; we then compete
            log.info("could not adopt the previous session", job=self.job, error=str(exc))
            return
        mine = self.session
        if self._keeper is not None:
            self._keeper.cancel()
        self.session = old
        self.own_sessions.add(old)
        self.session_lost = False
        self.lease.start(sent)
        self._keeper = asyncio.create_task(self._keep(old), name=f"election-renew-{self.job}")
        if mine:
            with contextlib.suppress(Exception):
                await self._call(lambda c: lock.destroy_session(c, mine, timeout=1.5),
                                 timeout=2.0)
        log.warning("adopted the session of our previous incarnation", job=self.job,
                    session=old, epoch=h.epoch)
        self.holding = True
        await self._promote(h)

    async def _promote(self, holder: lock.Holder) -> None:
        leader = self._leader_dict(holder)
        self._former_primary = False
        log.info("acquired the lock; promoting", job=self.job, epoch=holder.epoch)
        result = await self._guarded(self._hook("promote", self.ecfg.promote, "primary", leader))
        if result is None:
            await self._step_down(self._leader_lost_reason() or "lost during promote",
                                  ran_promote=True)
            return
        if not result.ok:
            log.error("promote hook failed: stepping down", job=self.job, rc=result.rc,
                      timed_out=result.timed_out)
            self._failures += 1
            await self._step_down("promote hook failed", ran_promote=True)
            low = max(self.ecfg.lock_delay, 1.0)
            self._not_before = time.monotonic() + backoff_delay(
                self._failures + 1, low, min(self.ttl, low * 16), jitter=False)
            return
        identity = await self._identity() if self.ecfg.identity else None
        # last check: the lease must still hold when we announce
        reason = self._leader_lost_reason()
        if not reason and not await self._announce(holder, identity):
            reason = "could not announce the promotion"
        if reason:
            await self._step_down(reason, ran_promote=True)
            return
        self._failures = 0
        self.primary = True
        self._last_leader = self.service_id
        self.announced = holder.identity()
        self._publish_role("primary", leader)
        log.info("elected", job=self.job, epoch=holder.epoch)
        self.ctx.bus.publish(ev.Event(ev.ELECTED, self.job, detail=f"epoch {holder.epoch}"))
        self._round = None
        await self._clear_post()

    async def _identity(self) -> str | None:
        """The identity hook's line (the service's data incarnation), None if it failed."""
        assert self.ecfg.identity
        result = await self._hook("identity", self.ecfg.identity, "replica", None)
        if not result.ok or not _last_line(result.output):
            log.warning("identity hook gave no value", job=self.job, rc=result.rc,
                        timed_out=result.timed_out)
            return None
        return _last_line(result.output)

    async def _announce(self, holder: lock.Holder, identity: str | None = None) -> bool:
        """Mark the lock's value ``promoted: true`` (a re-acquire by the same session keeps
        the LockIndex). Followers start following only then: a replica that followed a
        holder still promoting could resync from it and discard writes that only it had,
        while the holder's promote hook was checking whether a replica is ahead of it."""
        sid = self.session
        value = {**holder.info, "promoted": True}
        if identity:
            value["identity"] = identity  # checked by a restarted supervisor before adopting
        try:
            return bool(sid) and await self._call(
                lambda c: lock.acquire(c, self.lock_key, sid, value, timeout=CALL_TIMEOUT),
                timeout=CALL_TIMEOUT + 0.5)
        except Exception as exc:  # noqa: BLE001 - the lease decides; report and step down
            log.warning("announcing the promotion failed", job=self.job,
                        error=str(exc) or repr(exc))
            return False

    async def _guarded(self, coro) -> HookResult | None:
        """Await ``coro`` unless the leadership is lost first (then cancel it: None)."""
        task = asyncio.ensure_future(coro)
        try:
            while not task.done():
                if self._leader_lost_reason():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    return None
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({task, waiter}, timeout=max(0.01, self.lease.remaining()),
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            return task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _step_down(self, reason: str, *, ran_promote: bool = False) -> None:
        """Fencing: announce replica, run the demote hook, then give the lock back."""
        was_primary = self.primary
        self.primary = False
        sid = self.session
        log.warning("stepping down", job=self.job, reason=reason, was_primary=was_primary)
        if was_primary:
            self._publish_role("replica", None)
            self.announced = None
            self.ctx.bus.publish(ev.Event(ev.DEMOTED, self.job, detail=reason))
        if was_primary or ran_promote:
            result = await self._hook("demote", self.ecfg.demote, "replica", None)
            if not result.ok:
                log.error("demote hook failed", job=self.job, rc=result.rc,
                          timed_out=result.timed_out)
        if self.holding and sid and not self.session_lost:
            try:
                released = await self._call(
                    lambda c: lock.release(c, self.lock_key, sid, timeout=1.5), timeout=2.0)
                log.info("lock released" if released else "lock was no longer ours",
                         job=self.job)
            except Exception as exc:  # noqa: BLE001 - retried until the catalog answers
                log.warning("release failed", job=self.job, error=str(exc) or repr(exc))
                self.holding = False
                self._forget_session()
                self._abandon(sid, self.lock_key, str(exc) or repr(exc))
                return
        self.holding = False
        await self._drop_session()  # a fresh session (and lease) for the next candidacy

    # ---- what the rest of autopilot sees ------------------------------------------------

    def _leader_dict(self, holder: lock.Holder) -> dict[str, Any]:
        info = holder.info
        return {"node": info.get("node", ""), "address": info.get("address", ""),
                "port": info.get("port", 0), "service_id": info.get("service_id", ""),
                "epoch": holder.epoch}

    def _role_env(self, role: str, leader: dict[str, Any] | None) -> dict[str, str]:
        env = {"AUTOPILOT_ROLE": role}
        if leader:
            env.update({"AUTOPILOT_LEADER_ADDRESS": str(leader.get("address", "")),
                        "AUTOPILOT_LEADER_PORT": str(leader.get("port", "")),
                        "AUTOPILOT_LEADER_NODE": str(leader.get("node", "")),
                        "AUTOPILOT_LEADER_EPOCH": str(leader.get("epoch", ""))})
        return env

    def _publish_role(self, role: str, leader: dict[str, Any] | None) -> None:
        """Facts and child env first: subscribers of the next event read them."""
        facts = self.ctx.facts.setdefault(self.job, {})
        facts.update({"role": role, "leader": leader,
                      "epoch": leader.get("epoch") if leader else None})
        for k in ENV_KEYS:
            self.ctx.child_env.pop(k, None)
        self.ctx.child_env.update(self._role_env(role, leader))

    async def _hook(self, name: str, argv: list[str] | None, role: str,
                    leader: dict[str, Any] | None) -> HookResult:
        if not argv:
            return HookResult(0)
        base = {k: v for k, v in {**os.environ, **self.ctx.child_env}.items()
                if k not in ENV_KEYS}
        env = child_env(base, self.cfg.env, self._role_env(role, leader))
        log.info("running hook", job=self.job, hook=name)
        return await run_hook(list(argv), env, self.ecfg.hook_timeout,
                              name=f"{name}.{self.job}")

    async def _call(self, fn, timeout: float):
        assert self.ctx.consul is not None
        return await self.ctx.consul.run(fn, timeout=timeout)
