"""Becoming and ceasing to be the leader: acquire, promote, announce, step down.

Fencing: a leader that loses its lease, session or health steps down (demote hook, then
the lock back) before anything else; a promote in progress is cancelled when the
leadership is lost under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from autopilot import events as ev
from autopilot.aio import backoff_delay
from autopilot.election import lock
from autopilot.election.base import CALL_TIMEOUT, ElectionState, last_line, log
from autopilot.jobs.hooks import HookResult


class Leading(ElectionState):
    """Part of :class:`Election`: acquiring, promoting, announcing, stepping down."""

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
            # epoch grows past every one seen or tried, and is on disk before it can be
            # used; a lost attempt does not count as seen (epochs.EpochStore)
            epoch = self.epochs.next_epoch(self.holder.epoch if self.holder else 0)
            self.epochs.claim(epoch)
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

    async def _promote(self, holder: lock.Holder) -> None:
        leader = self._leader_dict(holder)
        self._former_primary = False
        log.info("acquired the lock; promoting", job=self.job, epoch=holder.epoch)
        handed = getattr(self, "_handover_env", None)  # handover.py: a named successor
        result = await self._guarded(self._hook("promote", self.ecfg.promote, "primary", leader,
                                                handed))
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
        if not result.ok or not last_line(result.output):
            log.warning("identity hook gave no value", job=self.job, rc=result.rc,
                        timed_out=result.timed_out)
            return None
        return last_line(result.output)

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
        successor = None
        if was_primary or ran_promote:
            result = await self._hook("demote", self.ecfg.demote, "replica", None,
                                      {"AUTOPILOT_STEP_DOWN_REASON": reason})
            if not result.ok:
                log.error("demote hook failed", job=self.job, rc=result.rc,
                          timed_out=result.timed_out)
            elif was_primary and reason in ("shutdown", "stopping") and self.holding:
                successor = await self._successor()  # hand-over.py: who takes over
        if self.holding and sid and not self.session_lost:
            value = self._release_value(successor)
            try:
                released = await self._call(
                    lambda c: lock.release(c, self.lock_key, sid, timeout=1.5, value=value),
                    timeout=2.0)
                log.info("lock released" if released else "lock was no longer ours",
                         job=self.job, successor=successor[0] if successor else None)
            except Exception as exc:  # noqa: BLE001 - retried until the catalog answers
                log.warning("release failed", job=self.job, error=str(exc) or repr(exc))
                self.holding = False
                self._forget_session()
                self._abandon(sid, self.lock_key, str(exc) or repr(exc))
                return
        self.holding = False
        await self._drop_session()  # a fresh session (and lease) for the next candidacy
