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
import time

from autopilot.aio import cancel_all
from autopilot.election.adopt import Adoption
from autopilot.election.base import CALL_TIMEOUT, lease_length, log
from autopilot.election.handover import HandOver
from autopilot.election.leading import Leading
from autopilot.election.rounds import Candidate
from autopilot.election.sessions import Sessions
from autopilot.election.watch import Watching

__all__ = ["Election", "lease_length"]


class Election(Watching, Sessions, Candidate, Leading, Adoption, HandOver):
    """Component: ``start()``, ``before_shutdown()`` (hand-over), ``stop()``.

    The state lives in :class:`ElectionState` (base.py); each part is a module of its own
    (see base.py's docstring). This class holds the lifecycle and the decision loop."""

    fatal = False  # a failure to start is logged; autopilot runs on (see autopilot/component.py)

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
            timeout = self._next_timeout(self._decided_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def _next_timeout(self, decided_at: float = 0.0) -> float:
        """Until the next deadline the step may act on. ``decided_at``: the time the step
        compared the deadlines with; one still ahead of it then is due, even if it passed
        while the step awaited (a deadline already past now, and not waited for, would
        leave the loop asleep for 5 s)."""
        now = time.monotonic()
        ref = min(decided_at, now) if decided_at else now
        candidates = [5.0]
        if self.holding or self.primary:
            candidates.append(self.lease.remaining())
        for t in (self._acquire_retry, self._create_retry, self._not_before, self._poll_at):
            if t > ref:
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
        now = self._decided_at = time.monotonic()
        if self.holding or self.primary:
            reason = self._leader_lost_reason()
            if reason:
                await self._step_down(reason)
            return
        if self.session_lost:
            await self._drop_session()
        await self._follow()
        # the deadlines below are compared with the time after those awaits: a detach hook
        # that outlasted the acquire backoff used to leave the member waiting 5 s for its
        # candidacy (it compared with the step's start, and the loop then slept past it)
        now = self._decided_at = time.monotonic()
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
            now = self._decided_at = time.monotonic()
        free = self.holder is None or not self.holder.held  # (the watch may have read since)
        if free and now >= self._acquire_retry:
            named = self._handover_to()
            if named is not None and await self._take_over(named):
                return  # a hand-over named a successor: it acquires, the others wait
            if self.candidacy and (not self.watch_ok or not await self._candidacy()):
                return  # (no candidacy before the first read of the key: it may be held)
            await self._try_acquire()
        elif self._held_by_former_self() and now >= self._acquire_retry:
            await self._adopt()
