"""The election's Consul session: create it, renew it into the lease, and end it.

A renew is recorded in the lease (the fencing deadline); a session the catalog did not
confirm ending is released and destroyed in the background until it does.
"""

from __future__ import annotations

import asyncio
import time

from autopilot.aio import backoff_delay
from autopilot.election import lock
from autopilot.election.base import CALL_TIMEOUT, ElectionState, log


class Sessions(ElectionState):
    """Part of :class:`Election`: the session, its renewals and its clean-up."""

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
